"""Corpora: documents -> train/validation/test split by document -> token-id streams (cached).

Bundled texts (Shakespeare, the King James Bible; compressed JSON lines inside the package) are
read directly; hub data sets (WikiText) go through the `datasets` library. A document (a play, a book, a
Wikipedia article) belongs to exactly one split, so held-out text never leaks into the datastore.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .artifacts import (array_hash, atomic_save_npy, clear_stage, stage_dir, stage_is_current,
                        write_manifest)
from .hub import from_hub
from .models import load_tokenizer

CORPORA_DIR = Path(__file__).parent / "data" / "corpora"
SPLITS = ("train", "validation", "test")
TOKENIZE_BATCH = 64  # documents per tokenizer call


def bundled_corpus_path(name: str) -> Path:
    path = CORPORA_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        known = sorted(p.name.split(".")[0] for p in CORPORA_DIR.glob("*.jsonl.gz"))
        raise ValueError(f"unknown bundled corpus {name!r}: the package ships {known} "
                         "(join several with '+', e.g. 'bundled:shakespeare+kjv-nt')")
    return path


def _bundled_documents(names: str) -> list[tuple[str, str]]:
    """The documents of one or more bundled corpora (`a+b`), in order."""
    docs: list[tuple[str, str]] = []
    for name in names.split("+"):
        with gzip.open(bundled_corpus_path(name.strip()), "rt", encoding="utf-8") as fh:
            docs += [(d["doc"], d["text"]) for d in map(json.loads, fh)]
    return docs


def load_documents(source: str) -> dict[str, list[tuple[str, str]]] | list[tuple[str, str]]:
    """(name, text) documents of a corpus source: a flat list for bundled corpora (split later;
    `bundled:a+b` joins several), or a dict split -> list for hub data sets with their own splits."""
    kind, _, name = source.partition(":")
    if kind == "bundled":
        return _bundled_documents(name)
    if kind == "hub":
        return _hub_documents(name)
    raise ValueError(f"corpus source {source!r} must start with 'bundled:' or 'hub:'")


def _hub_documents(name: str) -> dict[str, list[tuple[str, str]]]:
    """A hub data set with its own splits; WikiText is cut into articles at ' = Title = ' lines."""
    import datasets

    path, _, config = name.partition("/")
    ds = from_hub(f"data set {name!r}", datasets.load_dataset, path, config or None)
    heading = re.compile(r"^ = [^=].* = $")
    out: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        docs: list[tuple[str, list[str]]] = []
        for line in ds[split]["text"]:
            if heading.match(line.rstrip("\n")) or not docs:
                docs.append((line.strip(" =\n"), []))
            docs[-1][1].append(line)
        out[split] = [(title, "".join(lines)) for title, lines in docs]
    return out


def split_documents(docs: list[tuple[str, str]], validation_fraction: float,
                    test_fraction: float, seed: int) -> dict[str, list[tuple[str, str]]]:
    """Assign whole documents to splits: a seeded shuffle fills test, then validation (by
    characters), the rest is train. Each split keeps the *shuffled* order, so a token cap
    takes whole documents from across the corpus, not its first books."""
    if not docs:
        raise ValueError("the corpus has no documents; check the corpus source")
    order = np.random.default_rng(seed).permutation(len(docs))
    total = sum(len(t) for _, t in docs)
    quota = {"test": test_fraction * total, "validation": validation_fraction * total}
    filled = {"test": 0, "validation": 0}
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for i in order:
        split = next((s for s in ("test", "validation") if filled[s] < quota[s]), "train")
        out[split].append(docs[i])
        if split != "train":
            filled[split] += len(docs[i][1])
    return out


def tokenize_documents(tokenizer: Any, docs: list[tuple[str, str]],
                       max_tokens: int | None = None) -> np.ndarray:
    """One int32 stream: each document's tokens followed by the end-of-text token, cut at
    `max_tokens`. Documents are tokenized a batch at a time and no further than the cap needs."""
    return _tokenize_until(tokenizer, docs, max_tokens)[0]


def _tokenize_until(tokenizer: Any, docs: list[tuple[str, str]],
                    max_tokens: int | None) -> tuple[np.ndarray, list[str]]:
    """(token stream, names of the documents it holds, the last one possibly cut)."""
    docs = [(name, text) for name, text in docs if text.strip()]
    if not docs:
        raise ValueError("the split has no non-empty document; the corpus is empty or whitespace")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pieces, names, count = [], [], 0
    for lo in range(0, len(docs), TOKENIZE_BATCH):
        batch = docs[lo:lo + TOKENIZE_BATCH]
        ids = tokenizer([text for _, text in batch], add_special_tokens=False)["input_ids"]
        for (name, _), x in zip(batch, ids):
            pieces.append(np.asarray(x + eos, dtype=np.int32))
            names.append(name)
            count += len(pieces[-1])
            if max_tokens is not None and count >= max_tokens:
                return np.concatenate(pieces)[:max_tokens], names
    return np.concatenate(pieces), names


def corpus_config(profile: Any, which: str) -> dict[str, Any]:
    source = profile.domain_corpus if which == "domain" else profile.general_corpus
    knobs = profile.subset("validation_fraction", "test_fraction", "split_seed", "tokenizer")
    caps = profile.subset("max_train_tokens", "max_eval_tokens") if which == "domain" else {}
    return {"source": source, **knobs, **caps, "format": 3}


def load_corpus(profile: Any, which: str = "domain", progress: bool = True) -> dict[str, np.ndarray]:
    """`train`/`validation`/`test` -> 1-D int32 token ids of the profile's domain corpus
    (or `which="general"`: the corpus the tiny base models were trained on). Cached on disk."""
    if which not in ("domain", "general"):
        raise ValueError(f"which={which!r}: use 'domain' or 'general'")
    config = corpus_config(profile, which)
    directory = stage_dir(profile, f"corpus-{which}")
    if stage_is_current(directory, config):
        return {s: np.load(directory / f"{s}.npy") for s in SPLITS}
    splits = _split_corpus(config)
    tokenized = _tokenize_splits(profile, splits, _caps(config), progress)
    tokens = {s: ids for s, (ids, _) in tokenized.items()}
    clear_stage(directory)
    for split, ids in tokens.items():
        atomic_save_npy(directory / f"{split}.npy", ids)
    write_manifest(
        directory, config,
        documents={s: names for s, (_, names) in tokenized.items()},
        documents_in_split={s: len(splits[s]) for s in SPLITS},
        tokens={s: int(len(t)) for s, t in tokens.items()},
        sha256={s: array_hash(t) for s, t in tokens.items()},
    )
    return tokens


def _split_corpus(config: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    docs = load_documents(config["source"])
    if isinstance(docs, dict):  # hub data set with its own splits
        return docs
    return split_documents(docs, config["validation_fraction"], config["test_fraction"],
                           config["split_seed"])


def _tokenize_splits(profile: Any, splits: dict[str, list[tuple[str, str]]], caps: dict[str, Any],
                     progress: bool) -> dict[str, tuple[np.ndarray, list[str]]]:
    """split -> (token stream, names of the documents in it)."""
    tokenizer = load_tokenizer(profile)
    return {s: _tokenize_until(tokenizer, splits[s], caps.get(s))
            for s in tqdm(SPLITS, desc="tokenizing", disable=not progress)}


def _caps(config: dict[str, Any]) -> dict[str, int | None]:
    """Token cap per split (None: no cap)."""
    max_train, max_eval = config.get("max_train_tokens"), config.get("max_eval_tokens")
    return {"train": max_train, "validation": max_eval, "test": max_eval}
