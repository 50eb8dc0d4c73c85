"""Training loop: every position supervised, loss goes down, exact resume, lr schedule, reuse,
validation metrics against brute-force references."""
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.core.windows import WindowSpec
from memdec_helpers.core.mixing import mix_logprobs, perplexity
from memdec_helpers.runtime.scoring import token_logprobs
from memdec_helpers.core.knn import knn_distribution
from memdec_helpers.core.loss import memdec_loss
from memdec_helpers.runtime.scoring import validation_kl
from memdec_helpers.runtime.training import batch_sequences, lr_factor, make_batch, sequence_starts
from memdec_helpers.stages.training import train_memory_decoder
from memdec_helpers.core.windows import plan_windows

L = 16


def fake_targets(tokens, m=4, seed=0):
    """Peaked sparse targets: mostly the true next token, plus noise, as knn_distribution gives."""
    g = torch.Generator().manual_seed(seed)
    n = len(tokens) - 1
    neighbours = torch.randint(0, VOCAB, (n, 8), generator=g)
    neighbours[:, :5] = torch.as_tensor(tokens[1:], dtype=torch.long)[:, None]
    ids, probs = knn_distribution(torch.rand(n, 8, generator=g), neighbours, 1.0)
    ids, probs = ids[:, :m], probs[:, :m] / probs[:, :m].sum(1, keepdim=True)
    return SimpleNamespace(ids=ids.int().numpy(), probs=probs.half().numpy(),
                           manifest={"config_hash": f"fake{seed}"})


@pytest.fixture
def setup(profile, token_ids):
    profile = replace(profile, context_length=L, stride=8, batch_size=8)
    profile = replace(profile, train_batch_size=4, train_steps=12, warmup_steps=3)
    profile = replace(profile, eval_every=4, learning_rate=3e-3, memdec_init="scratch")
    return profile, token_ids, fake_targets(token_ids)


def fixed_batch_loss(model, tokens, targets):
    """memdec_loss of the first four sequences, dropout off."""
    batch = make_batch(tokens, targets.ids, targets.probs, sequence_starts(len(tokens), L)[:4], L)
    model.eval()
    with torch.no_grad():
        logits = model(batch["input_ids"]).logits
    return memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"], 0.5)[0].item()


def test_batches_cover_every_position_with_aligned_targets(token_ids):
    targets = fake_targets(token_ids)
    starts = sequence_starts(len(token_ids), L)
    np.testing.assert_array_equal(starts, np.arange(0, len(token_ids) - L, L))  # non-overlapping
    assert starts[-1] + L + 1 <= len(token_ids)  # the last sequence still has its labels
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
    across = np.concatenate([batch_sequences(s, m, 3, 2, 20, seed=1) for s in range(7) for m in range(2)])
    assert sorted(across[:20]) == list(range(20)) and sorted(across[20:40]) == list(range(20))
    np.testing.assert_array_equal(batch_sequences(7, 1, 5, 2, 20, 0), batch_sequences(7, 1, 5, 2, 20, 0))
    assert not np.array_equal(batch_sequences(0, 0, 20, 1, 20, 0), batch_sequences(0, 0, 20, 1, 20, 1))


def test_lr_schedule_warmup_then_linear_decay():
    values = [lr_factor(s, 4, 10) for s in range(11)]
    np.testing.assert_allclose(values[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(values[4:], [(10 - s) / 6 for s in range(4, 11)])
    assert values[-1] == 0.0 and lr_factor(0, 0, 10) == 1.0


def test_training_reduces_the_loss_and_writes_everything(setup, tmp_path):
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=30, eval_every=10)
    start = make_gpt2()
    before = fixed_batch_loss(make_gpt2(), tokens, targets)
    model, history = train_memory_decoder(profile, start, tokens, targets, out_dir=tmp_path / "run",
                                          progress=False)
    after = fixed_batch_loss(model, tokens, targets)
    assert after < before - 0.3, (before, after)  # measured: 4.09 -> 3.68
    assert [s["step"] for s in history["steps"]] == list(range(1, 31))
    want_lr = [profile.learning_rate * lr_factor(s, profile.warmup_steps, 30) for s in range(30)]
    np.testing.assert_allclose([s["lr"] for s in history["steps"]], want_lr, rtol=1e-12)
    assert [e["step"] for e in history["evals"]] == [10, 20, 30]
    assert json.loads((tmp_path / "run" / "history.json").read_text())["steps"] == history["steps"]
    assert (tmp_path / "run" / "manifest.json").exists()
    assert not (tmp_path / "run" / "checkpoint").exists()  # dropped once the run is complete
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    ids = torch.as_tensor(tokens[:10][None].astype(np.int64))
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_resume_gives_the_same_loss_trajectory(setup, tmp_path):
    """Interrupted after step 9 (last checkpoint at 8), then resumed: per-step loss, kl and ce
    match the uninterrupted run to 1e-5 absolute, and so do the final weights."""
    profile, tokens, targets = setup
    full_model, full = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path / "a",
                                            progress=False)
    interrupted_run(profile, tokens, targets, tmp_path / "b")
    assert not (tmp_path / "b" / "manifest.json").exists()  # nothing looks finished
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())["steps"]) == 8
    resumed_steps = []
    model, resumed = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path / "b",
                                          progress=False, callback=resumed_steps.append)
    assert [r["step"] for r in resumed_steps] == [9, 10, 11, 12]  # it really resumed
    for key in ("loss", "kl", "ce", "lr"):
        np.testing.assert_allclose([s[key] for s in resumed["steps"]],
                                   [s[key] for s in full["steps"]], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.lm_head.weight, full_model.lm_head.weight, rtol=0, atol=1e-5)


def test_finished_run_is_reused_and_changes_retrain(setup, tmp_path):
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    _, first = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
    calls = []
    model, again = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path,
                                        progress=False, callback=calls.append)
    assert calls == [] and again["steps"] == first["steps"]  # reused, not retrained
    ids = torch.as_tensor(tokens[:10][None].astype(np.int64))
    assert not torch.allclose(model(ids).logits, make_gpt2()(ids).logits)  # trained weights loaded
    _, other_init = train_memory_decoder(profile, make_gpt2(seed=9), tokens, targets, out_dir=tmp_path,
                                         progress=False, callback=calls.append)
    assert len(calls) == 4  # another starting model is another run
    profile = replace(profile, beta=1.0)
    _, changed = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
    assert changed["steps"][0]["loss"] != first["steps"][0]["loss"]


def test_validation_kl_equals_a_dense_brute_force(token_ids):
    """Short stream (one window) and long stream (several windows): KL from full forward passes
    over the windows the plan gives, with dense targets."""
    model, targets = make_gpt2(), fake_targets(token_ids, m=6)
    for n, length, stride in ((12, 16, 8), (120, 16, 8), (120, 16, 16)):
        tokens = token_ids[:n]
        sub = SimpleNamespace(ids=targets.ids[: n - 1], probs=targets.probs[: n - 1])
        plan = plan_windows(n, length, stride)
        per_position = np.full(n - 1, np.nan)
        for start, first in zip(plan.starts, plan.first_scored):
            window = torch.as_tensor(tokens[start:start + plan.length][None].astype(np.int64))
            with torch.no_grad():
                log_q = torch.log_softmax(model(window).logits[0, :-1].double(), -1)  # [L-1, V]
            rows = np.arange(start + first, start + plan.length - 1)
            dense = torch.zeros(len(rows), VOCAB, dtype=torch.float64)
            dense.scatter_add_(1, torch.as_tensor(sub.ids[rows]).long(),
                               torch.as_tensor(sub.probs[rows].astype(np.float64)))
            kl = torch.nn.functional.kl_div(log_q[first:], dense, reduction="none").sum(-1)
            per_position[rows] = kl.numpy()
        assert not np.isnan(per_position).any()  # the plan scores every position
        got = validation_kl(model, tokens, sub, WindowSpec(length, stride, batch_size=2))
        np.testing.assert_allclose(got, per_position.mean(), rtol=1e-5)


def test_evaluation_metrics_during_training(setup, tmp_path):
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    val = tokens[:150]
    val_targets = fake_targets(val, seed=3)
    base_lp = token_logprobs(make_gpt2(seed=2), val, L, profile.stride)
    model, history = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path,
                                          val_tokens=val, val_targets=val_targets,
                                          val_base_logprobs=base_lp, progress=False)
    last = history["evals"][-1]
    mem_lp = token_logprobs(model, val, L, profile.stride)
    np.testing.assert_allclose(last["val_ppl"], np.exp(-mem_lp.astype(np.float64).mean()), rtol=1e-5)
    want_mix = np.exp(-np.mean(np.log(0.5 * np.exp(mem_lp.astype(np.float64))
                                      + 0.5 * np.exp(base_lp.astype(np.float64)))))
    np.testing.assert_allclose(last["val_mix_ppl"], want_mix, rtol=1e-5)
    np.testing.assert_allclose(last["val_kl"], validation_kl(model, val, val_targets, WindowSpec(L, profile.stride)),
                               rtol=1e-6)
    assert perplexity(mix_logprobs(base_lp, mem_lp, 0.5)) == pytest.approx(last["val_mix_ppl"])


def test_errors(setup, tmp_path):
    profile, tokens, targets = setup
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="targets"):
        train_memory_decoder(profile, make_gpt2(), tokens[:100], targets, out_dir=run, progress=False)
    with pytest.raises(ValueError, match="train_tokens"):
        train_memory_decoder(profile, make_gpt2(vocab=50), tokens, targets, out_dir=run, progress=False)
    with pytest.raises(ValueError, match="val_tokens"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run, val_targets=targets,
                             progress=False)
    with pytest.raises(ValueError, match="val_base_logprobs"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run, val_tokens=tokens[:50],
                             val_base_logprobs=np.zeros(10), progress=False)
    with pytest.raises(ValueError, match="context_length"):
        train_memory_decoder(profile, make_gpt2(n_positions=8), tokens, targets, out_dir=run, progress=False)
    assert not run.exists()  # checked before any file write


class Planted:
    """A pickle that runs code when unpickled: writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_checkpoint_runs_no_code(setup, tmp_path):
    """A training_state.pt with a matching config hash (anyone can compute it) is loaded with
    weights_only=True: the pickle's code never runs, training starts from scratch."""
    from memdec_helpers.core.hashing import config_hash
    from memdec_helpers.stages.training import train_config

    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    run, marker = tmp_path / "run", tmp_path / "pwned"
    (run / "checkpoint").mkdir(parents=True)
    config = train_config(profile, make_gpt2(), tokens, targets)
    torch.save({"config_hash": config_hash(config), "step": 2, "evil": Planted(marker)},
               run / "checkpoint" / "training_state.pt")
    (run / "checkpoint" / "state.json").write_text(json.dumps(
        {"config_hash": config_hash(config), "step": 2, "history": {}}))
    steps = []
    with pytest.warns(UserWarning, match="damaged"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run, progress=False,
                             callback=steps.append)
    assert not marker.exists()
    assert [s["step"] for s in steps] == [1, 2, 3, 4]  # from scratch


def interrupted_run(profile, tokens, targets, run):
    """A run killed after step 9 (its checkpoint holds step 8)."""
    class Stop(Exception):
        pass

    def stop_at_9(record):
        if record["step"] == 9:
            raise Stop

    with pytest.raises(Stop):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run, progress=False,
                             callback=stop_at_9)


@pytest.mark.parametrize("damaged", ["training_state.pt", "model.safetensors", "state.json"])
def test_a_truncated_checkpoint_restarts_training_from_scratch(setup, tmp_path, damaged):
    profile, tokens, targets = setup
    _, full = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path / "a",
                                   progress=False)
    run = tmp_path / "b"
    interrupted_run(profile, tokens, targets, run)
    path = run / "checkpoint" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    steps = []
    with pytest.warns(UserWarning, match="damaged"):
        _, history = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run,
                                          progress=False, callback=steps.append)
    assert [s["step"] for s in steps] == list(range(1, 13))  # all 12 steps again
    np.testing.assert_allclose([s["loss"] for s in history["steps"]],
                               [s["loss"] for s in full["steps"]], rtol=0, atol=1e-5)


def test_a_damaged_final_model_is_a_clear_error(setup, tmp_path):
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="damaged.*delete the folder"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
