"""Corpus sources: where documents come from, read lazily so memory is bounded by the caps.

- `bundled:<name>[+<name>...]`: corpora shipped inside the package (compressed JSON lines; a
  pre-split one, the generated fact domain `bundled:facts`, names each document's split);
- `files:<folder or glob>`: your own texts, one document per `.txt`/`.md` file (UTF-8) or one
  per line of a `.jsonl` file with a `text` field;
- `hub:<data set>[:<config>[:<text column>]]`: a Hugging Face data set, e.g.
  `hub:Salesforce/wikitext:wikitext-103-raw-v1` (text column `text` unless named).

A flat source (bundled, files, a hub data set with one split) is a list of document names and
sizes plus a reader; corpus.py splits it by document and reads only what the caps need. A hub
data set with its own train/validation/test splits is streamed split by split, and a pre-split
bundled corpus is read the same way.
"""
from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import json
import os
import re
import warnings
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
    lazy: Callable[[int], Any] | None = None  # document i as a FileText (read in blocks later)

    def __len__(self) -> int:
        return len(self.names)

    def documents(self, order: Iterable[int]) -> Iterator[Document]:
        """(name, text) of the documents `order`, read one at a time."""
        for i in order:
            yield self.names[int(i)], self.read(int(i))

    def lazy_documents(self, order: Iterable[int]) -> Iterator[tuple[str, Any]]:
        """(name, text or FileText) of the documents `order`: what the tokenizer reads in
        pieces, so a huge file is never held whole."""
        read = self.lazy or self.read
        for i in order:
            yield self.names[int(i)], read(int(i))


def open_source(source: str) -> DocumentSource | dict[str, Iterable[Document]]:
    """A flat DocumentSource, or split -> stream of documents for a source with its own splits
    (a hub data set, a pre-split bundled corpus). Every check (unknown corpus, empty folder,
    bad file, missing column) runs here, before any tokenizing."""
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


def bundled_records(names: str) -> list[dict[str, Any]]:
    """The JSON records of one or more bundled corpora (`a+b`), in order: `doc` (its name),
    `text`, and for a pre-split corpus `split` (plus e.g. the fact domain's `facts` spans)."""
    records: list[dict[str, Any]] = []
    for name in names.split("+"):
        with gzip.open(bundled_corpus_path(name.strip()), "rt", encoding="utf-8") as fh:
            records += list(map(json.loads, fh))
    return records


def bundled_documents(names: str) -> list[Document]:
    """The documents of one or more bundled corpora (`a+b`), in order (a few MB: in memory)."""
    return [(d["doc"], d["text"]) for d in bundled_records(names)]


def in_memory_source(docs: list[Document]) -> DocumentSource:
    """A DocumentSource over documents already in memory (sizes in characters)."""
    sizes = np.fromiter((len(text) for _, text in docs), dtype=np.int64, count=len(docs))
    return DocumentSource([n for n, _ in docs], sizes, lambda i: docs[i][1])


def bundled_source(names: str) -> DocumentSource | dict[str, list[Document]]:
    """A bundled corpus to split by document, or split -> documents for a pre-split one (every
    record names its `split`, as the generated fact domain's do: its held-out documents are
    written to restate facts of the training documents, so no seeded split may reshuffle them;
    validation_fraction, test_fraction and split_seed do not apply to it)."""
    records = bundled_records(names)
    given = [r.get("split") for r in records]
    if not any(given):
        return in_memory_source([(r["doc"], r["text"]) for r in records])
    if not all(given) or not set(given) <= set(SPLITS):
        raise ValueError(f"bundled corpus {names!r}: a pre-split corpus must name one of "
                         f"{SPLITS} as the `split` of every document (got {sorted(set(map(str, given)))}); "
                         "use a pre-split corpus such as 'facts' alone, not joined with '+'")
    return {s: [(r["doc"], r["text"]) for r in records if r["split"] == s] for s in SPLITS}


# --- files ---------------------------------------------------------------------------------

READ_BLOCK = 2**20  # bytes read at a time from a text file (a file is never held whole)
FULL_HASH_BYTES = 2**20  # files up to this size are hashed whole in the corpus fingerprint;
FINGERPRINT_BLOCKS = 16  # larger ones by this many evenly spaced blocks
FINGERPRINT_BLOCK = 64 * 2**10  # of this many bytes (the first and the last included)
SHOWN = 5  # names quoted in a note about skipped files
NUL = b"\0"  # never in a text file: a file that holds one is refused as binary


def shown(path: Any) -> str:
    """A path or file name as a printable string: bytes that are not UTF-8 (a name from an old
    latin-1 archive, kept by Python as lone surrogates) appear as `\xe9` escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


@dataclass
class Walk:
    """What a folder walk found: the corpus files, and what it skipped (said in one note)."""

    files: list[Path]
    hidden: list[str]  # hidden files and folders (names starting with '.'), not entered
    linked_folders: list[str]  # links to folders, not followed (a link may loop)
    duplicates: list[tuple[str, str]]  # (file, the file it is the same as): read once


def walk_files(root: Path, max_depth: int | None = None,
               match: Callable[[str], bool] | None = None) -> Walk:
    """The visible .txt/.md/.jsonl files under `root`, sorted. Links to folders are never
    followed and a folder met twice (a bind mount) is entered once, so the walk is finite and
    bounded by the tree, whatever links it holds; links to files are followed, and a file met
    twice (a link to a file that is also there) is taken once, as itself rather than the link.
    `max_depth`: levels of subfolders entered (None: all); `match`: a glob's test of a name
    relative to `root` (then files of any suffix that match are taken, and checked by the
    caller; hidden names are reported only if they match)."""
    walk = Walk([], [], [], [])
    seen_dirs: set[tuple[int, int]] = set()
    found: list[tuple[bool, str, Path]] = []  # (is a link, name, path)
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        key = _inode(folder)
        if key is None or key in seen_dirs:
            continue
        seen_dirs.add(key)
        subfolders = []
        for entry in sorted(_entries(folder), key=lambda e: e.name):
            rel = relative_name(Path(entry.path), root, readable=False)
            wanted = match(rel) if match else Path(entry.name).suffix.lower() in FILE_SUFFIXES
            if entry.name.startswith("."):
                walk.hidden += [rel] if match is None or wanted else []
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append(Path(entry.path))
            elif entry.is_symlink() and entry.is_dir():
                walk.linked_folders += [rel] if max_depth is None or depth < max_depth else []
            elif wanted and entry.is_file():
                found.append((entry.is_symlink(), rel, Path(entry.path)))
        if max_depth is None or depth < max_depth:
            stack += [(sub, depth + 1) for sub in reversed(subfolders)]
    _take_once(walk, sorted(found))
    return walk


def _take_once(walk: Walk, found: list[tuple[bool, str, Path]]) -> None:
    """Each file (device and inode) once, in the order given (files before links to them)."""
    seen: dict[tuple[int, int] | None, str] = {}
    for _, rel, path in found:
        key = _inode(path)
        if key is not None and key in seen:
            walk.duplicates.append((rel, seen[key]))
            continue
        seen[key] = rel
        walk.files.append(path)
    walk.files.sort()


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of a folder; an unreadable one is a ValueError naming it."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as err:
        raise ValueError(f"cannot read the folder {shown(folder)}: {err.strerror}; fix its "
                         "permissions or leave it out of the corpus") from None


def _inode(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` points to (None if it cannot be read)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def say_what_was_skipped(walk: Walk, spec: str) -> None:
    """One warning that lists what the walk left out and why (hidden files, linked folders,
    the same file twice); nothing when it left nothing out."""
    notes = []
    if walk.hidden:
        notes.append(f"skipped {_count(walk.hidden, 'hidden file or folder', 'hidden files or folders')}"
                     " (names starting with '.'; give a hidden file's own path to read it)")
    if walk.linked_folders:
        notes.append(f"{_count(walk.linked_folders, 'linked folder', 'linked folders')} not "
                     "followed (a link may loop back; links to files are read; give a linked "
                     "folder as its own files: source, or copy it in)")
    if walk.duplicates:
        pairs = ", ".join(f"{shown(a)} (same file as {shown(b)})" for a, b in walk.duplicates[:SHOWN])
        notes.append(f"read once: {pairs}{', ...' if len(walk.duplicates) > SHOWN else ''}")
    if notes:
        warnings.warn(f"files:{shown(spec)}: " + "; ".join(notes), stacklevel=4)


def _count(names: list[str], one: str, many: str) -> str:
    listed = ", ".join(shown(n) for n in names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return f"{len(names)} {one if len(names) == 1 else many} ({listed})"


def glob_root(spec: str) -> tuple[Path, str]:
    """(the folder before the first component with a glob character, the rest of the pattern)."""
    parts = Path(spec).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first]) if first else Path("."), "/".join(parts[first:])


def glob_regex(pattern: str) -> re.Pattern:
    """A regex for a relative glob pattern with '/' separators: `*`, `?` and `[...]` within one
    name, `**` for any number of folders (as glob.glob with recursive=True)."""
    parts, out = pattern.split("/"), ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]+/)*"
        else:
            out += _name_regex(part) + ("" if last else "/")
    return re.compile(out + r"\Z", re.S)


def _name_regex(part: str) -> str:
    """The regex of one name of a glob pattern: `*`, `?` and `[...]` (`[!...]` negated) never
    match '/'; everything else literally."""
    out, i = "", 0
    while i < len(part):
        char = part[i]
        close = part.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif close > 0:
            inside = part[i + 1:close]
            negate = inside.startswith("!")
            body = re.escape(inside[1:] if negate else inside).replace(r"\-", "-")
            out += f"[{'^/' if negate else ''}{body}]"
            i = close
        else:
            out += re.escape(char)
        i += 1
    return out


def list_files(spec: str) -> tuple[list[Path], Path]:
    """(the .txt/.md/.jsonl files of a folder (recursively), of a single file or of a glob,
    sorted; the folder their names are relative to). A path that exists as given is a folder
    or a file even if its name holds `[ ] ? *`; only a path that does not exist is a glob.
    Hidden files, folder links and the same file twice are left out and said in one warning;
    ValueError for a missing path or no usable file."""
    spec = str(Path(spec).expanduser())
    path = Path(spec)
    if path.is_dir():
        root, walk = path, walk_files(path)
    elif path.is_file():
        root, walk = path.parent, Walk([path], [], [], [])
        _check_suffixes(walk.files, spec)
    elif glob.has_magic(spec):
        root, pattern = glob_root(spec)
        depth = None if "**" in pattern else pattern.count("/")
        regex = glob_regex(pattern)
        walk = (walk_files(root, depth, lambda rel: regex.match(rel) is not None)
                if root.is_dir() else Walk([], [], [], []))
        _check_suffixes(walk.files, spec)
    else:
        raise ValueError(f"files:{shown(spec)}: no such file or folder (give a folder of "
                         ".txt/.md/.jsonl files, one file, or a glob such as files:~/notes/*.md)")
    if not walk.files:
        raise ValueError(f"files:{shown(spec)} holds no .txt, .md or .jsonl file: put one document "
                         "per UTF-8 text file there (or one JSON object with a 'text' field per "
                         "line of a .jsonl file)")
    say_what_was_skipped(walk, spec)
    return walk.files, root


def _check_suffixes(paths: list[Path], spec: str) -> None:
    bad = [p for p in paths if p.suffix.lower() not in FILE_SUFFIXES]
    if bad:
        raise ValueError(f"files:{shown(spec)} matches {shown(bad[0])}, which is not a .txt, .md "
                         "or .jsonl file; narrow the glob (e.g. files:<folder>/*.txt)")


def read_text_file(path: Path) -> str:
    """A UTF-8 text file (BOM and CRLF tolerated); ValueError naming the file otherwise."""
    return "".join(text_blocks(path))


def text_blocks(path: Path, block: int = READ_BLOCK) -> Iterator[str]:
    """A UTF-8 text file's text, `block` bytes at a time (a BOM dropped, CRLF read as LF): the
    file is never held whole. ValueError naming the file (and the byte) for a file that cannot
    be read, is not UTF-8 or holds a NUL byte (a binary file)."""
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise ValueError(f"cannot read {shown(path)}: {err.strerror}; fix its permissions or "
                         "remove it from the corpus folder") from None
    with fh:
        pending, at, carry = b"", 0, ""  # undecoded tail, file offset of `pending`, a held '\r'
        while True:
            raw = fh.read(block)
            data, final = pending + raw, not raw
            nul = raw.find(NUL)
            if nul >= 0:
                raise ValueError(f"{shown(path)} looks binary (a NUL byte at byte "
                                 f"{at + len(pending) + nul}); a corpus file must be text: "
                                 "remove it or convert it")
            text, used = _decode(data, final, shown(path), at)
            if at == 0 and text.startswith("\ufeff"):
                text = text[1:]
            pending, at = data[used:], at + used
            text = carry + text
            carry = "\r" if text.endswith("\r") and not final else ""
            text = (text[:-1] if carry else text).replace("\r\n", "\n")
            if text:
                yield text
            if final:
                return


def _decode(data: bytes, final: bool, where: str, offset: int) -> tuple[str, int]:
    """(text, bytes used) of the UTF-8 `data`, an incomplete last character left for the next
    block unless `final`; ValueError with the byte's offset in the file otherwise."""
    try:
        return codecs.utf_8_decode(data, "strict", final)
    except UnicodeDecodeError as err:
        raise _not_utf8(where, offset + err.start, data[err.start:err.start + 1]) from None


def _not_utf8(where: str, at: int, byte: bytes) -> ValueError:
    return ValueError(f"{where} is not UTF-8 text (byte {at}: {byte!r}); convert it, e.g. "
                      "`iconv -f latin1 -t utf-8 in.txt > out.txt`, or remove it")


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        raise _not_utf8(where, err.start, data[err.start:err.start + 1]) from None


def scan_text_file(path: Path) -> tuple[int, bool]:
    """(characters, whether it is all whitespace) of a text file, read in blocks: every check
    of text_blocks runs, and memory stays at one block whatever the file's size."""
    chars, blank = 0, True
    for text in text_blocks(path):
        chars += len(text)
        blank = blank and text.isspace()
    return chars, blank


class FileText:
    """A text file's document, read again in blocks when it is tokenized (corpus.py asks for
    `pieces`), so a file far larger than the caps is never held whole."""

    def __init__(self, path: Path, blank: bool) -> None:
        self.path, self.blank = path, blank

    def blocks(self) -> Iterator[str]:
        return text_blocks(self.path)

    def __str__(self) -> str:
        return read_text_file(self.path)


def jsonl_lines(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of each non-blank line's `text` field, checked."""
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise ValueError(f"cannot read {shown(path)}: {err.strerror}") from None
    with fh:
        offset = 0
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                yield number, offset, jsonl_text(raw, f"{shown(path)}, line {number}")
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
    """Your own texts: every file is checked (readable, UTF-8, not binary, JSON lines) before
    any work, in blocks; a text is read again, in blocks, only when the caps need it."""
    paths, root = list_files(spec)
    names, sizes, where, blank = [], [], [], []
    for path in paths:
        rel = relative_name(path, root)
        if path.suffix.lower() == ".jsonl":
            for number, offset, text in jsonl_lines(path):
                names.append(f"{rel}:{number}")
                sizes.append(len(text))
                where.append((path, offset))
                blank.append(None)
        else:
            chars, empty = scan_text_file(path)
            names.append(rel)
            sizes.append(chars)
            where.append((path, None))
            blank.append(empty)
    def lazy(i: int) -> FileText | str:  # a text file is read in blocks when tokenized
        path, offset = where[i]
        return FileText(path, blank[i]) if offset is None else _read_file_document(path, offset)

    return DocumentSource(names, np.asarray(sizes, dtype=np.int64),
                          lambda i: _read_file_document(*where[i]), lazy)


def relative_name(path: Path, root: Path, readable: bool = True) -> str:
    """A file's name relative to the corpus folder (its full path outside it); printable
    (`shown`) unless `readable=False` (the name as the file system has it)."""
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return shown(name) if readable else name


def stamp_files(paths: list[Path], root: Path) -> str:
    """A short hash of the files' names (their bytes), sizes, modification times and contents
    (whole up to FULL_HASH_BYTES, sampled above): an edit of the same size with the time
    restored (`cp -p`, `rsync -t`) changes it too."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(os.fsencode(relative_name(path, root, readable=False)))
        digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}\0{content_digest(path, stat)}\n".encode())
    return digest.hexdigest()[:16]


_CONTENT: dict[tuple, str] = {}  # (device, inode, size, mtime, ctime) -> content digest


def content_digest(path: Path, stat: os.stat_result) -> str:
    """sha256 of a file's content (whole up to FULL_HASH_BYTES; else FINGERPRINT_BLOCKS blocks
    at evenly spaced offsets), memoised while the file's inode, size and times (ctime changes
    on every write, whatever mtime says) stay the same."""
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _CONTENT:
        size, digest = stat.st_size, hashlib.sha256()
        if size <= FULL_HASH_BYTES:
            offsets, block = [0], max(size, 1)
        else:
            last = size - FINGERPRINT_BLOCK
            offsets = [round(i * last / (FINGERPRINT_BLOCKS - 1)) for i in range(FINGERPRINT_BLOCKS)]
            block = FINGERPRINT_BLOCK
        with open(path, "rb") as fh:
            for offset in offsets:
                fh.seek(offset)
                digest.update(fh.read(block))
        _CONTENT[key] = digest.hexdigest()
    return _CONTENT[key]


def files_fingerprint(source: str) -> str:
    """The content identity of a `files:` source (names, sizes, modification times, content
    hashes; see stamp_files): an edited, added or removed file changes it."""
    return stamp_files(*list_files(source.partition(":")[2]))


def _read_file_document(path: Path, offset: int | None) -> str:
    """A whole text file, or the JSON line starting at byte `offset`."""
    if offset is None:
        return read_text_file(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        return jsonl_text(fh.readline(), shown(path))


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
