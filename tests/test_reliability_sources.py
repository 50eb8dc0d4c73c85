"""Reliability of a learner's own files (issue 21): folder walks that never loop, file names
that are not UTF-8, binary files, hidden files and links said out loud, a single file, folder
names that look like globs, same-size edits, and reading bounded by the caps, not the file."""
import json
import multiprocessing
import os
import re
import time
import warnings
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from memdec_helpers import load_corpus, load_profile
from memdec_helpers.stages.corpus import _tokenize_until
from memdec_helpers.runtime.models import load_tokenizer
from memdec_helpers.stages.sources import files_fingerprint, open_source

WORDS = "the of and to in that he shall unto for his a lord they be is him not them it".split()


def words(n: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n)) + ".\n"


def write_texts(folder: Path, n: int = 6, size: int = 300) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(words(size, i), encoding="utf-8")
    return folder


def files_profile(tmp_path, source: str, **knobs):
    knobs = {"max_train_tokens": 500, "max_eval_tokens": 100, "validation_fraction": 0.2,
             "test_fraction": 0.2, "knn_k_grid": [16], **knobs}  # k's within a few hundred keys
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), domain_corpus=source,
                        **knobs)


# --- walks ---------------------------------------------------------------------------------

def _open_in_child(spec: str, report: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_source(spec)
    Path(report).write_text(json.dumps({"names": list(source.names),
                                        "seconds": time.perf_counter() - start,
                                        "peak": tracemalloc.get_traced_memory()[1],
                                        "warnings": [str(w.message) for w in caught]}))


def open_with_a_deadline(spec: str, tmp_path: Path, seconds: float = 20.0) -> dict:
    """open_source(spec) in a forked child, killed after `seconds`: a walk that follows a
    symlink loop never ends (it used to reach 23 GB), so it must not run in pytest itself."""
    report = tmp_path / "report.json"
    child = multiprocessing.get_context("fork").Process(target=_open_in_child,
                                                        args=(spec, str(report)))
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"open_source({spec!r}) did not finish in {seconds} s")
    assert child.exitcode == 0
    return json.loads(report.read_text())


@pytest.mark.parametrize("pattern", ["", "/**/*.txt", "/**"])
def test_a_symlink_loop_is_walked_once_in_bounded_time_and_memory(tmp_path, pattern):
    """`files:<folder>/**/*.txt` over a folder with `sub/up -> ..` links never finished: the
    recursive glob followed the directory links."""
    folder = write_texts(tmp_path / "texts", n=3)
    for sub in ("a", "b", "c"):
        (folder / sub).mkdir()
        (folder / sub / f"{sub}.txt").write_text(words(50), encoding="utf-8")
        (folder / sub / "up").symlink_to("..", target_is_directory=True)
    got = open_with_a_deadline(f"files:{folder}{pattern}", tmp_path)
    assert re.search(r"3 linked folders \(a/up, b/up, c/up\).*not followed", " ".join(got["warnings"]))
    assert sorted(got["names"]) == ["a/a.txt", "b/b.txt", "c/c.txt", "doc0.txt", "doc1.txt",
                                    "doc2.txt"]
    assert got["seconds"] < 5 and got["peak"] < 20 * 2**20


def test_linked_files_are_read_once_and_linked_folders_are_named(tmp_path):
    folder = write_texts(tmp_path / "texts", n=2)
    elsewhere = write_texts(tmp_path / "elsewhere", n=1)
    (folder / "more").symlink_to(elsewhere, target_is_directory=True)
    (folder / "link.txt").symlink_to(elsewhere / "doc0.txt")  # a linked file: read
    (folder / "again.txt").symlink_to(folder / "doc1.txt")  # the same file twice: read once
    with pytest.warns(UserWarning) as caught:
        source = open_source(f"files:{folder}")
    assert sorted(source.names) == ["doc0.txt", "doc1.txt", "link.txt"]
    said = " ".join(str(w.message) for w in caught)
    assert "1 linked folder (more)" in said and "not followed" in said
    assert "again.txt" in said and "same file as doc1.txt" in said


def test_hidden_files_are_skipped_and_said(tmp_path):
    folder = write_texts(tmp_path / "texts", n=2)
    (folder / ".draft.txt").write_text(words(20), encoding="utf-8")
    (folder / ".git").mkdir()
    (folder / ".git" / "notes.txt").write_text(words(20), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"skipped 2 hidden .*\.draft\.txt.*\.git"):
        source = open_source(f"files:{folder}")
    assert sorted(source.names) == ["doc0.txt", "doc1.txt"]


def test_a_file_name_that_is_not_utf8_is_read_and_named_readably(tmp_path):
    """`caf\\xe9.txt` from a latin-1 archive raised UnicodeEncodeError from the file stamping,
    naming no file."""
    folder = write_texts(tmp_path / "texts", n=5)
    odd = os.fsencode(str(folder)) + b"/caf\xe9.txt"
    with open(odd, "wb") as fh:
        fh.write(words(200, 9).encode())
    profile = files_profile(tmp_path, f"files:{folder}", max_train_tokens=None,
                            max_eval_tokens=None)
    tokens = load_corpus(profile, progress=False)
    assert sum(map(len, tokens.values())) > 0
    manifest = next((tmp_path / "artifacts").rglob("manifest.json")).read_text()
    assert "caf\\\\xe9.txt" in manifest  # the readable name, escaped once more by JSON
    with open(odd, "wb") as fh:  # now its content is not UTF-8 either: the error names it
        fh.write(b"caf\xe9 " * 50)
    with pytest.raises(ValueError, match=r"caf\\xe9\.txt is not UTF-8") as caught:
        load_corpus(profile, progress=False)
    str(caught.value).encode("utf-8")  # printable: no lone surrogates


def test_a_binary_file_is_refused(tmp_path):
    folder = write_texts(tmp_path / "texts", n=3)
    (folder / "blob.txt").write_bytes(b"\0" * 200_000)
    with pytest.raises(ValueError, match=r"blob\.txt looks binary \(a NUL byte at byte 0\)"):
        open_source(f"files:{folder}")


def test_a_single_file_is_a_source(tmp_path):
    folder = write_texts(tmp_path / "texts", n=3)
    source = open_source(f"files:{folder / 'doc1.txt'}")
    assert list(source.names) == ["doc1.txt"] and source.read(0) == words(300, 1)
    (folder / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv.*not a \.txt, \.md or \.jsonl"):
        open_source(f"files:{folder / 'x.csv'}")
    with pytest.raises(ValueError, match="no such file or folder"):
        open_source(f"files:{folder / 'nowhere.txt'}")


@pytest.mark.parametrize("name", ["notes [2020]", "what?", "a*b"])
def test_a_folder_whose_name_looks_like_a_glob_is_a_folder(tmp_path, name):
    folder = write_texts(tmp_path / name, n=2)
    write_texts(tmp_path / "notes 2", n=4)  # what `[2020]` would match as a glob
    source = open_source(f"files:{folder}")
    assert sorted(source.names) == ["doc0.txt", "doc1.txt"]


def test_a_glob_still_matches(tmp_path):
    folder = write_texts(tmp_path / "texts", n=3)
    write_texts(folder / "deeper" / "still", n=2)
    (folder / "deeper" / "x.md").write_text(words(30), encoding="utf-8")
    assert sorted(open_source(f"files:{folder}/*.txt").names) == ["doc0.txt", "doc1.txt", "doc2.txt"]
    assert sorted(open_source(f"files:{folder}/**/doc1.txt").names) == [
        "deeper/still/doc1.txt", "doc1.txt"]
    assert list(open_source(f"files:{folder}/d*/*.md").names) == ["deeper/x.md"]
    assert sorted(open_source(f"files:{folder}/doc[02].txt").names) == ["doc0.txt", "doc2.txt"]


# --- same-size edits -----------------------------------------------------------------------

def test_a_same_size_edit_with_the_time_restored_is_noticed(tmp_path):
    """`cp -p` / `rsync -t` restore the modification time: names, sizes and times alone served
    the old corpus."""
    folder = write_texts(tmp_path / "texts", n=4)
    path = folder / "doc2.txt"
    before = files_fingerprint(f"files:{folder}")
    stat = path.stat()
    text = path.read_text()
    path.write_text(text.replace("the", "THE", 1) if "the" in text else "X" + text[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert files_fingerprint(f"files:{folder}") != before


# --- memory bounded by the caps, not by the largest file ------------------------------------

def test_reading_a_huge_file_holds_a_bounded_piece_of_it(tmp_path):
    """A 150 MB file took 1.0 GB: every file was read whole, to check it and to tokenize it."""
    folder = write_texts(tmp_path / "texts", n=2)
    block = words(20_000)  # ~90 KB
    with open(folder / "huge.txt", "w", encoding="utf-8") as fh:
        for _ in range(180):  # ~16 MB
            fh.write(block)
    tracemalloc.start()
    try:
        source = open_source(f"files:{folder}")
        scanned = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        huge = list(source.names).index("huge.txt")
        assert source.sizes[huge] == 180 * len(block)
        tokenizer = load_tokenizer(load_profile("tiny"))
        tracemalloc.reset_peak()
        ids, names = _tokenize_until(tokenizer, source.lazy_documents([huge]), 5000,
                                     max_chars=100_000)
        tokenized = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ids) == 5000 and names == ["huge.txt"]
    assert scanned < 6 * 2**20 and tokenized < 8 * 2**20, (scanned, tokenized)
    whole, _ = _tokenize_until(tokenizer, [("huge.txt", (folder / "huge.txt").read_text())], 5000,
                               max_chars=100_000)
    np.testing.assert_array_equal(ids, whole)  # the same tokens as the whole text gives
