"""Corpora: documents -> train/validation/test split by document -> token-id streams (cached).

Sources (sources.py): the bundled texts (Shakespeare, the King James Bible; several joined with
`+`), your own files (`files:<folder or glob>`) and hub data sets (WikiText). A document (a
play, a chapter, a file, a Wikipedia article) belongs to exactly one split, so held-out text
never leaks into the datastore; each split keeps a seeded shuffled order, so a cap takes whole
documents from across the corpus.

Memory is bounded by the caps, not by the corpus: documents are read one at a time in their
split's order, tokenized at most TOKENIZE_CHARS characters per call (a long document in pieces cut
where the byte-level BPE cuts anyway), and tokenizing stops once the split's cap is met.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from ..core.hashing import array_hash
from ..profiles import Profile
from ..progress import progress_bar
from ..runtime.models import load_tokenizer
from .recipes import Recipe, corpus_recipe
from .store import (atomic_save_npy, check_free_space, check_writable, clear_stage, read_manifest,
                    stage_dir, stage_is_current, stage_lock, write_manifest)
from .sources import SPLITS, Document, open_source

TOKENIZE_BATCH = 64  # documents per tokenizer call
TOKENIZE_CHARS = 1_000_000  # characters per tokenizer call (~250k tokens, ~35 MB of encodings)
CUT_LOOKBACK = 4096  # how far before the limit a piece may end, to end at a safe cut


def load_documents(source: str) -> dict[str, list[Document]] | list[Document]:
    """(name, text) documents of a corpus source, all in memory: a flat list (split later;
    `bundled:a+b` joins several), or a dict split -> list for hub data sets with their own
    splits. load_corpus never calls this: it reads only what the caps need."""
    opened = open_source(source)
    if isinstance(opened, dict):
        return {s: list(docs) for s, docs in opened.items()}
    return list(opened.documents(range(len(opened))))


def split_order(sizes: Any, validation_fraction: float, test_fraction: float,
                seed: int) -> dict[str, np.ndarray]:
    """Document indices per split: a seeded shuffle fills test, then validation (by size:
    characters or bytes), the rest is train. Each split keeps the *shuffled* order, so a token
    cap takes whole documents from across the corpus, not its first books."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0:
        raise ValueError("the corpus has no documents; check the corpus source")
    order = np.random.default_rng(seed).permutation(len(sizes))  # [D]
    before = np.cumsum(sizes[order]) - sizes[order]  # [D] size of the documents ahead of each
    total = int(sizes.sum())
    n_test = int(np.searchsorted(before, test_fraction * total, side="left"))
    rest = before[n_test:] - (before[n_test] if n_test < len(before) else 0)
    n_val = int(np.searchsorted(rest, validation_fraction * total, side="left"))
    return {"test": order[:n_test], "validation": order[n_test:n_test + n_val],
            "train": order[n_test + n_val:]}


def split_documents(docs: list[Document], validation_fraction: float, test_fraction: float,
                    seed: int) -> dict[str, list[Document]]:
    """split_order over documents in memory (sizes in characters): split -> documents."""
    order = split_order([len(t) for _, t in docs], validation_fraction, test_fraction, seed)
    return {s: [docs[i] for i in order[s]] for s in SPLITS}


# --- tokenizing, bounded by the cap ---------------------------------------------------------

def safe_cut(text: str, lo: int, hi: int) -> int:
    """An index in (lo, hi] where `text` can be cut without changing its byte-level BPE tokens:
    before a newline or space that sits between two non-space characters (GPT-2's pre-tokenizer
    never joins across it, a space attaching to the word after it); `hi` if there is none."""
    for char in ("\n", " "):
        at = text.rfind(char, lo + 1, hi)
        while at > lo:
            if not text[at - 1].isspace() and at + 1 < len(text) and not text[at + 1].isspace():
                return at
            at = text.rfind(char, lo + 1, at)
    return hi


def text_pieces(text: str, max_chars: int) -> Iterator[str]:
    """`text` in pieces of at most `max_chars` characters, cut at safe places when possible."""
    lo = 0
    while len(text) - lo > max_chars:
        cut = safe_cut(text, max(lo, lo + max_chars - CUT_LOOKBACK), lo + max_chars)
        yield text[lo:cut]
        lo = cut
    yield text[lo:]


def stream_pieces(blocks: Iterable[str], max_chars: int) -> Iterator[str]:
    """The pieces text_pieces would cut from the text of `blocks` joined, read block by block:
    at most `max_chars` plus one block are held at a time."""
    buffer = ""
    for block in blocks:
        buffer += block
        while len(buffer) > max_chars:
            cut = safe_cut(buffer, max(0, max_chars - CUT_LOOKBACK), max_chars)
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def document_pieces(text: Any, max_chars: int) -> Iterator[str]:
    """A document's pieces (none for a blank one): a string cut by text_pieces, or a text read
    in blocks (sources.FileText) cut as it is read."""
    if isinstance(text, str):
        return text_pieces(text, max_chars) if text.strip() else iter(())
    return iter(()) if text.blank else stream_pieces(text.blocks(), max_chars)


def piece_batches(docs: Iterable[tuple[str, Any]], max_chars: int
                  ) -> Iterator[list[tuple[str, str, bool]]]:
    """Batches of (document name, piece, last piece of its document) of at most about
    `max_chars` characters and TOKENIZE_BATCH pieces; blank documents are skipped. A document
    is read piece by piece (one piece ahead, to know the last one)."""
    batch: list[tuple[str, str, bool]] = []
    size = 0
    for name, text in docs:
        pieces = document_pieces(text, max_chars)
        piece = next(pieces, None)
        while piece is not None:
            following = next(pieces, None)
            batch.append((name, piece, following is None))
            size += len(piece)
            if size >= max_chars or len(batch) >= TOKENIZE_BATCH:
                yield batch
                batch, size = [], 0
            piece = following
    if batch:
        yield batch


def tokenize_documents(tokenizer: Any, docs: Iterable[Document],
                       max_tokens: int | None = None) -> np.ndarray:
    """One int32 stream: each document's tokens followed by the end-of-text token, cut at
    `max_tokens`. Documents are tokenized a batch at a time and no further than the cap needs."""
    return _tokenize_until(tokenizer, docs, max_tokens)[0]


def _tokenize_until(tokenizer: Any, docs: Iterable[Document], max_tokens: int | None,
                    max_chars: int = TOKENIZE_CHARS) -> tuple[np.ndarray, list[str]]:
    """(token stream, names of the documents it holds, the last one possibly cut). Holds at most
    the cap's tokens plus one batch of encodings, whatever the corpus size."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = _TokenBuffer(max_tokens)
    names: list[str] = []
    starts_document = True
    for batch in piece_batches(docs, max_chars):
        ids = tokenizer([piece for _, piece, _ in batch], add_special_tokens=False)["input_ids"]
        for (name, _, last), x in zip(batch, ids):
            if starts_document:
                names.append(name)
            starts_document = last
            out.append(np.asarray(x + eos if last else x, dtype=np.int32))
            if out.full:
                return out.result(), names
    if not names:
        raise ValueError("the split has no non-empty document: the corpus is empty or whitespace, "
                         "or has too few documents to give every split one (add documents)")
    return out.result(), names


class _TokenBuffer:
    """Token ids appended piece by piece: into one preallocated array when there is a cap."""

    def __init__(self, cap: int | None) -> None:
        self.cap, self.count = cap, 0
        self.array = np.empty(cap, dtype=np.int32) if cap is not None else None
        self.pieces: list[np.ndarray] = []

    @property
    def full(self) -> bool:
        return self.cap is not None and self.count >= self.cap

    def append(self, ids: np.ndarray) -> None:
        if self.array is None:
            self.pieces.append(ids)
        else:
            take = ids[:self.cap - self.count]
            self.array[self.count:self.count + len(take)] = take
        self.count += len(ids)

    def result(self) -> np.ndarray:
        if self.array is None:
            return np.concatenate(self.pieces) if self.pieces else np.empty(0, dtype=np.int32)
        return self.array[:min(self.count, self.cap)]


# --- the cached corpus stage ----------------------------------------------------------------

def corpus_config(profile: Profile, which: str) -> dict[str, Any]:
    """The knobs the corpus is read and split by (its identity is recipes.corpus_recipe)."""
    source = profile.domain_corpus if which == "domain" else profile.general_corpus
    knobs = profile.subset("validation_fraction", "test_fraction", "split_seed", "tokenizer")
    caps = profile.subset("max_train_tokens", "max_eval_tokens")
    return {"source": source, **knobs, **caps, "format": 3}


def load_corpus(profile: Profile, which: str = "domain",
                progress: bool = True) -> dict[str, np.ndarray]:
    """`train`/`validation`/`test` -> 1-D int32 token ids of the profile's domain corpus
    (or `which="general"`: the corpus the tiny base models were trained on; the same caps
    apply). Cached on disk, checked against its content hashes on load; one process builds it
    at a time, and every source is checked and tokenized before the cache is touched."""
    if which not in ("domain", "general"):
        raise ValueError(f"which={which!r}: use 'domain' or 'general'")
    recipe = corpus_recipe(profile, which)
    with stage_lock(stage_dir(profile, recipe.folder)):
        return _load_or_build(profile, which, recipe, progress)


def _load_or_build(profile: Profile, which: str, recipe: Recipe,
                   progress: bool) -> dict[str, np.ndarray]:
    config = corpus_config(profile, which)
    directory = stage_dir(profile, recipe.folder)
    if stage_is_current(directory, recipe.config()):
        return {s: np.load(directory / f"{s}.npy") for s in SPLITS}
    check_writable(directory)  # a read-only disk: said before any tokenizing
    streams, counts = split_streams(config)
    tokenized = _tokenize_splits(profile, streams, _caps(config), progress, config["source"])
    if which == "domain":  # the general corpus (general-text perplexity) may hold less
        check_caps(config, {s: len(ids) for s, (ids, _) in tokenized.items()})
    tokens = {s: ids for s, (ids, _) in tokenized.items()}
    check_free_space(directory, sum(t.nbytes for t in tokens.values()) + 2**20)  # keeps the old
    clear_stage(directory)
    for split, ids in tokens.items():
        atomic_save_npy(directory / f"{split}.npy", ids)
    write_manifest(
        directory, recipe.config(),
        documents={s: names for s, (_, names) in tokenized.items()},
        documents_in_split=counts,
        tokens={s: int(len(t)) for s, t in tokens.items()},
        sha256={s: array_hash(t) for s, t in tokens.items()},
    )
    return tokens


def split_documents_used(profile: Profile, which: str = "domain") -> dict[str, list[str]]:
    """split -> names of the documents its token stream holds (in order; the last one may be
    cut by the cap), from the corpus stage's manifest (built first if needed)."""
    load_corpus(profile, which, progress=False)
    return read_manifest(stage_dir(profile, corpus_recipe(profile, which).folder))["documents"]


def split_streams(config: dict[str, Any]
                  ) -> tuple[dict[str, Iterable[Document]], dict[str, int | None]]:
    """(split -> documents read lazily in split order, split -> document count or None when a
    hub split is streamed)."""
    opened = open_source(config["source"])
    if isinstance(opened, dict):  # a hub data set with its own splits, or a pre-split corpus
        return opened, {s: None for s in SPLITS}
    order = split_order(opened.sizes, config["validation_fraction"], config["test_fraction"],
                        config["split_seed"])
    check_every_split_has_a_document(order, opened.sizes, opened.names, config["source"])
    return ({s: opened.lazy_documents(order[s]) for s in SPLITS},
            {s: int(len(order[s])) for s in SPLITS})


def check_every_split_has_a_document(order: dict[str, np.ndarray], sizes: np.ndarray,
                                     names: Any, source: str) -> None:
    """ValueError that says why a split got no document: too few documents, or one document
    so large that the held-out shares (filled a whole document at a time) took it and the
    rest (named, with its share of the text and the split it went to)."""
    empty = [s for s in SPLITS if len(order[s]) == 0]
    if not empty:
        return
    if len(sizes) < len(SPLITS):
        raise ValueError(f"corpus {source!r} has only {len(sizes)} document"
                         f"{'s' if len(sizes) != 1 else ''}: train, validation and test each need "
                         "at least one whole document (a document is never cut across splits); "
                         "add documents, or split a file into several")
    largest = int(np.argmax(sizes))
    went = next(s for s in SPLITS if largest in order[s])
    share = float(sizes[largest]) / max(float(np.sum(sizes)), 1.0)
    raise ValueError(
        f"corpus {source!r}: the {' and '.join(empty)} split got no document. Documents go to a "
        f"split whole, and {names[largest]} alone holds {share:.0%} of the corpus's text; it "
        f"went to the {went} split (validation_fraction and test_fraction fill their share of "
        "the text one whole document at a time), leaving nothing for the rest. Split that file "
        "into several documents (e.g. one per chapter), or add documents")


def _tokenize_splits(profile: Profile, streams: dict[str, Iterable[Document]], caps: dict[str, Any],
                     progress: bool, source: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    """split -> (token stream, names of the documents in it); errors name the source and split."""
    tokenizer = load_tokenizer(profile)
    out = {}
    for split in progress_bar(SPLITS, desc="tokenizing", disable=not progress):
        try:
            out[split] = _tokenize_until(tokenizer, streams[split], caps.get(split))
        except ValueError as err:
            raise ValueError(f"corpus {source!r}, {split} split: {err}") from None
    return out


def check_caps(config: dict[str, Any], counts: dict[str, int]) -> None:
    """ValueError if a split holds fewer tokens than its cap: the profile's sizes (and time
    estimates) assume that much text."""
    for split, cap in _caps(config).items():
        if cap is not None and counts[split] < cap:
            knob = "max_train_tokens" if split == "train" else "max_eval_tokens"
            fits = counts[split] if split == "train" else min(counts["validation"], counts["test"])
            raise ValueError(
                f"corpus {config['source']!r} is too small for the profile's caps: its {split} "
                f"split has {counts[split]:,} tokens but {knob}={cap:,}. Add documents, or "
                f"lower the cap (e.g. {knob}={fits}"
                + (", what both held-out splits hold" if split != "train" else "")
                + ", or null for all of it)"
                + ("; validation_fraction/test_fraction set the held-out share"
                   if split != "train" else ""))


def _caps(config: dict[str, Any]) -> dict[str, int | None]:
    """Token cap per split (None: no cap)."""
    max_train, max_eval = config.get("max_train_tokens"), config.get("max_eval_tokens")
    return {"train": max_train, "validation": max_eval, "test": max_eval}
