"""Fact tokens of the generated fact domain (`bundled:facts`): which tokens of a split state a
fact, and whether the (capped) training split states that fact too.

Every record of the fact domain lists the character spans of the fact objects its text states
(`[start, end, fact id, wording]`, see scripts/make_fact_domain.py). Here the documents of a
split are tokenized again, in the corpus stage's order and with its cap, with the tokenizer's
character offsets: a token that overlaps an object's span belongs to that fact. The token
stream is checked to be the corpus stage's own, so the masks line up with every per-token
log-prob of the split. A fact is *seen* when at least one of its tokens is in the training
stream (a cap that drops a training document drops its facts too), *unseen* otherwise; a seen
fact is restated *verbatim* (in a sentence of the training text) or *reworded* (in a template
no training document uses).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..profiles import Profile
from ..runtime.models import load_tokenizer
from .corpus import load_corpus, split_documents_used
from .sources import SPLITS, bundled_records

KINDS = ("verbatim", "reworded", "unseen")  # the masks fact_masks gives
NO_FACT = -1  # fact id of a token that states no fact
WORDINGS = ("train", "verbatim", "reworded")  # a span's wording, as the generator writes it


def fact_records(source: str) -> dict[str, dict[str, Any]]:
    """document name -> record (text, fact spans) of a corpus whose records carry fact spans;
    ValueError for any other source."""
    kind, _, names = source.partition(":")
    records = bundled_records(names) if kind == "bundled" else []
    if not records or not all("facts" in r and all(len(f) == 4 for f in r["facts"])
                              for r in records):
        raise ValueError(f"corpus {source!r} does not mark its facts: fact masks need a corpus "
                         "whose records carry fact spans, such as the generated 'bundled:facts'")
    return {r["doc"]: r for r in records}


def document_fact_ids(tokenizer: Any, text: str, spans: list[list[Any]]
                      ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(token ids of `text`, the fact id of each token or NO_FACT, the index of its wording in
    WORDINGS or -1): a token belongs to a fact when its characters overlap the object's span."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # [n, 2]
    labels = np.full(len(offsets), NO_FACT, dtype=np.int64)
    wordings = np.full(len(offsets), -1, dtype=np.int64)
    for start, end, fact, wording in spans:
        inside = (offsets[:, 0] < end) & (offsets[:, 1] > start)
        labels[inside], wordings[inside] = fact, WORDINGS.index(wording)
    return list(encoded["input_ids"]), labels, wordings


def split_fact_ids(profile: Profile, split: str) -> tuple[np.ndarray, np.ndarray]:
    """int64 [N] twice: the fact id of every token of the domain corpus's `split` (NO_FACT for
    the rest, the end-of-text tokens included) and the index of its wording in WORDINGS (-1),
    for the stream load_corpus gives."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use one of {SPLITS}")
    records = fact_records(profile.domain_corpus)
    tokenizer = load_tokenizer(profile)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, labels, wordings = [], [], []
    none = np.full(len(eos), -1, dtype=np.int64)
    for name in split_documents_used(profile)[split]:
        doc_ids, doc_labels, doc_wordings = document_fact_ids(
            tokenizer, records[name]["text"], records[name]["facts"])
        ids += doc_ids + eos
        labels.append(np.concatenate([doc_labels, none]))
        wordings.append(np.concatenate([doc_wordings, none]))
    stream = load_corpus(profile, progress=False)[split]
    if len(ids) < len(stream) or not np.array_equal(np.asarray(ids[:len(stream)]), stream):
        raise ValueError(f"the {split} split's tokens differ from its documents tokenized again; "
                         "the corpus stage was built with another tokenizer or corpus file")
    return np.concatenate(labels)[:len(stream)], np.concatenate(wordings)[:len(stream)]


def fact_masks(profile: Profile, split: str = "test") -> dict[str, np.ndarray]:
    """"verbatim" / "reworded" / "unseen" -> bool [N-1], aligned with the split's per-token
    log-probs (entry i scores token i+1): True where the scored token belongs to a fact the
    training split states, restated in a training sentence (verbatim) or in new words
    (reworded), or to a fact it does not state (unseen)."""
    facts, wordings = (a[1:] for a in split_fact_ids(profile, split))  # the tokens scored
    trained = np.unique(split_fact_ids(profile, "train")[0])
    is_fact = facts != NO_FACT
    seen = is_fact & np.isin(facts, trained)
    verbatim = seen & (wordings == WORDINGS.index("verbatim"))
    return {"verbatim": verbatim, "reworded": seen & ~verbatim, "unseen": is_fact & ~seen}


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence around the span [start, end) of `text`, the span in [brackets]."""
    left = max(text.rfind(". ", 0, start) + 2, text.rfind("\n", 0, start) + 1)
    stops = [i for i in (text.find(". ", end), text.find(".\n", end)) if i >= 0]
    right = min(stops) + 1 if stops else len(text)
    return f"{text[left:start]}[{text[start:end]}]{text[end:right]}".strip()


def fact_example(source: str, kind: str, split: str = "test") -> dict[str, str]:
    """A fact of `kind` (verbatim, reworded, unseen) from a `split` document of a corpus that
    marks its facts, as {"test": its sentence, "train": a training sentence stating the same
    fact (none for an unseen fact)}, each object in [brackets]."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}")
    records = fact_records(source)
    name = next((n for n in sorted(records) if n.startswith(f"{split}/{kind}-")), None)
    if name is None:
        raise ValueError(f"{source!r} has no {split} document of {kind} facts")
    start, end, fact, _ = records[name]["facts"][0]
    out = {split: _sentence(records[name]["text"], start, end)}
    trained = [_sentence(r["text"], s[0], s[1]) for r in records.values() if r["split"] == "train"
               for s in r["facts"] if s[2] == fact]
    if trained:  # the very sentence where the test repeats one
        out["train"] = out[split] if out[split] in trained else trained[0]
    return out
