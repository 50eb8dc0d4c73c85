"""Evaluation: sliding-window log-probs vs full forward passes; mixing vs probability space."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from memdec_helpers.core.mixing import mix_logprobs, perplexity, sweep
from memdec_helpers.runtime.scoring import token_logprobs
from memdec_helpers.stages.logprobs import cached_token_logprobs
from memdec_helpers.core.windows import plan_windows, scored_mask


def full_forward_logprobs(model, tokens):
    ids = torch.as_tensor(tokens, dtype=torch.long)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    return logp.gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()


def per_window_reference(model, tokens, length, stride):
    """Brute force: each position's log-prob from one forward pass over the window that scores it."""
    plan = plan_windows(len(tokens), length, stride)
    mask = scored_mask(plan.first_scored, plan.length).numpy()
    expected = np.full(len(tokens) - 1, np.nan)
    for start, row in zip(plan.starts, mask):
        window = full_forward_logprobs(model, tokens[start:start + plan.length])
        assert np.isnan(expected[start + np.flatnonzero(row)]).all()  # nobody scored it before
        expected[start + np.flatnonzero(row)] = window[row]
    assert not np.isnan(expected).any()  # every position scored
    return expected


def test_short_sequence_equals_one_forward_pass(gpt2, token_ids):
    tokens = token_ids[:40]
    got = token_logprobs(gpt2, tokens, context_length=64, stride=32)
    np.testing.assert_allclose(got, full_forward_logprobs(gpt2, tokens), atol=1e-5)


@pytest.mark.parametrize("stride", [16, 32, 31])
def test_long_sequence_equals_per_position_reference(gpt2, token_ids, stride):
    """Every position is scored once, from exactly the context its window gives it."""
    got = token_logprobs(gpt2, token_ids, context_length=32, stride=stride, batch_size=5)
    np.testing.assert_allclose(got, per_window_reference(gpt2, token_ids, 32, stride), atol=1e-5)


def test_stride_barely_moves_the_perplexity(gpt2, token_ids):
    a = perplexity(token_logprobs(gpt2, token_ids, 64, 64))  # stride L
    b = perplexity(token_logprobs(gpt2, token_ids, 64, 32))  # stride L/2
    assert a != b and abs(a - b) / a < 0.02


def test_inputs_are_checked_before_any_work(gpt2, token_ids):
    with pytest.raises(ValueError, match="vocabulary"):
        token_logprobs(gpt2, np.array([1, 2, 500]), 16, 8)
    with pytest.raises(ValueError, match="shorter"):
        token_logprobs(gpt2, np.array([3]), 16, 8)
    with pytest.raises(ValueError, match="stride"):
        token_logprobs(gpt2, token_ids, 16, 0)
    with pytest.raises(ValueError, match="1-D"):
        token_logprobs(gpt2, token_ids.reshape(2, -1), 16, 8)


def test_torch_tokens_and_batch_size_give_the_same_result(gpt2, token_ids):
    a = token_logprobs(gpt2, torch.as_tensor(token_ids), 32, 16, batch_size=1)
    b = token_logprobs(gpt2, list(token_ids), 32, 16, batch_size=64)
    assert a.dtype == np.float32 and a.shape == (len(token_ids) - 1,)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_float32_upcast_in_chunks_changes_nothing(gpt2, token_ids, monkeypatch):
    """The log-softmax is done a few windows at a time (bounded memory); same numbers."""
    import memdec_helpers.runtime.scoring as evaluate

    monkeypatch.setattr(evaluate, "FLOAT32_CHUNK", 2 * 31 * gpt2.config.vocab_size)  # 2 windows
    got = token_logprobs(gpt2, token_ids[:100], 32, 16, batch_size=5)  # chunks of 2, 2, 1
    np.testing.assert_allclose(got, per_window_reference(gpt2, token_ids[:100], 32, 16), atol=1e-5)


def test_context_longer_than_model_is_refused(gpt2, token_ids):
    with pytest.raises(ValueError, match="context_length"):
        token_logprobs(gpt2, token_ids, context_length=128, stride=64)


def test_nan_logits_are_refused(gpt2, token_ids):
    with torch.no_grad():
        gpt2.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*NaN"):  # names the model
        token_logprobs(gpt2, token_ids[:20], 16, 8)


def test_mix_matches_probability_space():
    rng = np.random.default_rng(0)
    base, mem = np.log(rng.uniform(1e-6, 1, 50)), np.log(rng.uniform(1e-6, 1, 50))
    for alpha in (0.0, 0.3, 0.8, 1.0):
        expected = np.log(alpha * np.exp(mem) + (1 - alpha) * np.exp(base))
        np.testing.assert_allclose(mix_logprobs(base, mem, alpha), expected, rtol=1e-12)
    np.testing.assert_array_equal(mix_logprobs(base, mem, 0.0), base)
    np.testing.assert_array_equal(mix_logprobs(base, mem, 1.0), mem)


def test_mix_handles_minus_inf_and_extremes_and_torch():
    base = np.array([-1.0, -2000.0, -np.inf])
    mem = np.array([-np.inf, -2001.0, -3.0])
    out = mix_logprobs(base, mem, 0.25)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], -1.0 + np.log(0.75))
    np.testing.assert_allclose(out[1], np.logaddexp(-2001 + np.log(0.25), -2000 + np.log(0.75)))
    t = mix_logprobs(torch.tensor(base), torch.tensor(mem), 0.25)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), out)
    mixed = mix_logprobs(base, torch.tensor(mem, dtype=torch.float32), 0.25)  # numpy + torch
    assert isinstance(mixed, torch.Tensor) and mixed.dtype == torch.float32
    np.testing.assert_allclose(mixed.numpy(), out, rtol=1e-6)
    both_zero = mix_logprobs(np.array([-np.inf]), np.array([-np.inf]), 0.5)
    assert both_zero[0] == -np.inf
    np.testing.assert_array_equal(mix_logprobs(base, mem, 1.0), mem)  # -inf kept exactly


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_mix_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        mix_logprobs(np.zeros(3), np.zeros(3), alpha)


def test_mix_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        mix_logprobs(np.zeros(3), np.zeros(4), 0.5)


def test_perplexity_and_empty():
    lp = np.log([0.5, 0.25])
    assert perplexity(lp) == pytest.approx(np.exp(-lp.mean()))
    with pytest.raises(ValueError, match="empty"):
        perplexity([])
    assert perplexity([0.0, -np.inf]) == np.inf  # probability 0 is allowed: infinite perplexity
    for bad in ([0.5, -1.0], [-np.log(0.5)], [np.nan, -1.0]):  # p, -log p, NaN: not log p
        with pytest.raises(ValueError, match="token_logprobs"):
            perplexity(np.array(bad))


def test_sweep_chooses_the_brute_force_best_weight():
    rng = np.random.default_rng(1)
    base, mem = np.log(rng.uniform(0.01, 0.5, 200)), np.log(rng.uniform(0.01, 0.9, 200))
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    s = sweep(base, mem, grid)
    brute = [perplexity(np.log(w * np.exp(mem) + (1 - w) * np.exp(base))) for w in grid]
    assert s["best"] == grid[int(np.argmin(brute))]
    assert s["ppl"] == pytest.approx(brute, rel=1e-9)


def test_sweep_refuses_an_empty_grid():
    with pytest.raises(ValueError, match="grid"):
        sweep(np.zeros(3), np.zeros(3), [])


def test_cache_is_reused_and_rebuilt_when_tokens_change(profile, gpt2, token_ids):
    profile = replace(profile, context_length=32, stride=16)
    first = cached_token_logprobs(profile, "m", gpt2, token_ids, "val", "model-a", progress=False)
    path = next(Path(profile.artifacts_dir).rglob("logprobs.npy"))
    mtime = path.stat().st_mtime_ns
    again = cached_token_logprobs(profile, "m", gpt2, token_ids, "val", "model-a", progress=False)
    np.testing.assert_array_equal(first, again)
    assert path.stat().st_mtime_ns == mtime  # reused, not recomputed
    with torch.no_grad():
        gpt2.lm_head.weight.mul_(2)  # a changed model with the same id is not reused (it was)
    changed = cached_token_logprobs(profile, "m", gpt2, token_ids, "val", "model-a", progress=False)
    np.testing.assert_allclose(changed, token_logprobs(gpt2, token_ids, 32, 16), atol=1e-6)
    assert not np.allclose(changed, first)
    other = cached_token_logprobs(profile, "m", gpt2, token_ids[:100], "val", "model-a", progress=False)
    np.testing.assert_allclose(other, token_logprobs(gpt2, token_ids[:100], 32, 16), atol=1e-6)
    profile = replace(profile, stride=8)  # a window knob changed: recomputed
    strided = cached_token_logprobs(profile, "m", gpt2, token_ids[:100], "val", "model-a", progress=False)
    np.testing.assert_allclose(strided, token_logprobs(gpt2, token_ids[:100], 32, 8), atol=1e-6)
    assert not np.array_equal(strided, other)
    with pytest.raises(ValueError, match="name"):
        cached_token_logprobs(profile, "../x", gpt2, token_ids, "val", "model-a", progress=False)
