"""kNN distributions against a plain dict-loop reference (a naive first version's approach)."""
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from memdec_helpers.core.knn import knn_distribution, knn_token_logprobs, top_m


def reference(distances, tokens, temperature):
    """One dict per row: token -> summed softmax(-d/T) weight, in float64 Python."""
    rows = []
    for d_row, t_row in zip(distances.tolist(), tokens.tolist()):
        d0 = min(d_row)
        w = [math.exp(-(d - d0) / temperature) for d in d_row]
        z = sum(w)
        row = defaultdict(float)
        for wi, ti in zip(w, t_row):
            row[ti] += wi / z
        rows.append(dict(row))
    return rows


def as_dicts(ids, probs):
    return [{int(i): float(p) for i, p in zip(ir, pr) if p > 0} for ir, pr in zip(ids, probs)]


def check_against_reference(distances, tokens, temperature):
    ids, probs = knn_distribution(distances, tokens, temperature)
    assert ids.dtype == torch.int64 and ids.shape == probs.shape
    assert ids.shape[1] <= tokens.shape[1]
    for row in ids:  # each id once per row, padding included
        assert len(set(row.tolist())) == len(row)
    torch.testing.assert_close(probs.sum(1).double(), torch.ones(len(ids), dtype=torch.float64))
    for got, want in zip(as_dicts(ids, probs), reference(distances, tokens, temperature)):
        want = {t: p for t, p in want.items() if p > 0}
        assert got.keys() == want.keys()
        for t in want:
            assert got[t] == pytest.approx(want[t], rel=1e-5, abs=1e-9)
    return ids, probs


def test_random_rows_with_many_duplicates():
    g = torch.Generator().manual_seed(0)
    distances = torch.rand(50, 32, generator=g) * 20
    tokens = torch.randint(0, 6, (50, 32), generator=g)  # lots of repeated tokens
    check_against_reference(distances, tokens, 3.0)


def test_ties_and_padding_probability_exactly_zero():
    distances = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 9.0]])
    tokens = torch.tensor([[4, 4, 4, 4], [1, 2, 3, 2]])
    ids, probs = check_against_reference(distances, tokens, 1.0)
    assert probs[0, 0] == 1 and (probs[0, 1:] == 0).all()


def test_huge_distances_stay_finite():
    distances = torch.tensor([[1e30, 2e30, 3e30], [0.0, 1e30, float("inf")]])
    tokens = torch.tensor([[1, 2, 3], [5, 6, 7]])
    ids, probs = knn_distribution(distances, tokens, 1.0)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    assert ids[1, 0] == 5 and probs[1, 0] == 1


def test_temperature_limits():
    distances = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    tokens = torch.tensor([[9, 8, 8, 8]])
    ids, probs = knn_distribution(distances, tokens, 1e-4)  # nearest neighbour only
    assert ids[0, 0] == 9 and probs[0, 0] == pytest.approx(1.0)
    ids, probs = knn_distribution(distances, tokens, 1e6)  # plain vote counts
    assert dict(zip(ids[0].tolist(), probs[0].tolist()))[8] == pytest.approx(0.75, rel=1e-4)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        knn_distribution(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), temperature)


def test_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="shape"):
        knn_distribution(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="empty"):
        knn_distribution(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), 1.0)


def test_token_logprobs_match_the_distribution():
    g = torch.Generator().manual_seed(1)
    distances, tokens = torch.rand(40, 16, generator=g) * 5, torch.randint(0, 8, (40, 16), generator=g)
    targets = torch.randint(0, 10, (40,), generator=g)  # 8, 9 never retrieved -> -inf
    got = knn_token_logprobs(distances, tokens, targets, 2.0)
    for lp, want, t in zip(got, reference(distances, tokens, 2.0), targets.tolist()):
        expected = math.log(want[t]) if t in want else -math.inf
        assert lp == pytest.approx(expected, rel=1e-5)


def test_top_m_truncates_and_pads_with_unique_ids():
    ids, probs = knn_distribution(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3, 3, 0]]), 1.0)
    wide_ids, wide_probs = top_m(ids, probs, 5)
    assert len(set(wide_ids[0].tolist())) == 5 and (wide_probs[0, 2:] == 0).all()
    narrow_ids, narrow_probs = top_m(ids, probs, 1)
    assert narrow_ids.tolist() == [[3]]


def test_nan_and_negative_tokens_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        knn_distribution(torch.tensor([[0.0, float("nan")]]), torch.tensor([[1, 2]]), 1.0)
    with pytest.raises(ValueError, match="negative"):
        knn_distribution(torch.tensor([[0.0, 1.0]]), torch.tensor([[1, -1]]), 1.0)
    with pytest.raises(ValueError, match="all inf"):
        knn_distribution(torch.tensor([[float("inf")] * 2]), torch.tensor([[1, 2]]), 1.0)
    with pytest.raises(ValueError, match="distances contain -inf"):  # was NaN probabilities
        knn_distribution(torch.tensor([[0.0, -float("inf")]]), torch.tensor([[1, 2]]), 1.0)
    with pytest.raises(ValueError, match="distances contain -inf"):
        knn_token_logprobs(torch.tensor([[-float("inf"), 1.0]]), torch.tensor([[1, 2]]), [1], 1.0)


def test_k_zero_and_bad_targets_are_refused():
    with pytest.raises(ValueError, match="k >= 1"):
        knn_distribution(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="targets"):
        knn_token_logprobs(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), [1, 2, 3], 1.0)
    with pytest.raises(ValueError, match="m=0"):
        top_m(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3) / 3, 0)


def test_huge_distances_in_token_logprobs_and_many_rows_at_once():
    distances = torch.tensor([[1e30, 1e30, 3e30], [2.0, 1e30, 1e30]])
    tokens = torch.tensor([[1, 2, 1], [4, 4, 5]])
    got = knn_token_logprobs(distances, tokens, [1, 4], 1.0)
    np.testing.assert_allclose(got, [math.log(0.5), 0.0], atol=1e-6)
    ids, probs = knn_distribution(distances, tokens, 1.0)
    assert ids.shape == (2, 2) and ids[0].sort().values.tolist() == [1, 2]
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert ids[1, 0] == 4


@pytest.mark.parametrize("high", [50, 2**40])  # int32 keys, and values too big for them
def test_sort_rows_is_a_stable_sort(high):
    from memdec_helpers.core.knn import sort_rows

    values = torch.randint(0, 5, (40, 33), generator=torch.Generator().manual_seed(1)) * (high // 5)
    got_values, got_columns = sort_rows(values)
    want = np.argsort(values.numpy(), axis=1, kind="stable")
    np.testing.assert_array_equal(got_columns.numpy(), want)
    np.testing.assert_array_equal(got_values.numpy(), np.take_along_axis(values.numpy(), want, 1))


def test_missing_ids_are_the_smallest_absent_ones():
    from memdec_helpers.core.knn import _missing_ids

    tokens = torch.randint(0, 12, (30, 8), generator=torch.Generator().manual_seed(2))
    got = _missing_ids(tokens, 5)
    for row, ids in zip(tokens.tolist(), got.tolist()):
        assert ids == [i for i in range(100) if i not in row][:5]
