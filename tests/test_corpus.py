"""Corpora: splits by document with no overlap, deterministic, tokenizer round trip."""
import json

import numpy as np
import pytest

from memdec_helpers import load_corpus, load_profile
from memdec_helpers.stages.corpus import load_documents, split_documents, tokenize_documents
from memdec_helpers.runtime.models import load_tokenizer


@pytest.mark.parametrize("name", ["kjv-ot", "shakespeare+kjv-nt"])
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
        assert text[:80] not in train_text  # the chapter heading or title makes it unique


def test_split_is_deterministic_and_seeded():
    docs = load_documents("bundled:kjv-ot")
    a, b = split_documents(docs, 0.1, 0.1, 0), split_documents(docs, 0.1, 0.1, 0)
    c = split_documents(docs, 0.1, 0.1, 1)
    assert a == b
    assert [d for d, _ in a["test"]] != [d for d, _ in c["test"]]


def test_shakespeare_uses_one_edition_of_each_play():
    names = [d for d, _ in load_documents("bundled:shakespeare")]
    assert len(names) == len(set(names)) == 42
    assert not any(n.endswith("_f") for n in names)


def test_bundled_corpora_join_with_plus_and_keep_one_chapter_per_document():
    ot, nt = load_documents("bundled:kjv-ot"), load_documents("bundled:kjv-nt")
    assert (len(ot), len(nt)) == (929, 260)  # chapters of the Old and New Testaments
    assert ot[0][0] == "Genesis 1" and ot[0][1].startswith("Genesis 1\n\nIn the beginning God")
    assert nt[-1][0] == "Revelation 22"
    joined = load_documents("bundled:shakespeare+kjv-nt")
    assert joined == load_documents("bundled:shakespeare") + nt
    with pytest.raises(ValueError, match="kjv-ot"):
        load_documents("bundled:kjv")


def test_splits_are_drawn_from_across_the_corpus():
    """A split keeps the shuffled order, so a token cap samples chapters of many books."""
    splits = split_documents(load_documents("bundled:kjv-ot"), 0.05, 0.05, seed=0)
    first_books = {name.rsplit(" ", 1)[0] for name, _ in splits["train"][:40]}
    assert len(first_books) >= 15
    names = [name for name, _ in splits["validation"]]
    assert names != sorted(names, key=[n for n, _ in load_documents("bundled:kjv-ot")].index)


@pytest.mark.parametrize("name", ["kjv-ot", "kjv-nt", "shakespeare"])
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
    assert manifest["config"]["knobs"]["source"] == profile.domain_corpus
    # reference: each listed document tokenized on its own, end-of-text after each, then the cap
    tokenizer = load_tokenizer(profile)
    text = dict(load_documents(profile.domain_corpus))
    ids = [tokenizer(text[name], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
           for name in manifest["documents"]["validation"]]
    expected = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids])
    assert len(expected) >= profile.max_eval_tokens > len(expected) - len(ids[-1])
    assert np.array_equal(tokens["validation"], expected[:profile.max_eval_tokens])


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
    from memdec_helpers.stages.recipes import corpus_recipe
    from memdec_helpers.stages.store import stage_dir

    return stage_dir(profile, corpus_recipe(profile).folder)


def test_split_documents_used_names_the_documents_in_each_stream(profile):
    from memdec_helpers.stages.corpus import split_documents_used

    used = split_documents_used(profile)
    splits = split_documents(load_documents(profile.domain_corpus), profile.validation_fraction,
                             profile.test_fraction, profile.split_seed)
    for split, names in used.items():
        assert names == [name for name, _ in splits[split]][:len(names)]  # a prefix, in order
    assert not set(used["train"]) & (set(used["validation"]) | set(used["test"]))


def test_edited_corpus_tokens_are_detected_on_load(profile):
    """The corpus sha256 used to be recorded but never compared: edited tokens were reused."""
    tokens = load_corpus(profile)
    path = profile_dir(profile) / "train.npy"
    edited = tokens["train"].copy()
    edited[100] = (edited[100] + 1) % 4096
    np.save(path, edited)  # same size, other tokens
    with pytest.raises(ValueError, match="train.npy was changed"):
        load_corpus(profile)
