"""Interpolated decoding: alpha 0 / 1 equal each model's own greedy generate; the cached steps
equal full forward passes; sampling is seeded and follows the filtered mixed distribution."""
import numpy as np
import pytest
import torch

from conftest import make_gpt2
from memdec_helpers.runtime.generate import (filter_logits, generate, median_ms_per_token,
                                             ms_per_token_rounds)

PROMPT = torch.tensor([[5, 17, 3, 42, 8], [1, 2, 3, 4, 5]])


@pytest.fixture
def models():
    return make_gpt2(seed=0), make_gpt2(n_layer=1, seed=1)


def hf_greedy(model, n):
    return model.generate(PROMPT, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                          pad_token_id=0, eos_token_id=None)


def full_forward_mix(base, mem, prefix, alpha):
    """Mixed next-token probabilities of `prefix` [B, T] from no-cache forward passes, float64."""
    with torch.no_grad():
        p_base = torch.softmax(base(prefix).logits[:, -1].double(), -1)
        p_mem = torch.softmax(mem(prefix).logits[:, -1].double(), -1)
    return alpha * p_mem + (1 - alpha) * p_base  # [B, V], probability space


def test_alpha_zero_or_no_memdec_greedy_equals_base_generate(models):
    base, mem = models
    want = hf_greedy(base, 12)
    assert torch.equal(generate(base, mem, PROMPT, 12, alpha=0.0), want)
    assert torch.equal(generate(base, mem, PROMPT, 12, alpha=None), want)
    assert torch.equal(generate(base, None, PROMPT, 12), want)


def test_alpha_one_greedy_equals_memdec_generate(models):
    base, mem = models
    want = hf_greedy(mem, 12)
    assert not torch.equal(want, hf_greedy(base, 12))  # the two models really disagree
    assert torch.equal(generate(base, mem, PROMPT, 12, alpha=1.0), want)


def test_cached_steps_equal_full_recomputation(models):
    base, mem = models
    ids, steps = generate(base, mem, PROMPT, 8, alpha=0.3, return_logprobs=True)
    assert steps.shape == (2, 8, base.config.vocab_size)
    for t in range(8):
        want = full_forward_mix(base, mem, ids[:, : PROMPT.shape[1] + t], 0.3)
        torch.testing.assert_close(steps[:, t].double().exp(), want, atol=1e-6, rtol=1e-5)
        assert torch.equal(ids[:, PROMPT.shape[1] + t], want.argmax(-1))  # greedy on the mixture


def test_top_k_one_or_tiny_top_p_sampling_is_greedy(models):
    base, mem = models
    greedy = generate(base, mem, PROMPT, 10, alpha=0.5)
    assert torch.equal(generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, top_k=1, seed=3), greedy)
    assert torch.equal(generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, top_p=1e-6, seed=3), greedy)


def test_seeded_sampling_repeats_and_seeds_differ(models):
    base, mem = models
    a = generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, seed=7)
    b = generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, seed=7)
    c = generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_samples_follow_the_filtered_mixture(models):
    """4000 one-token samples of one prompt vs softmax(top-5 of log p_mix / 0.5) from full forward
    passes: total variation < 0.05 (expected ~0.01 for this sample size)."""
    base, mem = models
    prompt = PROMPT[:1].repeat(4000, 1)
    out = generate(base, mem, prompt, 1, alpha=0.4, do_sample=True, sampling_temperature=0.5,
                   top_k=5, seed=0)
    counts = np.bincount(out[:, -1].numpy(), minlength=base.config.vocab_size) / len(prompt)
    logits = np.log(full_forward_mix(base, mem, PROMPT[:1], 0.4)[0].numpy()) / 0.5
    top5 = np.argsort(-logits)[:5]
    want = np.zeros_like(logits)
    want[top5] = np.exp(logits[top5] - logits[top5].max())
    want /= want.sum()
    assert counts[np.setdiff1d(np.arange(len(want)), top5)].sum() == 0
    assert 0.5 * np.abs(counts - want).sum() < 0.05


def test_filter_logits_against_numpy():
    g = torch.Generator().manual_seed(0)
    logprobs = torch.log_softmax(torch.randn(3, 20, generator=g), -1)
    kept = torch.isfinite(filter_logits(logprobs, 1.0, 4, 1.0)).numpy()
    want = np.zeros_like(kept)
    np.put_along_axis(want, np.argsort(-logprobs.numpy(), 1)[:, :4], True, 1)
    assert (kept == want).all()
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    kept = torch.isfinite(filter_logits(probs.log(), 1.0, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False], [False, False, True, True]]
    scaled = filter_logits(logprobs, 2.0, 0, 1.0)
    torch.testing.assert_close(scaled, logprobs / 2)


def test_models_in_train_mode_decode_without_dropout(models):
    base, mem = models
    want = generate(base, mem, PROMPT, 6, alpha=0.5)
    base.train(), mem.train()
    assert torch.equal(generate(base, mem, PROMPT, 6, alpha=0.5), want)
    assert base.training and mem.training  # modes restored


def test_errors(models):
    base, mem = models
    for alpha in (-0.1, 1.2):
        with pytest.raises(ValueError, match="alpha"):
            generate(base, mem, PROMPT, 2, alpha=alpha)
    with pytest.raises(ValueError, match="same tokenizer"):
        generate(base, make_gpt2(vocab=50), PROMPT, 2, alpha=0.5)
    with pytest.raises(ValueError, match="positions"):
        generate(base, mem, PROMPT, 64, alpha=0.5)
    with pytest.raises(ValueError, match="sampling_temperature"):
        generate(base, mem, PROMPT, 2, do_sample=True, sampling_temperature=0.0)
    with pytest.raises(ValueError, match="memdec must be"):
        generate(base, "not a model", PROMPT, 2)
    with pytest.raises(ValueError, match="top_p"):
        generate(base, mem, PROMPT, 2, do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="input_ids"):
        generate(base, mem, PROMPT + 200, 2)
    with pytest.raises(ValueError, match="input_ids"):
        generate(base, mem, PROMPT[:, :0], 2)


def test_median_ms_per_token_alternates_runs_and_ignores_a_burst():
    now, calls = [0.0], []

    def run(name: str, seconds_per_token: float):
        def go(n: int) -> None:
            calls.append((name, n))
            burst = 5.0 if len(calls) == 4 else 0.0  # one slow call, as under load
            now[0] += n * seconds_per_token + burst
        return go

    runs = {"base": run("base", 0.001), "base + MemDec": run("mem", 0.002)}
    cost = median_ms_per_token(runs, new_tokens=10, repeats=3, clock=lambda: now[0])
    assert calls[:2] == [("base", 4), ("mem", 4)]  # warm-up first
    assert [c[0] for c in calls[2:]] == ["base", "mem"] * 3  # interleaved rounds
    assert cost == pytest.approx({"base": 1.0, "base + MemDec": 2.0})
    with pytest.raises(ValueError, match="repeats=0"):
        median_ms_per_token(runs, 10, repeats=0)


def test_ms_per_token_rounds_keeps_every_round():
    now = [0.0]

    def run(seconds_per_token: float):
        def go(n: int) -> None:
            now[0] += n * seconds_per_token
        return go

    rounds = ms_per_token_rounds({"a": run(0.001), "b": run(0.003)}, 10, repeats=4,
                                 clock=lambda: now[0])
    assert list(rounds) == ["a", "b"]
    assert rounds["a"] == pytest.approx([1.0] * 4) and rounds["b"] == pytest.approx([3.0] * 4)
