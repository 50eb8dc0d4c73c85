"""Corpora: documents -> train/validation/test split by document -> token-id streams (cached).

Both the bundled texts (Shakespeare, King James Bible; compressed JSON lines inside the package)
and hub data sets (WikiText) go through the `datasets` library. A document (a play, a book, a
Wikipedia article) belongs to exactly one split, so held-out text never leaks into the datastore.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import (array_hash, atomic_save_npy, clear_stage, stage_dir, stage_is_current,
                        write_manifest)
from .hub import from_hub
from .models import load_tokenizer
from .progress import progress_bar

CORPORA_DIR = Path(__file__).parent / "data" / "corpora"
SPLITS = ("train", "validation", "test")


def bundled_corpus_path(name: str) -> Path:
    path = CORPORA_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        known = sorted(p.name.split(".")[0] for p in CORPORA_DIR.glob("*.jsonl.gz"))
        raise ValueError(f"unknown bundled corpus {name!r}: the package ships {known}")
    return path


def load_documents(source: str) -> dict[str, list[tuple[str, str]]] | list[tuple[str, str]]:
    """(name, text) documents of a corpus source: a flat list for bundled corpora (split later),
    or a dict split -> list for hub data sets that come with their own splits."""
    kind, _, name = source.partition(":")
    if kind == "bundled":
        import datasets

        ds = datasets.load_dataset("json", data_files=str(bundled_corpus_path(name)), split="train")
        return list(zip(ds["doc"], ds["text"]))
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
    characters), the rest is train; each split keeps the corpus order."""
    if not docs:
        raise ValueError("the corpus has no documents; check the corpus source")
    order = np.random.default_rng(seed).permutation(len(docs))
    total = sum(len(t) for _, t in docs)
    split_of = {}
    filled = {"test": 0, "validation": 0}
    quota = {"test": test_fraction * total, "validation": validation_fraction * total}
    for i in order:
        split = next((s for s in ("test", "validation") if filled[s] < quota[s]), "train")
        split_of[i] = split
        if split != "train":
            filled[split] += len(docs[i][1])
    return {s: [docs[i] for i in range(len(docs)) if split_of[i] == s] for s in SPLITS}


def tokenize_documents(tokenizer: Any, docs: list[tuple[str, str]]) -> np.ndarray:
    """One int32 stream: each document's tokens followed by the end-of-text token."""
    texts = [t for _, t in docs if t.strip()]
    if not texts:
        raise ValueError("the split has no non-empty document; the corpus is empty or whitespace")
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    pieces = [np.asarray(x + ([eos] if eos is not None else []), dtype=np.int32) for x in ids]
    return np.concatenate(pieces)


def corpus_config(profile: Any, which: str) -> dict[str, Any]:
    source = profile.domain_corpus if which == "domain" else profile.general_corpus
    knobs = profile.subset("validation_fraction", "test_fraction", "split_seed", "tokenizer")
    caps = profile.subset("max_train_tokens", "max_eval_tokens") if which == "domain" else {}
    return {"source": source, **knobs, **caps, "format": 2}


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
    tokens = _tokenize_splits(profile, splits, progress)
    tokens = _apply_caps(tokens, config.get("max_train_tokens"), config.get("max_eval_tokens"))
    clear_stage(directory)
    for split, ids in tokens.items():
        atomic_save_npy(directory / f"{split}.npy", ids)
    write_manifest(
        directory, config,
        documents={s: [name for name, _ in splits[s]] for s in SPLITS},
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


def _tokenize_splits(profile: Any, splits: dict[str, list[tuple[str, str]]],
                     progress: bool) -> dict[str, np.ndarray]:
    tokenizer = load_tokenizer(profile)
    return {s: tokenize_documents(tokenizer, splits[s])
            for s in progress_bar(SPLITS, desc="tokenizing", disable=not progress)}


def _apply_caps(tokens: dict[str, np.ndarray], max_train: int | None,
                max_eval: int | None) -> dict[str, np.ndarray]:
    caps = {"train": max_train, "validation": max_eval, "test": max_eval}
    return {s: (t[: caps[s]] if caps[s] else t) for s, t in tokens.items()}
