"""Fact tokens of the generated fact domain (`bundled:facts`): which tokens of a split state a
fact, and whether the (capped) training split states that fact too.

Every record of the fact domain lists the character spans of the fact objects its text states
(`[start, end, fact id]`, see scripts/make_fact_domain.py). Here the documents of a split are
tokenized again, in the corpus stage's order and with its cap, with the tokenizer's character
offsets: a token that overlaps an object's span belongs to that fact. The token stream is
checked to be the corpus stage's own, so the masks line up with every per-token log-prob of
the split. A fact is *seen* when at least one of its tokens is in the training stream (a cap
that drops a training document drops its facts too), *unseen* otherwise.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..profiles import Profile
from ..runtime.models import load_tokenizer
from .corpus import load_corpus, split_documents_used
from .sources import SPLITS, bundled_records

KINDS = ("seen", "unseen")
NO_FACT = -1  # fact id of a token that states no fact


def fact_records(source: str) -> dict[str, dict[str, Any]]:
    """document name -> record (text, fact spans) of a corpus whose records carry fact spans;
    ValueError for any other source."""
    kind, _, names = source.partition(":")
    records = bundled_records(names) if kind == "bundled" else []
    if not records or not all("facts" in r for r in records):
        raise ValueError(f"corpus {source!r} does not mark its facts: fact masks need a corpus "
                         "whose records carry fact spans, such as the generated 'bundled:facts'")
    return {r["doc"]: r for r in records}


def document_fact_ids(tokenizer: Any, text: str, spans: list[list[int]]) -> tuple[list[int], np.ndarray]:
    """(token ids of `text`, the fact id of each token or NO_FACT): a token belongs to a fact
    when its characters overlap the fact object's span."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # [n, 2]
    labels = np.full(len(offsets), NO_FACT, dtype=np.int64)
    for start, end, fact in spans:
        labels[(offsets[:, 0] < end) & (offsets[:, 1] > start)] = fact
    return list(encoded["input_ids"]), labels


def split_fact_ids(profile: Profile, split: str) -> np.ndarray:
    """int64 [N]: the fact id of every token of the domain corpus's `split` (NO_FACT for the
    rest, the end-of-text tokens included), for the stream load_corpus gives."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use one of {SPLITS}")
    records = fact_records(profile.domain_corpus)
    tokenizer = load_tokenizer(profile)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, labels = [], []
    for name in split_documents_used(profile)[split]:
        doc_ids, doc_labels = document_fact_ids(tokenizer, records[name]["text"],
                                                records[name]["facts"])
        ids += doc_ids + eos
        labels.append(np.concatenate([doc_labels, np.full(len(eos), NO_FACT, dtype=np.int64)]))
    stream = load_corpus(profile, progress=False)[split]
    labels_all = np.concatenate(labels)[:len(stream)]
    if len(ids) < len(stream) or not np.array_equal(np.asarray(ids[:len(stream)]), stream):
        raise ValueError(f"the {split} split's tokens differ from its documents tokenized again; "
                         "the corpus stage was built with another tokenizer or corpus file")
    return labels_all


def fact_masks(profile: Profile, split: str = "test") -> dict[str, np.ndarray]:
    """"seen" / "unseen" -> bool [N-1], aligned with the split's per-token log-probs (entry i
    scores token i+1): True where the scored token belongs to a fact that the training split
    states (seen) or does not (unseen)."""
    scored = split_fact_ids(profile, split)[1:]  # the token each log-prob entry scores
    trained = np.unique(split_fact_ids(profile, "train"))
    is_fact = scored != NO_FACT
    seen = is_fact & np.isin(scored, trained)
    return {"seen": seen, "unseen": is_fact & ~seen}
