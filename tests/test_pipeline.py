"""Session memoisation keys on the whole profile: a changed knob is never served a result
computed for another one (it used to be, for split_seed, the split fractions, the tokenizer and
the index knobs), neither from memory nor from the kNN-LM log-probs cached on disk."""
from dataclasses import replace
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from conftest import make_gpt2
from memdec_helpers import pipeline as P
from memdec_helpers.core.hashing import config_hash

KNOBS = {"split_seed": 3, "validation_fraction": 0.1, "test_fraction": 0.1,
         "tokenizer": "gpt2", "ivf_nlist": 64, "pq_code_bytes": 32, "index_train_size": 5000}
DATASTORE_KNOBS = ("split_seed", "validation_fraction", "test_fraction", "tokenizer")
INDEX_KNOBS = ("ivf_nlist", "pq_code_bytes", "index_train_size")


@pytest.fixture
def calls(monkeypatch):
    """Fake stages that record what they were asked to compute (no model, no corpus)."""
    seen = {"keys": [], "knn": []}
    for cache in ("_EVAL_KEYS", "_KNN"):
        monkeypatch.setattr(P, cache, {})
    monkeypatch.setattr(P, "base", lambda profile, which=0: (None, None))
    monkeypatch.setattr(P, "corpus",
                        lambda profile, which="domain": {"validation": np.arange(10) + profile.split_seed})

    def extract_keys(model, tokens, *args):
        seen["keys"].append(tokens.copy())
        return tokens[:, None].astype(np.float32), tokens

    def search(index, keys, k):
        seen["knn"].append(index)
        return np.zeros((len(keys), k), np.float32), np.zeros((len(keys), k), np.int64)

    monkeypatch.setattr(P, "extract_keys", extract_keys)
    monkeypatch.setattr(P, "search", search)
    # what the real stages' manifests hash: the datastore its corpus, the index its knobs
    monkeypatch.setattr(P, "index",
                        lambda profile, which=0, progress=True: profile.subset(*INDEX_KNOBS))
    monkeypatch.setattr(P, "index_identity", lambda index: index)
    monkeypatch.setattr(P, "datastore", lambda profile, which=0, progress=True: SimpleNamespace(
        vals=np.arange(5), manifest={"config_hash": config_hash(profile.subset(*DATASTORE_KNOBS))}))
    monkeypatch.setattr(P, "model_id", lambda model: "fake-model")
    monkeypatch.setattr(P, "weights_fingerprint", lambda model: "fake-weights")
    return seen


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_a_changed_knob_is_computed_again(profile, calls, knob):
    other = replace(profile, **{knob: KNOBS[knob]})
    for p in (profile, profile, other, other):  # each profile computes once, then reuses
        P.knn_logprobs(p, "validation")
    assert len(calls["keys"]) == 2 and len(calls["knn"]) == 2
    P._KNN.clear()  # a new session: the disk cache (one stage folder) holds `other`'s result
    P.knn_logprobs(other, "validation")
    assert len(calls["knn"]) == 2  # reused from disk
    P.knn_logprobs(profile, "validation")
    assert len(calls["knn"]) == 3  # never served `other`'s: computed again


def test_the_split_seed_reaches_the_keys(profile, calls):
    """setup(split_seed=3) after split_seed=0 gave kNN-LM validation ppl 116.7 for 249.5."""
    first = P.eval_keys(profile, "validation")[1]
    second = P.eval_keys(replace(profile, split_seed=3), "validation")[1]
    assert not np.array_equal(first, second)


def test_knn_logprobs_are_saved_and_reused_by_a_new_session(profile, monkeypatch):
    """Lessons 02, 04 and 05 (and both test passes) share one search per split and base."""
    rng = np.random.default_rng(0)
    flat = faiss.IndexFlatL2(4)
    flat.add(rng.normal(size=(300, 4)).astype(np.float32))
    tokens = rng.integers(0, 7, 41)
    monkeypatch.setattr(P, "_KNN", {})
    monkeypatch.setattr(P, "base", lambda profile, which=0: (make_gpt2(), None))
    monkeypatch.setattr(P, "corpus", lambda profile, which="domain": {"validation": tokens})
    monkeypatch.setattr(P, "index", lambda profile, which=0, progress=True: flat)
    monkeypatch.setattr(P, "datastore", lambda profile, which=0, progress=True: SimpleNamespace(
        vals=rng.integers(0, 7, 300), manifest={"config_hash": "datastore"}))
    monkeypatch.setattr(P, "eval_keys", lambda *args: (rng.normal(size=(40, 4)).astype(np.float32),
                                                       tokens[1:]))
    profile = replace(profile, knn_k_grid=(16, 4), knn_temperature_grid=(1.0, 3.0))
    first = P.knn_logprobs(profile, "validation")
    assert list(first) == [(4, 1.0), (4, 3.0), (16, 1.0), (16, 3.0)]
    monkeypatch.setattr(P, "_KNN", {})  # a new session: the memo is gone, the stage is not

    def no_search(*args):
        raise AssertionError("searched again although the saved log-probs are current")

    monkeypatch.setattr(P, "search", no_search)
    again = P.knn_logprobs(profile, "validation")
    assert again.keys() == first.keys()
    assert all(np.array_equal(again[kt], first[kt]) for kt in first)
    monkeypatch.setattr(P, "_KNN", {})
    with pytest.raises(AssertionError, match="searched again"):  # another grid: searched again
        P.knn_logprobs(replace(profile, knn_temperature_grid=(2.0,)), "validation")
