"""The sliding-window plan: every position scored exactly once, full windows, enough context."""
import numpy as np
import pytest
import torch

from memdec_helpers.core.windows import gather_windows, plan_windows, scored_mask, window_batches

CASES = [(n, l, s) for n in (2, 3, 7, 16, 17, 64, 65, 100, 301) for l in (2, 4, 16, 64)
         for s in sorted({1, max(1, l // 2), l - 1, l} - {0})]


def scored_positions(plan):
    """Brute force: the global positions each window scores, window by window."""
    out = []
    for start, first in zip(plan.starts, plan.first_scored):
        out.extend(range(start + first, start + plan.length - 1))
    return np.array(out)


@pytest.mark.parametrize("n,length,stride", CASES)
def test_every_position_is_scored_exactly_once(n, length, stride):
    plan = plan_windows(n, length, stride)
    np.testing.assert_array_equal(scored_positions(plan), np.arange(n - 1))
    assert plan.length == min(n, length)
    assert plan.starts[0] == 0 and plan.starts[-1] == n - plan.length  # windows inside [0, N)
    assert (np.diff(plan.starts) > 0).all()


@pytest.mark.parametrize("n,length,stride", [c for c in CASES if c[0] >= c[1] and c[2] < c[1]])
def test_starts_follow_the_stride_and_context_is_at_least_l_minus_s(n, length, stride):
    plan = plan_windows(n, length, stride)
    expected = list(range(0, n - length, stride)) + [n - length]
    np.testing.assert_array_equal(plan.starts, sorted(set(expected)))
    later = plan.first_scored[1:] + 1  # tokens of context of each later window's first position
    assert (later >= length - stride).all()


def test_stride_equal_to_context_still_scores_window_boundaries():
    plan = plan_windows(10, 4, 4)
    np.testing.assert_array_equal(scored_positions(plan), np.arange(9))


def test_batches_gather_windows_and_positions():
    tokens = np.arange(100, 150)
    plan = plan_windows(len(tokens), 8, 3)
    seen = []
    for ids, scored, positions in window_batches(tokens, 8, 3, batch_size=4):
        for row_ids, row_pos in zip(ids.numpy(), positions.numpy()):
            np.testing.assert_array_equal(row_ids, tokens[row_pos[0]: row_pos[0] + 8])
        seen.append(positions[scored].numpy())
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(49))
    assert sum(1 for _ in window_batches(tokens, 8, 3, 4)) == -(-plan.num_windows // 4)


def test_start_window_resumes_the_same_plan():
    tokens = np.arange(60)
    full = [p[s].numpy() for _, s, p in window_batches(tokens, 8, 4, batch_size=2)]
    tail = [p[s].numpy() for _, s, p in window_batches(tokens, 8, 4, batch_size=2, start_window=4)]
    np.testing.assert_array_equal(np.concatenate(full[2:]), np.concatenate(tail))


def test_gather_and_mask_match_slicing():
    tokens = torch.arange(20)
    got = gather_windows(tokens, np.array([0, 5, 12]), 8)
    np.testing.assert_array_equal(got.numpy(), [np.arange(s, s + 8) for s in (0, 5, 12)])
    mask = scored_mask(np.array([0, 3]), 5).numpy()
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [0, 0, 0, 1]])


@pytest.mark.parametrize("args,match", [
    ((1, 8, 4), "shorter"), ((0, 8, 4), "shorter"), ((10, 8, 0), "stride"),
    ((10, 8, 9), "stride"), ((10, 1, 1), "context_length"),
])
def test_bad_plans_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(*args)


def test_bad_batches_are_refused_before_any_work():
    with pytest.raises(ValueError, match="batch_size"):
        window_batches(np.arange(10), 4, 2, batch_size=0)
    with pytest.raises(ValueError, match="1-D"):
        window_batches(np.zeros((2, 5), dtype=int), 4, 2, batch_size=1)
    with pytest.raises(ValueError, match="start_window"):
        window_batches(np.arange(10), 4, 2, batch_size=1, start_window=99)
