"""Interpolated decoding: alpha 0 / 1 equal each model's own greedy generate; cache is exact."""
import pytest
import torch

from conftest import make_gpt2
from memdec_helpers.evaluate import mix_logprobs
from memdec_helpers.generate import filter_logits, generate

PROMPT = torch.tensor([[5, 17, 3, 42, 8], [1, 2, 3, 4, 5]])


@pytest.fixture
def models():
    return make_gpt2(seed=0), make_gpt2(n_layer=1, seed=1)


def hf_greedy(model, n):
    return model.generate(PROMPT, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                          pad_token_id=0, eos_token_id=None)


def test_alpha_zero_greedy_equals_base_generate(models):
    base, mem = models
    assert torch.equal(generate(base, mem, PROMPT, 12, alpha=0.0), hf_greedy(base, 12))


def test_alpha_one_greedy_equals_memdec_generate(models):
    base, mem = models
    assert torch.equal(generate(base, mem, PROMPT, 12, alpha=1.0), hf_greedy(mem, 12))


def test_cached_steps_equal_full_recomputation(models):
    base, mem = models
    ids, steps = generate(base, mem, PROMPT, 8, alpha=0.3, return_logprobs=True)
    for t in range(8):
        prefix = ids[:, : PROMPT.shape[1] + t]
        with torch.no_grad():
            b = torch.log_softmax(base(prefix).logits[:, -1], -1)
            m = torch.log_softmax(mem(prefix).logits[:, -1], -1)
        torch.testing.assert_close(steps[:, t], mix_logprobs(b, m, 0.3), atol=1e-5, rtol=1e-5)


def test_top_k_one_sampling_is_greedy_and_seeded_sampling_repeats(models):
    base, mem = models
    greedy = generate(base, mem, PROMPT, 10, alpha=0.5)
    assert torch.equal(generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, top_k=1, seed=3), greedy)
    a = generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, seed=7)
    b = generate(base, mem, PROMPT, 10, alpha=0.5, do_sample=True, seed=7)
    assert torch.equal(a, b)


def test_top_p_keeps_the_smallest_nucleus():
    logprobs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logprobs, 1.0, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]


def test_errors(models):
    base, mem = models
    with pytest.raises(ValueError, match="alpha"):
        generate(base, mem, PROMPT, 2, alpha=1.2)
    with pytest.raises(ValueError, match="same tokenizer"):
        generate(base, make_gpt2(vocab=50), PROMPT, 2, alpha=0.5)
