"""Training loop: every position supervised, loss goes down, exact resume, lr schedule."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.knn import knn_distribution
from memdec_helpers.memdec import memdec_loss
from memdec_helpers.train import (batch_sequences, lr_factor, make_batch, sequence_starts,
                                  train_memory_decoder)

L = 16


def fake_targets(tokens, m=4, seed=0):
    """Peaked sparse targets: mostly the true next token, plus noise, as knn_distribution gives."""
    g = torch.Generator().manual_seed(seed)
    n = len(tokens) - 1
    neighbours = torch.randint(0, VOCAB, (n, 8), generator=g)
    neighbours[:, :5] = torch.as_tensor(tokens[1:], dtype=torch.long)[:, None]
    ids, probs = knn_distribution(torch.rand(n, 8, generator=g), neighbours, 1.0)
    ids, probs = ids[:, :m], probs[:, :m] / probs[:, :m].sum(1, keepdim=True)
    return Targets(ids=ids.int().numpy(), probs=probs.half().numpy(),
                   manifest={"config_hash": f"fake{seed}"})


class Targets(SimpleNamespace):
    def __len__(self):
        return len(self.ids)


@pytest.fixture
def setup(profile, token_ids):
    profile.context_length, profile.stride, profile.batch_size = L, 8, 8
    profile.train_batch_size, profile.train_steps, profile.warmup_steps = 4, 12, 3
    profile.eval_every, profile.learning_rate = 4, 3e-3
    return profile, token_ids, fake_targets(token_ids)


def test_batches_cover_every_position_with_aligned_targets(token_ids):
    targets = fake_targets(token_ids)
    starts = sequence_starts(len(token_ids), L)
    batch = make_batch(token_ids, targets.ids, targets.probs, starts[[0, 3]], L)
    s = starts[3]
    assert batch["input_ids"][1].tolist() == token_ids[s:s + L].tolist()
    assert batch["labels"][1].tolist() == token_ids[s + 1:s + L + 1].tolist()
    assert batch["target_ids"][1].tolist() == targets.ids[s:s + L].tolist()
    model = make_gpt2()
    logits = model(batch["input_ids"]).logits.detach().requires_grad_(True)
    memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"], 0.5)[0].backward()
    assert (logits.grad.abs().sum(-1) > 0).all()  # every position of every sequence is supervised


def test_batch_order_is_a_seeded_permutation_per_epoch():
    seen = np.concatenate([batch_sequences(s, 0, 5, 1, 20, seed=0) for s in range(4)])
    assert sorted(seen) == list(range(20))  # one epoch = each sequence once
    assert not np.array_equal(seen, np.arange(20))
    np.testing.assert_array_equal(batch_sequences(7, 1, 5, 2, 20, 0), batch_sequences(7, 1, 5, 2, 20, 0))


def test_lr_schedule_warmup_then_linear_decay():
    values = [lr_factor(s, 4, 10) for s in range(10)]
    np.testing.assert_allclose(values[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(values[4:], [(10 - s) / 6 for s in range(4, 10)])


def test_training_reduces_the_loss_and_writes_everything(setup, tmp_path):
    profile, tokens, targets = setup
    profile.train_steps = 30
    model, history = train_memory_decoder(profile, make_gpt2(), tokens, targets, tmp_path / "run",
                                          val_tokens=tokens[:120], progress=False)
    losses = [s["loss"] for s in history["steps"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert len(history["evals"]) == 30 // profile.eval_every + (30 % profile.eval_every > 0)
    assert all(np.isfinite(e["val_ppl"]) for e in history["evals"])
    assert json.loads((tmp_path / "run" / "history.json").read_text())["steps"] == history["steps"]
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    ids = torch.as_tensor(tokens[:10][None].astype(np.int64))
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_resume_gives_the_same_loss_trajectory(setup, tmp_path):
    """Interrupted after 8 of 12 steps, then resumed: per-step losses match to 1e-5."""
    profile, tokens, targets = setup
    _, full = train_memory_decoder(profile, make_gpt2(), tokens, targets, tmp_path / "a",
                                   progress=False)

    class Stop(Exception):
        pass

    def stop_after_8(record):
        if record["step"] == 9:
            raise Stop

    with pytest.raises(Stop):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, tmp_path / "b",
                             progress=False, callback=stop_after_8)
    assert not (tmp_path / "b" / "manifest.json").exists()  # nothing looks finished
    _, resumed = train_memory_decoder(profile, make_gpt2(seed=5), tokens, targets, tmp_path / "b",
                                      progress=False)
    np.testing.assert_allclose([s["loss"] for s in resumed["steps"]],
                               [s["loss"] for s in full["steps"]], rtol=0, atol=1e-5)


def test_finished_run_is_reused_and_config_change_retrains(setup, tmp_path):
    profile, tokens, targets = setup
    _, first = train_memory_decoder(profile, make_gpt2(), tokens, targets, tmp_path, progress=False)
    _, again = train_memory_decoder(profile, make_gpt2(seed=9), tokens, targets, tmp_path, progress=False)
    assert again["steps"] == first["steps"]
    profile.beta = 1.0
    _, changed = train_memory_decoder(profile, make_gpt2(), tokens, targets, tmp_path, progress=False)
    assert changed["steps"][0]["loss"] != first["steps"][0]["loss"]


def test_targets_from_another_corpus_are_refused(setup, tmp_path):
    profile, tokens, targets = setup
    with pytest.raises(ValueError, match="targets have"):
        train_memory_decoder(profile, make_gpt2(), tokens[:100], targets, tmp_path, progress=False)
