"""Corpus sources: where documents come from, read lazily so memory is bounded by the caps.

- `bundled:<name>[+<name>...]`: corpora shipped inside the package (compressed JSON lines);
- `files:<folder or glob>`: your own texts, one document per `.txt`/`.md` file (UTF-8) or one
  per line of a `.jsonl` file with a `text` field;
- `hub:<data set>[:<config>[:<text column>]]`: a Hugging Face data set, e.g.
  `hub:Salesforce/wikitext:wikitext-103-raw-v1` (text column `text` unless named).

A flat source (bundled, files, a hub data set with one split) is a list of document names and
sizes plus a reader; corpus.py splits it by document and reads only what the caps need. A hub
data set with its own train/validation/test splits is streamed split by split.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..runtime.hub import from_hub

CORPORA_DIR = Path(__file__).resolve().parents[1] / "data" / "corpora"
SPLITS = ("train", "validation", "test")
FILE_SUFFIXES = (".txt", ".md", ".jsonl")
HUB_READ_BATCH = 1000  # rows of a hub data set read at a time
WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")

Document = tuple[str, str]  # (name, text)


@dataclass
class DocumentSource:
    """Documents known by name and size; a text is read only when `read(i)` asks for it."""

    names: Sequence[str]
    sizes: np.ndarray  # [D] int64: characters or bytes, what the split quotas count
    read: Callable[[int], str]

    def __len__(self) -> int:
        return len(self.names)

    def documents(self, order: Iterable[int]) -> Iterator[Document]:
        """(name, text) of the documents `order`, read one at a time."""
        for i in order:
            yield self.names[int(i)], self.read(int(i))


def open_source(source: str) -> DocumentSource | dict[str, Iterable[Document]]:
    """A flat DocumentSource, or split -> stream of documents for a hub data set with its own
    splits. Every check (unknown corpus, empty folder, bad file, missing column) runs here,
    before any tokenizing."""
    kind, sep, name = source.partition(":")
    if not sep or kind not in ("bundled", "files", "hub") or not name.strip():
        raise ValueError(f"corpus source {source!r} must be 'bundled:<name>', "
                         "'files:<folder or glob>' or 'hub:<data set>[:<config>[:<text column>]]'")
    if kind == "bundled":
        return bundled_source(name)
    if kind == "files":
        return files_source(name)
    return hub_source(name)


# --- bundled -------------------------------------------------------------------------------

def bundled_corpus_path(name: str) -> Path:
    path = CORPORA_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        known = sorted(p.name.split(".")[0] for p in CORPORA_DIR.glob("*.jsonl.gz"))
        raise ValueError(f"unknown bundled corpus {name!r}: the package ships {known} "
                         "(join several with '+', e.g. 'bundled:shakespeare+kjv-nt')")
    return path


def bundled_documents(names: str) -> list[Document]:
    """The documents of one or more bundled corpora (`a+b`), in order (a few MB: in memory)."""
    docs: list[Document] = []
    for name in names.split("+"):
        with gzip.open(bundled_corpus_path(name.strip()), "rt", encoding="utf-8") as fh:
            docs += [(d["doc"], d["text"]) for d in map(json.loads, fh)]
    return docs


def in_memory_source(docs: list[Document]) -> DocumentSource:
    """A DocumentSource over documents already in memory (sizes in characters)."""
    sizes = np.fromiter((len(text) for _, text in docs), dtype=np.int64, count=len(docs))
    return DocumentSource([n for n, _ in docs], sizes, lambda i: docs[i][1])


def bundled_source(names: str) -> DocumentSource:
    return in_memory_source(bundled_documents(names))


# --- files ---------------------------------------------------------------------------------

def list_files(spec: str) -> tuple[list[Path], Path]:
    """(the .txt/.md/.jsonl files of a folder, recursively, or of a glob, sorted; the folder
    their names are relative to). ValueError for a missing folder or no usable file."""
    spec = str(Path(spec).expanduser())
    if glob.has_magic(spec):
        root = Path(spec.split("*")[0].split("?")[0].split("[")[0])
        root = root if root.is_dir() else root.parent
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        bad = [p for p in matches if p.suffix.lower() not in FILE_SUFFIXES]
        if bad:
            raise ValueError(f"files:{spec} matches {bad[0]}, which is not a .txt, .md or .jsonl "
                             "file; narrow the glob (e.g. files:<folder>/*.txt)")
    elif Path(spec).is_dir():
        root = Path(spec)
        matches = sorted(p for p in root.rglob("*") if p.is_file()
                         and p.suffix.lower() in FILE_SUFFIXES
                         and not any(part.startswith(".") for part in p.relative_to(root).parts))
    else:
        raise ValueError(f"files:{spec}: no such folder (give a folder of .txt/.md/.jsonl files "
                         "or a glob such as files:~/notes/*.md)")
    if not matches:
        raise ValueError(f"files:{spec} holds no .txt, .md or .jsonl file: put one document per "
                         "UTF-8 text file there (or one JSON object with a 'text' field per line "
                         "of a .jsonl file)")
    return matches, root


def read_text_file(path: Path) -> str:
    """A UTF-8 text file (BOM and CRLF tolerated); ValueError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}; fix its permissions or remove it "
                         "from the corpus folder") from None
    return decode_utf8(data, str(path))


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{where} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`, or remove it"
        ) from None


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of each non-blank line's `text` field, checked."""
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    with fh:
        offset = 0
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                yield number, offset, jsonl_text(raw, f"{path}, line {number}")
            offset += len(raw)


def jsonl_text(raw: bytes, where: str) -> str:
    """The `text` field of one JSON line; ValueError naming file and line otherwise."""
    try:
        record = json.loads(decode_utf8(raw, where))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err.msg}); a .jsonl corpus needs one "
                         "JSON object per line") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ValueError(f"{where} has no string field 'text': each line must look like "
                         '{"text": "..."}')
    return record["text"]


def files_source(spec: str) -> DocumentSource:
    """Your own texts: every file is checked (readable, UTF-8, JSON lines) before any work; a
    text is read again only when the caps need it."""
    paths, root = list_files(spec)
    names, sizes, where = [], [], []
    for path in paths:
        rel = relative_name(path, root)
        if path.suffix.lower() == ".jsonl":
            for number, offset, text in jsonl_lines(path):
                names.append(f"{rel}:{number}")
                sizes.append(len(text))
                where.append((path, offset))
        else:
            names.append(rel)
            sizes.append(len(read_text_file(path)))
            where.append((path, None))
    return DocumentSource(names, np.asarray(sizes, dtype=np.int64),
                          lambda i: _read_file_document(*where[i]))


def relative_name(path: Path, root: Path) -> str:
    """A file's name relative to the corpus folder (its full path outside it)."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def stamp_files(paths: list[Path], root: Path) -> str:
    """A short hash of the files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{relative_name(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def files_fingerprint(source: str) -> str:
    """The content identity of a `files:` source without reading the files (names, sizes,
    modification times): an edited, added or removed file changes it."""
    return stamp_files(*list_files(source.partition(":")[2]))


def _read_file_document(path: Path, offset: int | None) -> str:
    """A whole text file, or the JSON line starting at byte `offset`."""
    if offset is None:
        return read_text_file(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        return jsonl_text(fh.readline(), str(path))


# --- hub -----------------------------------------------------------------------------------

def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """`<data set>[:<config>[:<text column>]]` -> (data set id, config or None, text column)."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"hub:{spec} must be 'hub:<data set>[:<config>[:<text column>]]', "
                         "e.g. hub:Salesforce/wikitext:wikitext-103-raw-v1 or hub:org/name::body")
    path, config, column = (parts + ["", ""])[:3]
    return path, config or None, column or "text"


def hub_source(spec: str) -> DocumentSource | dict[str, Iterable[Document]]:
    """A hub data set: its own train/validation/test splits streamed (WikiText cut into articles
    at its ' = Title = ' lines, other data sets one row per document), or, with fewer splits,
    the rows of its first split as a flat source to split by document."""
    import datasets

    path, config, column = parse_hub_spec(spec)
    ds = from_hub(f"data set {path!r}", datasets.load_dataset, path, config)
    first = next(iter(ds.values()))
    if column not in first.column_names:
        raise ValueError(f"hub:{spec}: the data set has no text column {column!r}; its columns "
                         f"are {first.column_names} (name one: hub:{path}:{config or ''}:<column>)")
    if all(s in ds for s in SPLITS):
        stream = wikitext_articles if path.split("/")[-1] == "wikitext" else row_documents
        return {s: _Restartable(stream, ds[s], column, s) for s in SPLITS}
    return rows_source(first, column)


class _Restartable:
    """An iterable that starts a fresh stream each time it is iterated."""

    def __init__(self, make: Callable[..., Iterator[Document]], *args: Any) -> None:
        self.make, self.args = make, args

    def __iter__(self) -> Iterator[Document]:
        return self.make(*self.args)


def column_batches(split: Any, column: str) -> Iterator[list[str]]:
    """The text column of a data set split, HUB_READ_BATCH rows at a time (memory-mapped)."""
    for lo in range(0, len(split), HUB_READ_BATCH):
        yield split[lo:lo + HUB_READ_BATCH][column]


def row_documents(split: Any, column: str, name: str) -> Iterator[Document]:
    """One document per row (empty rows skipped later)."""
    row = 0
    for texts in column_batches(split, column):
        for text in texts:
            yield f"{name}:{row}", text or ""
            row += 1


def wikitext_articles(split: Any, column: str, name: str) -> Iterator[Document]:
    """WikiText lines grouped into articles: a ' = Title = ' line starts a new one."""
    title, lines = None, []
    for texts in column_batches(split, column):
        for line in texts:
            if WIKITEXT_HEADING.match(line.rstrip("\n")) and lines:
                yield title, "".join(lines)
                lines = []
            if not lines:
                title = line.strip(" =\n")
            lines.append(line)
    if lines:
        yield title, "".join(lines)


def rows_source(split: Any, column: str) -> DocumentSource:
    """The rows of one data set split as a flat source (sizes read in batches)."""
    sizes = np.concatenate([np.fromiter((len(t or "") for t in texts), dtype=np.int64)
                            for texts in column_batches(split, column)])
    return DocumentSource(RowNames(len(sizes)), sizes, lambda i: split[i][column] or "")


class RowNames(Sequence):
    """`row:<i>` for every row, without a list of millions of strings."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [f"row:{j}" for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return f"row:{i % self.n}"
