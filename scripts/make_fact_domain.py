"""Generate the bundled fact domain: long-tail facts about an invented world, from a seed.

    python scripts/make_fact_domain.py            # writes memdec_helpers/data/corpora/facts.jsonl.gz
    python scripts/make_fact_domain.py --check    # regenerates in memory, fails if the file differs

The recipe (everything is drawn from one `random.Random(seed)`, so the same seed gives the same
bytes; the gzip header has no time stamp or file name):

1. An invented world. Names are built from syllables, so no base model can know them: TOWNS
   towns (each on one of RIVERS rivers, founded in a year, known for a good), RIVERS rivers
   (each rising in invented hills and flowing into one of a few invented seas) and PEOPLE people
   (each born in a town, in a year, working at a trade). A *fact* is one (subject, relation,
   object): e.g. (Orlwen Taskaby, birthplace, Brennowick). Its *object* (the town, the year,
   the trade...) is what a reader can only know from having read the fact before.
2. Seen and unseen facts. Every entity of the world is *seen*: each of its facts is stated in
   TRAIN_DOCS training documents, each time in a different training template ("X was born in
   Y.", "The birthplace of X is Y.", ...), documents of different styles (a gazetteer entry, a
   parish book, a traveller's letter) with their sentences in a shuffled order. A share
   (RESTATED) of the people and towns is restated in a validation or a test document (never
   both), a new document in the style of a chronicle, in one of two wordings, alternately:
   - *verbatim*: each fact in the very sentence a training document states it in (the n-gram
     overlap kNN-LM is known to profit from);
   - *reworded*: each fact in a *held-out* template that no training document uses ("Records
     show that X was a native of Y."): a memory must recognise the fact, not the sentence.
   Validation and test also describe new people and towns (UNSEEN_PER_SPLIT each) in held-out
   templates: *unseen* facts, whose objects no memory can know (they are drawn from the
   world's towns, years and trades, so their tokens are not new; only the class is known).
3. Records. One JSON line per document, in a seeded shuffled order within each split:
   `{"doc": "<split>/<kind>-<entity>-<n>", "split": "train" | "validation" | "test",
   "text": ..., "facts": [[start, end, fact id, wording], ...]}`; `facts` lists the character
   span of every fact object the text states (the fact id is the same wherever the fact is
   stated) and its wording: "train" (a training document), "verbatim" or "reworded".
   The `split` field makes the corpus pre-split: the course's loader keeps these splits
   (validation_fraction, test_fraction and split_seed do not apply), like a hub data set
   with its own splits. `memdec_helpers/stages/facts.py` turns the spans into masks over the
   tokenized splits: which test tokens belong to a fact seen in (the capped) training text,
   verbatim or reworded, which to an unseen one.

About 70k training tokens and 17k tokens per held-out split with the bundled tokenizer.
The text is generated: there is nothing to attribute and no licence question.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "memdec_helpers" / "data" / "corpora" / "facts.jsonl.gz"
SEED = 20
PEOPLE, TOWNS, RIVERS = 220, 48, 16
TRAIN_DOCS = 3  # training documents that state each fact, each in another template
RESTATED = 0.8  # share of the people and towns restated in validation or test
UNSEEN_PER_SPLIT = 66  # new people (and a fifth as many new towns) per held-out split
SPLITS = ("train", "validation", "test")

TRADES = ("cooper", "weaver", "tanner", "mason", "potter", "smith", "miller", "fletcher",
          "chandler", "glazier", "saddler", "thatcher", "brewer", "carpenter", "dyer", "tailor")
GOODS = ("salt", "wool", "amber", "linen", "iron", "honey", "cider", "slate", "timber", "flax",
         "copper", "barley")
ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s",
          "t", "th", "v", "w")
VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
CODAS = ("", "", "l", "n", "r", "s", "m", "th", "rn", "sk")
TOWN_ENDS = ("wick", "ford", "mere", "by", "holm", "stead", "ton", "bury")
RIVER_ENDS = ("wen", "el", "ava", "ine", "our")
FIRST_ENDS = ("ric", "wyn", "a", "el", "ia", "ard", "eth")
FAMILY_ENDS = ("son", "well", "more", "ley", "ham", "wright")
HILL_ENDS = ("fell", "tor", "moor")
SEA_ENDS = ("a", "or", "is")

# relation -> (training templates, held-out templates); {s} subject, {o} object (its span is
# the fact), each template ends with the object so that the memory can predict it
TEMPLATES = {
    "birthplace": (("{s} was born in {o}.", "The birthplace of {s} is {o}.",
                    "{s} first saw the light of day in {o}.", "{s} came from the town of {o}."),
                   ("Records show that {s} was a native of {o}.",
                    "Ask anyone where {s} was raised and they will say {o}.")),
    "born_year": (("{s} was born in the year {o}.", "The year of the birth of {s} was {o}.",
                   "{s} entered the world in {o}.", "{s} came into being in the year {o}."),
                  ("The chronicle dates the birth of {s} to {o}.",
                   "According to the registers, {s} was born in {o}.")),
    "trade": (("{s} worked as a {o}.", "By trade {s} was a {o}.",
               "{s} earned a living as a {o}.", "The craft of {s} was that of a {o}."),
              ("Everyone knew {s} as a skilled {o}.", "For many years {s} laboured as a {o}.")),
    "river": (("{s} stands on the river {o}.", "The town of {s} lies beside the river {o}.",
               "Through {s} flows the river {o}.", "{s} was built on the banks of the river {o}."),
              ("Travellers reach {s} by following the river {o}.",
               "The mills of {s} are turned by the river {o}.")),
    "founded": (("{s} was founded in the year {o}.", "The founding of {s} came in {o}.",
                 "{s} was first settled in {o}.", "The first houses of {s} were raised in {o}."),
                ("The charter of {s} is dated {o}.",
                 "Old maps first show {s} in the year {o}.")),
    "good": (("{s} is known for its {o}.", "The market of {s} trades chiefly in {o}.",
              "Merchants come to {s} for {o}.", "The wealth of {s} was built on {o}."),
             ("Ask a merchant about {s} and he will speak of {o}.",
              "The guild of {s} has long dealt in {o}.")),
    "source": (("The river {s} rises in the {o}.", "The springs of the river {s} are in the {o}.",
                "The river {s} begins high in the {o}.", "The river {s} springs from the {o}."),
               ("Shepherds say the river {s} is born in the {o}.",
                "The river {s} has its source in the {o}.")),
    "mouth": (("The river {s} flows into the {o}.", "The river {s} empties into the {o}.",
               "At its end the river {s} meets the {o}.", "The river {s} runs down to the {o}."),
              ("Boats on the river {s} come out at last into the {o}.",
               "The waters of the river {s} are lost in the {o}.")),
}
RELATIONS = {"person": ("birthplace", "born_year", "trade"), "town": ("river", "founded", "good"),
             "river": ("source", "mouth")}
# document styles: (opening line, closing line); {name} is the subject
STYLES = {
    "train": (("From the gazetteer: {name}.", "So the gazetteer records it."),
              ("A page of the parish book about {name}.", "Here ends the page."),
              ("A letter from a traveller, speaking of {name}.", "Your friend on the road.")),
    "held_out": (("From the chronicle of the valley: {name}.", "Thus far the chronicle."),),
}


@dataclass(frozen=True)
class Fact:
    id: int
    subject: str
    relation: str
    object: str


class Names:
    """Unique invented names (syllables + an ending), drawn from `rng`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def make(self, ends: tuple[str, ...], syllables: int = 2) -> str:
        while True:
            parts = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                     for _ in range(syllables)]
            name = ("".join(parts) + self.rng.choice(ends)).capitalize()
            if name not in self.used and len(name) <= 14:
                self.used.add(name)
                return name


def make_world(rng: random.Random, people: int, towns: int, rivers: int,
               names: Names) -> dict[str, dict[str, dict[str, str]]]:
    """kind -> entity name -> relation -> object, for the whole (seen) world."""
    hills = [f"{names.make(HILL_ENDS, 1)} Hills" for _ in range(6)]
    seas = [names.make(SEA_ENDS, 1) for _ in range(4)]
    world: dict[str, dict[str, dict[str, str]]] = {"river": {}, "town": {}, "person": {}}
    for _ in range(rivers):
        world["river"][names.make(RIVER_ENDS, 1)] = {"source": rng.choice(hills),
                                                     "mouth": f"{rng.choice(seas)} Sea"}
    for _ in range(towns):
        world["town"][names.make(TOWN_ENDS)] = new_town(rng, world)
    for _ in range(people):
        world["person"][person_name(names)] = new_person(rng, world)
    return world


def new_town(rng: random.Random, world: dict) -> dict[str, str]:
    return {"river": rng.choice(sorted(world["river"])), "founded": str(rng.randint(900, 1499)),
            "good": rng.choice(GOODS)}


def new_person(rng: random.Random, world: dict) -> dict[str, str]:
    return {"birthplace": rng.choice(sorted(world["town"])), "born_year": str(rng.randint(1500, 1799)),
            "trade": rng.choice(TRADES)}


def person_name(names: Names) -> str:
    return f"{names.make(FIRST_ENDS, 1)} {names.make(FAMILY_ENDS, 1)}"


def sentence(relation: str, subject: str, obj: str, template: str) -> tuple[str, int]:
    """The sentence and the offset of the object in it."""
    before = template.split("{o}")[0].format(s=subject)
    return template.format(s=subject, o=obj), len(before)


def document(name: str, split: str, style: tuple[str, str],
             stated: list[tuple[Fact, str]], rng: random.Random, wording: str = "train") -> dict:
    """A record: opening line, the facts' sentences in a shuffled order, closing line; the
    object spans are recorded as (start, end, fact id)."""
    subject = stated[0][0].subject
    text = style[0].format(name=subject) + "\n"
    spans = []
    order = list(stated)
    rng.shuffle(order)
    for fact, template in order:
        line, at = sentence(fact.relation, fact.subject, fact.object, template)
        spans.append([len(text) + at, len(text) + at + len(fact.object), fact.id, wording])
        text += line + " "
    text = text.rstrip() + "\n" + style[1].format(name=subject) + "\n"
    return {"doc": name, "split": split, "text": text, "facts": spans}


def facts_of(world: dict, next_id: list[int]) -> dict[tuple[str, str], list[Fact]]:
    """(kind, subject) -> its facts, numbered in a fixed order."""
    out = {}
    for kind in ("river", "town", "person"):
        for subject, relations in world[kind].items():
            facts = []
            for relation in RELATIONS[kind]:
                facts.append(Fact(next_id[0], subject, relation, relations[relation]))
                next_id[0] += 1
            out[(kind, subject)] = facts
    return out


def generate(seed: int = SEED) -> list[dict]:
    """Every record of the fact domain, train then validation then test, each split shuffled."""
    rng = random.Random(seed)
    names = Names(rng)
    world = make_world(rng, PEOPLE, TOWNS, RIVERS, names)
    next_id = [0]
    seen = facts_of(world, next_id)
    records = {split: [] for split in SPLITS}
    templates_of: dict[int, list[str]] = {}  # fact id -> its training templates, in doc order
    for (kind, subject), facts in seen.items():
        styles = rng.sample(STYLES["train"], TRAIN_DOCS)
        templates = {f.id: rng.sample(TEMPLATES[f.relation][0], TRAIN_DOCS) for f in facts}
        templates_of.update(templates)
        for n in range(TRAIN_DOCS):
            stated = [(f, templates[f.id][n]) for f in facts]
            records["train"].append(document(f"train/{kind}-{subject}-{n}", "train", styles[n],
                                             stated, rng))
    restated = [key for key in seen if key[0] != "river" and rng.random() < RESTATED]
    for i, (kind, subject) in enumerate(restated):
        split, wording = SPLITS[1 + i % 2], ("verbatim", "reworded")[i // 2 % 2]
        stated = [(f, templates_of[f.id][0] if wording == "verbatim"
                   else rng.choice(TEMPLATES[f.relation][1])) for f in seen[(kind, subject)]]
        records[split].append(document(f"{split}/{wording}-{kind}-{subject}", split,
                                       STYLES["held_out"][0], stated, rng, wording))
    for split in SPLITS[1:]:
        records[split] += unseen_documents(rng, names, world, split, next_id)
    for split in SPLITS:
        rng.shuffle(records[split])
    return [r for split in SPLITS for r in records[split]]


def unseen_documents(rng: random.Random, names: Names, world: dict, split: str,
                     next_id: list[int]) -> list[dict]:
    """New people and towns, in held-out templates: facts no training document states."""
    new = {"town": {names.make(TOWN_ENDS): new_town(rng, world)
                    for _ in range(max(1, UNSEEN_PER_SPLIT // 5))},
           "person": {person_name(names): new_person(rng, world) for _ in range(UNSEEN_PER_SPLIT)},
           "river": {}}
    out = []
    for (kind, subject), facts in facts_of(new, next_id).items():
        stated = [(f, rng.choice(TEMPLATES[f.relation][1])) for f in facts]
        out.append(document(f"{split}/unseen-{kind}-{subject}", split, STYLES["held_out"][0],
                            stated, rng, "reworded"))
    return out


def to_bytes(records: list[dict]) -> bytes:
    """JSON lines, gzip-compressed with no time stamp or file name: the same records, the same
    bytes."""
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as fh:
        fh.write(lines.encode("utf-8"))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory and fail if the file on disk differs")
    args = parser.parse_args(argv)
    data = to_bytes(generate(args.seed))
    if args.check:
        same = args.out.exists() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
