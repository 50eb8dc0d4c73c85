"""memdec_loss against a dense F.kl_div + cross-entropy reference, gradients included."""
import pytest
import torch
import torch.nn.functional as F

from conftest import make_gpt2
from memdec_helpers.knn import knn_distribution
from memdec_helpers.memdec import (build_memory_decoder, check_same_vocabulary,
                                   kl_without_gradient_demo, memdec_loss)

B, T, V, K = 2, 5, 11, 6


def sparse_targets(seed=0):
    g = torch.Generator().manual_seed(seed)
    d, tok = torch.rand(B * T, K, generator=g) * 3, torch.randint(0, V, (B * T, K), generator=g)
    ids, probs = knn_distribution(d, tok, 1.0)  # rows with < K distinct tokens are padded
    return ids.view(B, T, -1), probs.float().view(B, T, -1)


def dense_reference(logits, ids, probs, labels, beta):
    dense = torch.zeros(B, T, V).scatter_add_(-1, ids, probs)  # only in the test: [B, T, V]
    keep = labels != -100
    log_q = torch.log_softmax(logits, -1)
    kl = F.kl_div(log_q[keep], dense[keep], reduction="batchmean")
    ce = F.cross_entropy(logits[keep], labels[keep])
    return beta * kl + (1 - beta) * ce, kl, ce


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_and_gradient_equal_the_dense_reference(beta):
    ids, probs = sparse_targets()
    assert (probs == 0).any()  # padding entries are exercised
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(3))
    labels[0, 1] = labels[1, 4] = -100
    logits = torch.randn(B, T, V, generator=torch.Generator().manual_seed(4), requires_grad=True)
    ref_logits = logits.detach().clone().requires_grad_(True)
    got = memdec_loss(logits, ids, probs, labels, beta)
    want = dense_reference(ref_logits, ids, probs, labels, beta)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    got[0].backward()
    want[0].backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-7)
    assert (logits.grad[0, 1] == 0).all()  # ignored positions get no gradient


def test_kl_term_alone_has_the_reference_gradient():
    ids, probs = sparse_targets(1)
    labels = torch.randint(0, V, (B, T))
    logits = torch.randn(B, T, V, requires_grad=True)
    ref = logits.detach().clone().requires_grad_(True)
    memdec_loss(logits, ids, probs, labels, 0.5)[1].backward()
    dense_reference(ref, ids, probs, labels, 0.5)[1].backward()
    assert logits.grad.abs().sum() > 0
    torch.testing.assert_close(logits.grad, ref.grad, rtol=1e-5, atol=1e-7)


def test_buggy_kl_has_the_value_but_no_gradient():
    ids, probs = sparse_targets(2)
    logits = torch.randn(B, T, V, requires_grad=True)
    buggy, correct = kl_without_gradient_demo(logits, ids, probs)
    torch.testing.assert_close(buggy, correct.detach())
    assert not buggy.requires_grad and correct.requires_grad


def test_errors():
    ids, probs = sparse_targets()
    logits, labels = torch.randn(B, T, V), torch.zeros(B, T, dtype=torch.long)
    with pytest.raises(ValueError, match="beta"):
        memdec_loss(logits, ids, probs, labels, 1.5)
    with pytest.raises(ValueError, match="target_ids"):
        memdec_loss(logits, ids[:, :2], probs, labels, 0.5)
    with pytest.raises(ValueError, match="ignored"):
        memdec_loss(logits, ids, probs, torch.full((B, T), -100), 0.5)


def test_build_from_scratch_copy_and_vocab_check(profile):
    base = make_gpt2()
    profile.memdec_init = "scratch"
    scratch = build_memory_decoder(profile, base_model=base)
    assert scratch.config.vocab_size == base.config.vocab_size
    assert scratch.config.n_layer == profile.memdec_layers
    profile.memdec_init = "base:0"
    copied = build_memory_decoder(profile, base_model=base)
    assert copied is not base
    torch.testing.assert_close(copied.lm_head.weight, base.lm_head.weight)
    check_same_vocabulary(copied, base)
    with pytest.raises(ValueError, match="same tokenizer"):
        check_same_vocabulary(copied, make_gpt2(vocab=50))
