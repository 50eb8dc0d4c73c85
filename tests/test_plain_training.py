"""Lesson 03's plain loss and loop compute what the package's memdec_loss and trainer compute;
the float() bug's KL (kl_without_gradient) has the right value and no gradient, and training with it learns less."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.core.loss import memdec_loss
from memdec_helpers.lessons.plain_training import plain_memdec_loss, plain_train
from memdec_helpers.runtime.training import make_batch, sequence_starts
from memdec_helpers.stages.training import train_memory_decoder
from test_train import L, fake_targets


@pytest.fixture
def short(profile, token_ids):
    """A short run of the tiny profile on random tokens, dropout on (the models train)."""
    profile = replace(profile, context_length=L, stride=8, train_batch_size=4, train_steps=6,
                      warmup_steps=2, learning_rate=3e-3, beta=0.5)
    return profile, token_ids, fake_targets(token_ids, m=6)


def random_loss_inputs(seed: int = 0):
    """logits [2, 5, V] and sparse targets [2, 5, 4] with padding (probability 0) entries."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, VOCAB, generator=g, requires_grad=True)
    ids = torch.stack([torch.randperm(VOCAB, generator=g)[:4] for _ in range(10)]).view(2, 5, 4)
    probs = torch.rand(2, 5, 4, generator=g)
    probs[:, :, 3] = 0.0  # padding
    probs = probs / probs.sum(-1, keepdim=True)
    labels = torch.randint(0, VOCAB, (2, 5), generator=g)
    return logits, ids, probs, labels


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_plain_loss_equals_memdec_loss_with_its_gradient(beta):
    logits, ids, probs, labels = random_loss_inputs()
    plain = plain_memdec_loss(logits, ids, probs, labels, beta)
    package = memdec_loss(logits, ids, probs, labels, beta)
    for mine, theirs in zip(plain, package):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    grad_plain, = torch.autograd.grad(plain[0], logits)
    grad_package, = torch.autograd.grad(package[0], logits)
    torch.testing.assert_close(grad_plain, grad_package, rtol=1e-5, atol=1e-7)


def test_kl_without_gradient_keeps_the_value_and_loses_the_kl_gradient():
    logits, ids, probs, labels = random_loss_inputs(1)
    loss, kl, ce = plain_memdec_loss(logits, ids, probs, labels, 0.5)
    bug_loss, bug_kl, bug_ce = plain_memdec_loss(logits, ids, probs, labels, 0.5, kl_without_gradient=True)
    torch.testing.assert_close(bug_loss, loss)  # the printed loss looks right
    assert not bug_kl.requires_grad and kl.requires_grad
    grad_bug, = torch.autograd.grad(bug_loss, logits)
    grad_ce_only, = torch.autograd.grad(0.5 * ce, logits)
    torch.testing.assert_close(grad_bug, grad_ce_only)  # it silently trains on CE alone


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_plain_loop_and_the_trainer_agree_step_by_step(short, tmp_path, grad_accum):
    profile, tokens, targets = short
    profile = replace(profile, grad_accum=grad_accum)
    plain_model, packaged_start = make_gpt2(), make_gpt2()  # same init
    history = plain_train(plain_model, tokens, targets, profile)
    model, packaged = train_memory_decoder(profile, packaged_start, tokens, targets, out_dir=tmp_path,
                                           progress=False)
    assert len(history) == len(packaged["steps"]) == profile.train_steps
    if grad_accum == 1:  # the package records the mean over micro-batches, the loop the last
        for key in ("loss", "kl", "ce"):
            np.testing.assert_allclose([h[key] for h in history],
                                       [s[key] for s in packaged["steps"]], rtol=1e-5)
    for (name, mine), theirs in zip(plain_model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(plain_model.lm_head.weight, make_gpt2().lm_head.weight)  # it trained


def batch_kl(model, tokens, targets) -> float:
    """KL to the targets on the first four sequences, dropout off."""
    batch = make_batch(tokens, targets.ids, targets.probs, sequence_starts(len(tokens), L)[:4], L)
    model.eval()
    with torch.no_grad():
        logits = model(batch["input_ids"]).logits
    return plain_memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"],
                             1.0)[1].item()


def test_training_with_the_float_bug_does_not_learn_the_knn_targets(short):
    """Targets that disagree with the next token (a relabelled stream): only the KL term can
    teach them, and the buggy run has none."""
    profile, tokens, _ = short
    targets = fake_targets(np.random.default_rng(0).permutation(VOCAB)[tokens])
    profile = replace(profile, train_steps=40)
    correct, buggy = make_gpt2(), make_gpt2()
    before = batch_kl(make_gpt2(), tokens, targets)
    plain_train(correct, tokens, targets, profile)
    bug_history = plain_train(buggy, tokens, targets, profile, kl_without_gradient=True)
    assert bug_history[-1]["ce"] < bug_history[0]["ce"]  # it still learns the next token
    after_correct, after_bug = batch_kl(correct, tokens, targets), batch_kl(buggy, tokens, targets)
    # measured: 3.53 before, 3.30 with the correct loss, 3.60 with the bug
    assert after_correct < before - 0.15 and after_bug > after_correct + 0.15, (after_correct, after_bug)
