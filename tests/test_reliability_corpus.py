"""Reliability of the corpus stage (issue 21): what really happened when a split is empty, a
suggested cap that works for both held-out splits, free space checked before a stale corpus
is cleared."""
import re
import shutil

import numpy as np
import pytest

from memdec_helpers import load_corpus
from test_reliability_sources import files_profile, words, write_texts


def test_one_huge_document_is_named_when_a_split_is_left_empty(tmp_path):
    """The message blamed "too few documents" when one file held nearly all the text."""
    folder = write_texts(tmp_path / "texts", n=5, size=50)
    (folder / "huge.txt").write_text(words(20_000), encoding="utf-8")
    profile = files_profile(tmp_path, f"files:{folder}", max_train_tokens=None,
                            max_eval_tokens=None)
    with pytest.raises(ValueError, match=r"train split got no document.*huge\.txt alone holds "
                                         r"9\d% of the corpus's text.*went to the (test|validation) "
                                         r"split.*Split that file into several"):
        load_corpus(profile, progress=False)


def test_too_few_documents_is_said_as_such(tmp_path):
    folder = write_texts(tmp_path / "texts", n=2, size=50)
    with pytest.raises(ValueError, match=r"only 2 documents.*at least one whole document"):
        load_corpus(files_profile(tmp_path, f"files:{folder}"), progress=False)


def test_the_suggested_max_eval_tokens_works_for_both_held_out_splits(tmp_path):
    """The suggestion was the first short split's size: the other one could be shorter still."""
    folder = write_texts(tmp_path / "texts", n=20, size=100)
    knobs = dict(validation_fraction=0.3, test_fraction=0.1, max_train_tokens=None)
    full = load_corpus(files_profile(tmp_path, f"files:{folder}", max_eval_tokens=None, **knobs),
                       progress=False)
    assert len(full["test"]) < len(full["validation"])  # the case the old suggestion missed
    with pytest.raises(ValueError, match="max_eval_tokens") as caught:
        load_corpus(files_profile(tmp_path, f"files:{folder}", max_eval_tokens=10**6, **knobs),
                    progress=False)
    suggested = int(re.search(r"e\.g\. max_eval_tokens=(\d+)", str(caught.value)).group(1))
    assert suggested == len(full["test"])
    tokens = load_corpus(files_profile(tmp_path, f"files:{folder}", max_eval_tokens=suggested,
                                       **knobs), progress=False)
    assert len(tokens["validation"]) == len(tokens["test"]) == suggested


def test_a_full_disk_keeps_the_old_corpus(tmp_path, monkeypatch):
    folder = write_texts(tmp_path / "texts", n=8)
    profile = files_profile(tmp_path, f"files:{folder}")
    load_corpus(profile, progress=False)
    stage = next((tmp_path / "artifacts").rglob("manifest.json")).parent
    before = {p.name: p.read_bytes() for p in stage.iterdir()}
    usage = shutil.disk_usage(stage)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match=f"not enough disk space in {stage.parent}/corpus-domain-"):
        load_corpus(files_profile(tmp_path, f"files:{folder}", max_train_tokens=400),
                    progress=False)  # another recipe: its own folder, refused before any write
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == before
    monkeypatch.undo()
    np.testing.assert_array_equal(load_corpus(profile, progress=False)["train"],
                                  np.load(stage / "train.npy"))
