"""Corpora: splits by document with no overlap, deterministic, tokenizer round trip."""
import json

import numpy as np
import pytest

from memdec_helpers import load_corpus, load_profile
from memdec_helpers.corpus import load_documents, split_documents, tokenize_documents
from memdec_helpers.models import load_tokenizer


@pytest.mark.parametrize("name", ["kjv", "shakespeare"])
def test_splits_share_no_document(name):
    docs = load_documents(f"bundled:{name}")
    splits = split_documents(docs, 0.05, 0.05, seed=0)
    names = {s: {d for d, _ in v} for s, v in splits.items()}
    assert all(names.values())
    assert not names["train"] & names["validation"]
    assert not names["train"] & names["test"]
    assert not names["validation"] & names["test"]
    assert sum(len(v) for v in names.values()) == len(docs)
    # no text of a held-out document appears in train either
    train_text = "".join(t for _, t in splits["train"])
    for _, text in splits["test"]:
        assert text[1000:1200] not in train_text


def test_split_is_deterministic_and_seeded():
    docs = load_documents("bundled:kjv")
    a, b = split_documents(docs, 0.1, 0.1, 0), split_documents(docs, 0.1, 0.1, 0)
    c = split_documents(docs, 0.1, 0.1, 1)
    assert a == b
    assert [d for d, _ in a["test"]] != [d for d, _ in c["test"]]


def test_shakespeare_uses_one_edition_of_each_play():
    names = [d for d, _ in load_documents("bundled:shakespeare")]
    assert len(names) == len(set(names)) == 42
    assert not any(n.endswith("_f") for n in names)


@pytest.mark.parametrize("name", ["kjv", "shakespeare"])
def test_tokenizer_round_trip(name):
    tokenizer = load_tokenizer(load_profile("tiny"))
    for _, text in load_documents(f"bundled:{name}")[:3]:
        ids = tokenizer(text[:20000], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text[:20000]
        assert len(ids) < len(text[:20000]) / 2.5  # BPE actually compresses


def test_load_corpus_caps_caches_and_ends_documents(profile):
    tokens = load_corpus(profile)
    assert {len(tokens["train"]), len(tokens["validation"])} == {profile.max_train_tokens,
                                                                profile.max_eval_tokens}
    assert all(t.dtype == np.int32 and t.ndim == 1 for t in tokens.values())
    again = load_corpus(profile)
    assert all(np.array_equal(tokens[s], again[s]) for s in tokens)
    manifest = json.loads((profile_dir(profile) / "manifest.json").read_text())
    assert manifest["config"]["source"] == "bundled:kjv"


def test_changed_knob_rebuilds(profile, tmp_path):
    first = load_corpus(profile)
    changed = load_profile("tiny", artifacts_dir=profile.artifacts_dir, max_train_tokens=5000)
    assert len(load_corpus(changed)["train"]) == 5000
    assert np.array_equal(load_corpus(changed)["train"], first["train"][:5000])


def test_whitespace_only_corpus_is_refused():
    tokenizer = load_tokenizer(load_profile("tiny"))
    with pytest.raises(ValueError, match="empty"):
        tokenize_documents(tokenizer, [("a", "   \n"), ("b", "")])


def profile_dir(profile):
    from pathlib import Path

    return Path(profile.artifacts_dir) / profile.name / "corpus-domain"


def test_edited_corpus_tokens_are_detected_on_load(profile):
    """The corpus sha256 used to be recorded but never compared: edited tokens were reused."""
    tokens = load_corpus(profile)
    path = profile_dir(profile) / "train.npy"
    edited = tokens["train"].copy()
    edited[100] = (edited[100] + 1) % 4096
    np.save(path, edited)  # same size, other tokens
    with pytest.raises(ValueError, match="train.npy was changed"):
        load_corpus(profile)
