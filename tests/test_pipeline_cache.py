"""The pipeline computes each expensive result once: kNN-LM log-probs cached on disk."""
import numpy as np
import pytest

from memdec_helpers import load_profile, pipeline as P


@pytest.fixture
def small(tmp_path):
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), max_train_tokens=3000,
                        max_eval_tokens=600, k=8, target_top_m=4, knn_temperature_grid=[1.0, 3.0])


def test_knn_logprobs_are_cached_on_disk(monkeypatch, small):
    first = P.knn_logprobs(small, "validation")
    assert sorted(first) == [1.0, 3.0] and len(first[3.0]) == 599
    P._KNN.clear()  # a new process (the next lesson) has no memo
    monkeypatch.setattr(P, "knn_lm_logprobs", lambda *a, **k: pytest.fail("searched again"))
    again = P.knn_logprobs(small, "validation")
    assert all(np.array_equal(first[t], again[t]) for t in first)
    monkeypatch.undo()
    other = P.knn_logprobs(small, "validation", temperatures=[2])  # another config: recomputed
    assert list(other) == [2.0]
    P.release_index()
