"""memdec_loss against a dense F.kl_div + cross-entropy reference (values and gradients), and the
Memory Decoder builders."""
import dataclasses
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import make_gpt2
from memdec_helpers.core.knn import knn_distribution
from memdec_helpers.core.loss import memdec_loss
from memdec_helpers.runtime.decoder import build_memory_decoder, check_same_vocabulary

B, T, V, K = 2, 5, 11, 6


def sparse_targets(seed=0):
    """Sparse targets [B, T, m] from knn_distribution; rows with < K distinct tokens are padded."""
    g = torch.Generator().manual_seed(seed)
    d, tok = torch.rand(B * T, K, generator=g) * 3, torch.randint(0, V, (B * T, K), generator=g)
    ids, probs = knn_distribution(d, tok, 1.0)
    return ids.view(B, T, -1), probs.float().view(B, T, -1)


def dense_reference(logits, ids, probs, labels, beta):
    """The same loss with a dense [B, T, V] target (allowed only here, in the test)."""
    dense = torch.zeros(B, T, V).scatter_add_(-1, ids, probs)
    keep = labels != -100
    log_q = torch.log_softmax(logits, -1)
    kl = F.kl_div(log_q[keep], dense[keep], reduction="batchmean")  # sum / positions kept
    ce = F.cross_entropy(logits[keep], labels[keep])
    return beta * kl + (1 - beta) * ce, kl, ce


def random_inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 1] = labels[1, 4] = -100
    logits = torch.randn(B, T, V, generator=g, requires_grad=True)
    return logits, labels


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_loss_and_gradient_equal_the_dense_reference(beta):
    ids, probs = sparse_targets()
    assert (probs == 0).any()  # padding entries are exercised
    logits, labels = random_inputs()
    ref_logits = logits.detach().clone().requires_grad_(True)
    got = memdec_loss(logits, ids, probs, labels, beta)
    want = dense_reference(ref_logits, ids, probs, labels, beta)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    got[0].backward()
    want[0].backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-7)
    assert (logits.grad[0, 1] == 0).all() and (logits.grad[1, 4] == 0).all()  # ignored: no gradient


def test_beta_zero_is_cross_entropy_and_beta_one_is_kl():
    ids, probs = sparse_targets(4)
    logits, labels = random_inputs(5)
    loss0, kl, ce = memdec_loss(logits, ids, probs, labels, 0.0)
    loss1, _, _ = memdec_loss(logits, ids, probs, labels, 1.0)
    torch.testing.assert_close(loss0, ce)
    torch.testing.assert_close(loss1, kl)
    assert not torch.isclose(kl, ce)  # the two terms really differ, so the checks can fail


def test_kl_term_alone_has_the_reference_gradient():
    ids, probs = sparse_targets(1)
    logits, labels = random_inputs(6)
    ref = logits.detach().clone().requires_grad_(True)
    memdec_loss(logits, ids, probs, labels, 0.5)[1].backward()
    dense_reference(ref, ids, probs, labels, 0.5)[1].backward()
    kept = labels != -100
    assert (logits.grad[kept].abs().sum(-1) > 0).all()  # every kept position gets a KL gradient
    torch.testing.assert_close(logits.grad, ref.grad, rtol=1e-5, atol=1e-7)


def test_ignored_positions_are_excluded():
    """The loss over a batch with ignored labels = the loss over the kept positions alone."""
    ids, probs = sparse_targets(2)
    logits, labels = random_inputs(7)
    keep = labels != -100
    full = memdec_loss(logits, ids, probs, labels, 0.5)
    kept = memdec_loss(logits[keep][None], ids[keep][None], probs[keep][None], labels[keep][None], 0.5)
    for a, b in zip(full, kept):
        torch.testing.assert_close(a, b)


def test_padding_entries_contribute_nothing():
    """Changing the ids of zero-probability entries (even to invalid ids) changes nothing."""
    ids, probs = sparse_targets(3)
    pad = probs == 0
    assert pad.any()
    logits, labels = random_inputs(8)
    want = memdec_loss(logits, ids, probs, labels, 1.0)[0]
    for fill in (0, V - 1, -1, V + 7):
        got = memdec_loss(logits, ids.masked_fill(pad, fill), probs, labels, 1.0)[0]
        torch.testing.assert_close(got, want)
    extra_pad_ids = torch.cat([ids, torch.full((B, T, 3), -1)], -1)  # more padding columns
    extra_pad_probs = torch.cat([probs, torch.zeros(B, T, 3)], -1)
    torch.testing.assert_close(memdec_loss(logits, extra_pad_ids, extra_pad_probs, labels, 1.0)[0], want)


def test_errors():
    ids, probs = sparse_targets()
    logits, labels = torch.randn(B, T, V), torch.zeros(B, T, dtype=torch.long)
    for beta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            memdec_loss(logits, ids, probs, labels, beta)
    with pytest.raises(ValueError, match="logits"):
        memdec_loss(logits[0], ids, probs, labels, 0.5)
    with pytest.raises(ValueError, match="target_ids"):
        memdec_loss(logits, ids[:, :2], probs, labels, 0.5)
    with pytest.raises(ValueError, match="target_ids"):
        memdec_loss(logits, ids, probs[..., :-1], labels, 0.5)
    with pytest.raises(ValueError, match="labels"):
        memdec_loss(logits, ids, probs, labels[:, :3], 0.5)
    with pytest.raises(ValueError, match="ignored"):
        memdec_loss(logits, ids, probs, torch.full((B, T), -100), 0.5)
    with pytest.raises(ValueError, match="target_ids with probability"):
        memdec_loss(logits, ids.masked_fill(probs > 0, V), probs, labels, 0.5)
    with pytest.raises(ValueError, match="labels must be in"):
        memdec_loss(logits, ids, probs, labels + V, 0.5)


@pytest.mark.parametrize("problem", ["nan", "negative", "unnormalised"])
def test_bad_target_probabilities_are_named(problem):
    """They used to give a NaN or a silently wrong loss."""
    ids, probs = sparse_targets()
    logits, labels = random_inputs()
    bad = probs.clone()
    if problem == "nan":
        bad[1, 2, 0] = float("nan")
    elif problem == "negative":
        bad[0, 3, :2] = torch.tensor([1.5, -0.5]) * bad[0, 3, :2].sum()  # still sums to 1
    else:
        bad[1, 0] *= 0.5
    with pytest.raises(ValueError, match="target_probs must"):
        memdec_loss(logits, ids, bad, labels, 0.5)


def test_targets_of_ignored_positions_need_not_sum_to_one():
    ids, probs = sparse_targets()
    logits, labels = random_inputs()  # labels[0, 1] is ignored
    probs = probs.clone()
    probs[0, 1] = 0.0
    memdec_loss(logits, ids, probs, labels, 0.5)


def test_build_from_scratch(profile):
    base = make_gpt2(n_positions=64)
    profile = replace(profile, memdec_init="scratch", context_length=32, stride=16)
    state = torch.get_rng_state()
    a = build_memory_decoder(profile, base_model=base)
    assert torch.equal(torch.get_rng_state(), state)  # seeded without touching the global RNG
    b = build_memory_decoder(profile, base_model=base)
    alone = build_memory_decoder(profile, vocab_size=base.config.vocab_size)
    assert alone.config.vocab_size == base.config.vocab_size and alone.config.eos_token_id is None
    c = a.config
    assert (c.vocab_size, c.n_layer, c.n_embd, c.n_head) == (
        base.config.vocab_size, profile.memdec_layers, profile.memdec_dim, profile.memdec_heads)
    assert c.n_positions >= profile.context_length and c.eos_token_id == base.config.eos_token_id
    assert a.training and next(a.parameters()).dtype == torch.float32
    torch.testing.assert_close(a.transformer.h[0].attn.c_attn.weight,
                               b.transformer.h[0].attn.c_attn.weight)  # same seed, same init


def test_build_copy_of_base_and_from_folder(profile, tmp_path):
    base = make_gpt2()
    profile = replace(profile, memdec_init="base:0", context_length=32, stride=16)
    copied = build_memory_decoder(profile, base_model=base)
    assert copied is not base
    torch.testing.assert_close(copied.lm_head.weight, base.lm_head.weight)
    with torch.no_grad():
        copied.lm_head.weight.add_(1.0)
    assert not torch.equal(copied.lm_head.weight, base.lm_head.weight)  # a copy, not a view
    base.save_pretrained(tmp_path / "saved")
    profile = replace(profile, memdec_init=str(tmp_path / "saved"))
    loaded = build_memory_decoder(profile)
    torch.testing.assert_close(loaded.lm_head.weight, base.lm_head.weight)


def test_build_errors(profile, tmp_path):
    base = make_gpt2(n_positions=64)
    profile = replace(profile, memdec_init="base:0")
    with pytest.raises(ValueError, match="base_model="):
        build_memory_decoder(profile)
    profile = replace(profile, memdec_init="base:0", context_length=128)
    with pytest.raises(ValueError, match="positions"):
        build_memory_decoder(profile, base_model=base)
    profile = replace(profile, memdec_init=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="save_pretrained"):
        build_memory_decoder(profile)
    profile = replace(profile, memdec_init="scratch", context_length=32, stride=16)
    with pytest.raises(ValueError, match="vocab_size"):
        build_memory_decoder(profile)
    with pytest.raises(ValueError, match="same tokenizer"):
        build_memory_decoder(profile, base_model=base, vocab_size=50)


def test_check_same_vocabulary():
    mem, base = make_gpt2(n_layer=1), make_gpt2()
    check_same_vocabulary(mem, base)
    with pytest.raises(ValueError, match="same tokenizer"):
        check_same_vocabulary(mem, make_gpt2(vocab=50))
    vocab = {f"t{i}": i for i in range(97)}
    same = SimpleNamespace(get_vocab=lambda: dict(vocab))
    check_same_vocabulary(mem, base, same, SimpleNamespace(get_vocab=lambda: dict(vocab)))
    swapped = SimpleNamespace(get_vocab=lambda: {**vocab, "t1": 2, "t2": 1})
    with pytest.raises(ValueError, match="tokenizers differ"):
        check_same_vocabulary(mem, base, same, swapped)
    with pytest.raises(ValueError, match="both"):
        check_same_vocabulary(mem, base, same, None)


def test_copy_of_base_keeps_its_first_blocks(profile, tmp_path):
    base = make_gpt2(n_layer=3)
    profile = dataclasses.replace(profile, memdec_init="base:0", memdec_layers=1, context_length=32,
                                  stride=16)
    small = build_memory_decoder(profile, base_model=base).eval()
    assert small.config.n_layer == 1 and len(small.transformer.h) == 1 and len(base.transformer.h) == 3
    ids = torch.randint(0, base.config.vocab_size, (2, 16))
    with torch.no_grad():  # reference: the base's own modules, with its blocks 1 and 2 skipped
        t = base.transformer
        h = t.wte(ids) + t.wpe(torch.arange(16))[None]
        out = t.h[0](h)
        h = out[0] if isinstance(out, tuple) else out
        expected = base.lm_head(t.ln_f(h))
        torch.testing.assert_close(small(ids).logits, expected)
    small.save_pretrained(tmp_path / "small")  # the config records the new depth
    from transformers import AutoModelForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "small").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected)


def test_copy_of_base_refuses_more_blocks_than_the_base_has(profile):
    profile = dataclasses.replace(profile, memdec_init="base:0", memdec_layers=4, context_length=32,
                                  stride=16)
    with pytest.raises(ValueError, match="memdec_layers=4 .* 3 blocks"):
        build_memory_decoder(profile, base_model=make_gpt2(n_layer=3))
