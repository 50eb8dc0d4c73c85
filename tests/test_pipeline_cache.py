"""The pipeline computes each expensive result once: kNN-LM log-probs cached on disk."""
import dataclasses

import numpy as np
import pytest

from memdec_helpers import load_profile, pipeline as P
from memdec_helpers.runtime import knnlm


@pytest.fixture
def small(tmp_path):
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), max_train_tokens=3000,
                        max_eval_tokens=600, k=8, target_top_m=4, knn_k_grid=[4, 8],
                        knn_temperature_grid=[1.0, 3.0])


def test_knn_logprobs_are_cached_on_disk(monkeypatch, small):
    first = P.knn_logprobs(small, "validation")
    assert sorted(first) == [(4, 1.0), (4, 3.0), (8, 1.0), (8, 3.0)]
    assert len(first[(8, 3.0)]) == 599
    P._KNN.clear()  # a new process (the next lesson) has no memo
    monkeypatch.setattr(knnlm, "search", lambda *a, **k: pytest.fail("searched again"))
    again = P.knn_logprobs(small, "validation")
    assert all(np.array_equal(first[kt], again[kt]) for kt in first)
    monkeypatch.undo()
    other = P.knn_logprobs(dataclasses.replace(small, knn_temperature=2.0, knn_temperature_grid=[2]),
                           "validation")
    assert list(other) == [(4, 2.0), (8, 2.0)]  # another config: recomputed
    base1 = P.knn_logprobs(small, "validation", which=1)  # base 1's own datastore and cache
    assert not np.array_equal(base1[(8, 3.0)], first[(8, 3.0)])
    P.release_index()
