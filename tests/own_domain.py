"""A domain that is not the Bible, written at test time: licence and terms-of-service texts made
from clauses that repeat with small changes (the kind of near-verbatim boilerplate where
retrieval is strong). One document per file, for the `files:` corpus source."""
from __future__ import annotations

import random
from pathlib import Path

PARTIES = ["the Licensee", "the Licensor", "the Customer", "the Provider", "the Contributor",
           "the Subscriber", "the Recipient", "the Company"]
THINGS = ["the Software", "the Service", "the Documentation", "the Licensed Materials",
          "any Derivative Work", "the Content", "the Data", "the Platform"]
VERBS = ["use", "copy", "modify", "distribute", "sublicense", "sell", "host", "publish"]
CLAUSES = [
    "{p} may {v} {t} only in accordance with the terms of this Agreement.",
    "{p} shall not {v} {t} without the prior written consent of {q}.",
    "Subject to the conditions of this Agreement, {q} grants {p} a non-exclusive, worldwide, "
    "royalty-free licence to {v} {t}.",
    "{t} is provided \"as is\", without warranty of any kind, express or implied, including but "
    "not limited to the warranties of merchantability and fitness for a particular purpose.",
    "In no event shall {q} be liable for any claim, damages or other liability arising from "
    "{t} or the use of {t}.",
    "{p} shall retain all copyright, patent and trademark notices contained in {t}.",
    "This Agreement shall terminate automatically if {p} fails to comply with any of its terms.",
    "Any notice under this Agreement shall be given in writing to {q} at the address stated above.",
    "{p} agrees to indemnify {q} against any claim arising from the use of {t}.",
    "The laws of the State of {s} shall govern this Agreement.",
]
STATES = ["Delaware", "New York", "California", "Ontario", "Victoria", "Bavaria"]
SYLLABLES = ["ar", "bel", "cor", "dan", "el", "fir", "gan", "hol", "is", "jor", "kel", "lum",
             "mar", "nor", "ost", "pel", "quin", "ros", "sal", "tor", "ul", "ven", "wil", "yr"]
EXTRAS = [
    "The fee for the first year is {n} dollars, payable within {d} days of the invoice.",
    "{c} Ltd., registered at {n} {c} Street, is the Licensor for the purposes of this Section.",
    "This Agreement was signed on {d} March {y} and replaces the agreement of {y0}.",
    "Questions about {t} may be sent to the legal department of {c} Holdings.",
]


def name(rng: random.Random) -> str:
    """An invented company name: two or three syllables."""
    return "".join(rng.sample(SYLLABLES, rng.randint(2, 3))).capitalize()


def document(rng: random.Random, number: int) -> str:
    """One licence: a title, then sections of clauses."""
    lines = [f"LICENCE AGREEMENT No. {number}", ""]
    for section in range(1, rng.randint(6, 12)):
        lines.append(f"Section {section}.")
        for _ in range(rng.randint(2, 5)):
            p, q = rng.sample(PARTIES, 2)
            year = rng.randint(1990, 2025)
            clause = rng.choice(CLAUSES + EXTRAS)
            text = clause.format(p=p, q=q, t=rng.choice(THINGS), v=rng.choice(VERBS),
                                       s=rng.choice(STATES), c=name(rng), n=rng.randint(2, 999),
                                       d=rng.randint(2, 28), y=year, y0=year - rng.randint(1, 9))
            lines.append(text[0].upper() + text[1:])
        lines.append("")
    return "\n".join(lines)


def write_own_domain(folder: Path, documents: int = 240, seed: int = 0) -> Path:
    """Write `documents` licence texts into `folder` (one .txt each); returns the folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        (folder / f"licence_{i:03d}.txt").write_text(document(rng, i), encoding="utf-8")
    return folder
