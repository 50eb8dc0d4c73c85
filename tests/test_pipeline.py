"""Every cached result is found by a recipe whose key changes with every knob it depends on, so
a changed knob is never served a result computed for another one, neither from the session's
memo nor from disk (it used to be, for split_seed, the split fractions, the tokenizer and the
index knobs); and a fresh session reuses what is on disk."""
from dataclasses import replace

import faiss
import numpy as np
import pytest

from conftest import make_gpt2
from memdec_helpers import pipeline as P
from memdec_helpers.runtime import knnlm
from memdec_helpers.stages.recipes import datastore_recipe, queries_identity

KNOBS = {"split_seed": 3, "validation_fraction": 0.1, "test_fraction": 0.1,
         "tokenizer": "gpt2", "ivf_nlist": 64, "pq_code_bytes": 32, "index_train_size": 5000}
CORPUS_KNOBS = ("split_seed", "validation_fraction", "test_fraction", "tokenizer")


@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_a_changed_knob_changes_every_key_that_depends_on_it(profile, knob):
    """Computed from the profile alone (nothing is built or loaded)."""
    profile = replace(profile, index_type="ivfpq")
    other = replace(profile, **{knob: KNOBS[knob]})
    before, after = (P.knn_recipe(p, "validation").key for p in (profile, other))
    assert before != after
    assert P.search_id(profile) != P.search_id(other)  # another index, or another datastore
    corpus = knob in CORPUS_KNOBS  # corpus knobs: new keys and new queries; index knobs: not
    assert (datastore_recipe(profile).key != datastore_recipe(other).key) == corpus
    assert (queries_identity(profile, "validation") != queries_identity(other, "validation")) == corpus


def test_the_split_seed_reaches_the_keys(profile, monkeypatch):
    """setup(split_seed=3) after split_seed=0 gave kNN-LM validation ppl 116.7 for 249.5."""
    monkeypatch.setattr(P, "_EVAL_KEYS", {})
    monkeypatch.setattr(P, "base", lambda profile, which=0: (None, None))
    monkeypatch.setattr(P, "corpus", lambda profile, which="domain":
                        {"validation": np.arange(10) + profile.split_seed})
    monkeypatch.setattr(P, "keys_of", lambda model, tokens, spec, **kw:
                        (tokens[:, None].astype(np.float32), tokens))
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
    monkeypatch.setattr(P, "datastore", lambda profile, which=0, progress=True: type(
        "Store", (), {"vals": rng.integers(0, 7, 300)})())
    monkeypatch.setattr(P, "eval_keys", lambda *args: (rng.normal(size=(40, 4)).astype(np.float32),
                                                       tokens[1:]))
    profile = replace(profile, k=16, target_top_m=16, knn_k_grid=(16, 4),
                      knn_temperature_grid=(1.0, 3.0))  # k = 16 and τ = 3 in the grids
    first = P.knn_logprobs(profile, "validation")
    assert list(first) == [(4, 1.0), (4, 3.0), (16, 1.0), (16, 3.0)]
    monkeypatch.setattr(P, "_KNN", {})  # a new session: the memo is gone, the stage is not

    def no_search(*args):
        raise AssertionError("searched again although the saved log-probs are current")

    monkeypatch.setattr(knnlm, "search", no_search)
    again = P.knn_logprobs(profile, "validation")
    assert again.keys() == first.keys()
    assert all(np.array_equal(again[kt], first[kt]) for kt in first)
    monkeypatch.setattr(P, "_KNN", {})
    with pytest.raises(AssertionError, match="searched again"):  # another grid: searched again
        P.knn_logprobs(replace(profile, knn_temperature_grid=(2.0,)), "validation")
