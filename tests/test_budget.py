"""Memory budgets: batches lowered to what memory holds; micro-batches leave training unchanged."""
import dataclasses

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import VOCAB
from memdec_helpers.runtime import batching as budget
from memdec_helpers.runtime.batching import ModelShape, fit_batch, item_bytes
from memdec_helpers.runtime.scoring import token_logprobs
from memdec_helpers.stages.training import train_memory_decoder
from test_train import L, fake_targets


def no_dropout_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def starve(monkeypatch, per_item_room: float, kind: str, model, length: int) -> None:
    """Leave room for `per_item_room` items of `kind` (plus its fixed memory) on the CPU."""
    shape = ModelShape.of(model)
    room = budget.fixed_bytes(shape, kind) + per_item_room * item_bytes(shape, length, kind, 4)
    monkeypatch.setattr(budget, "available_bytes", lambda device: int(room))


def test_fit_batch_lowers_the_batch_to_the_memory(monkeypatch):
    model = no_dropout_gpt2()
    starve(monkeypatch, 3.5, "train", model, L)
    assert fit_batch(8, model, L, "train", torch.device("cpu"), 4) == 3
    assert fit_batch(2, model, L, "train", torch.device("cpu"), 4) == 2  # never raised
    starve(monkeypatch, 0.1, "train", model, L)
    assert fit_batch(8, model, L, "train", torch.device("cpu"), 4) == 1  # at least one


def test_gpt2_small_estimates_at_colab_shapes():
    """GPT-2 small at context 1024: ~1.7 GB per training sequence (0.9 GB of it the 50,257-way
    logits and their float32 log-softmax), ~0.13 GB per log-prob window."""
    shape = ModelShape(layers=12, width=768, vocab=50257, params=124_439_808)
    assert 1.5e9 < item_bytes(shape, 1024, "train") < 1.9e9
    assert 0.1e9 < item_bytes(shape, 1024, "logprobs") < 0.15e9
    with pytest.raises(ValueError, match="kind"):
        item_bytes(shape, 1024, "decode")


def test_micro_batches_give_the_same_training(monkeypatch, profile, token_ids):
    """A step in forward passes of 1 sequence equals the step in one pass (dropout off)."""
    profile = dataclasses.replace(profile, context_length=L, stride=8, batch_size=8,
                                  train_batch_size=4, grad_accum=2, train_steps=3, eval_every=3,
                                  memdec_init="scratch", warmup_steps=1)
    targets = fake_targets(token_ids)
    runs = {}
    for name, micro in [("whole", None), ("split", 3)]:
        run = dataclasses.replace(profile, micro_batch_size=micro)
        model, history = train_memory_decoder(run, no_dropout_gpt2(), token_ids, targets,
                                              out_dir=profile_dir(profile, name), progress=False)
        runs[name] = (model, [s["loss"] for s in history["steps"]])
    np.testing.assert_allclose(runs["split"][1], runs["whole"][1], rtol=1e-5)
    for a, b in zip(runs["split"][0].parameters(), runs["whole"][0].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_memory_limits_split_the_batch_and_inference(monkeypatch, profile, token_ids):
    model = no_dropout_gpt2()
    want = token_logprobs(model, token_ids, 32, 16, batch_size=16)
    seen = []
    real = budget.window_batches
    monkeypatch.setattr(budget, "window_batches",
                        lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    starve(monkeypatch, 2.5, "logprobs", model, 32)
    got = token_logprobs(model, token_ids, 32, 16, batch_size=16)
    assert seen == [16, 2]  # checked as asked, run two windows at a time
    np.testing.assert_allclose(got, want, atol=1e-5)


def profile_dir(profile, name):
    from pathlib import Path

    return Path(profile.artifacts_dir) / name
