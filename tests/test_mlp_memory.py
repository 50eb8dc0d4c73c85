"""The MLP memory: the hidden state it reads, its loss and gradients against a brute-force dense
reference, its parameter count and matched width, training (loss goes down, exact resume,
reuse) through the decoder's loop, its recipe, and clear errors."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, make_gpt2
from test_train import L, fake_targets
from transformers import AutoModelForCausalLM

from memdec_helpers import load_profile
from memdec_helpers.core.loss import memdec_loss
from memdec_helpers.runtime.mlp_memory import (
    MLPMemoryModel,
    build_mlp_memory,
    default_layer,
    matched_width,
    mlp_memory_parameters,
    read_hidden,
)
from memdec_helpers.runtime.models import count_parameters
from memdec_helpers.runtime.training import make_batch, sequence_starts
from memdec_helpers.stages.recipes import mlp_memory_recipe
from memdec_helpers.stages.training import train_memory_decoder


def block_input_by_hand(base, ids, layer):
    """The input of block `layer`'s MLP, recomputed from the full forward's hidden states:
    ln_2(h + attn(ln_1(h))) with h the block's input."""
    h = base(ids, output_hidden_states=True).hidden_states[layer]
    block = base.transformer.h[layer]
    return block.ln_2(h + block.attn(block.ln_1(h))[0])


def logits_by_hand(model, hidden):
    """The MLP memory's forward in plain functional torch, from its weights."""
    x = hidden
    for b in model.blocks:
        inner = F.gelu(F.linear(F.layer_norm(x, x.shape[-1:], b.ln.weight, b.ln.bias),
                                b.fc.weight, b.fc.bias), approximate="tanh")
        x = x + F.linear(inner, b.proj.weight, b.proj.bias)
    x = F.layer_norm(x, x.shape[-1:], model.ln_f.weight, model.ln_f.bias)
    return x @ model.lm_head.weight.T


def dense_loss(logits, ids, probs, labels, beta):
    """β·KL + (1−β)·CE with a dense [B, T, V] target, position by position in plain Python."""
    B, T, V = logits.shape
    kl_terms, ce_terms = [], []
    for b in range(B):
        for t in range(T):
            if labels[b, t] == -100:
                continue
            p = torch.zeros(V).index_add_(0, ids[b, t], probs[b, t])
            log_q = torch.log_softmax(logits[b, t], -1)
            kl_terms.append(sum(p[v] * (torch.log(p[v]) - log_q[v]) for v in range(V) if p[v] > 0))
            ce_terms.append(-log_q[labels[b, t]])
    kl, ce = torch.stack(kl_terms).mean(), torch.stack(ce_terms).mean()
    return beta * kl + (1 - beta) * ce, kl, ce


@pytest.fixture
def base():
    return make_gpt2(n_layer=3, n_embd=32)


def test_it_reads_the_mlp_input_of_the_chosen_block_and_skips_the_rest(base):
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    for layer in range(3):
        torch.testing.assert_close(read_hidden(base, ids, layer), block_input_by_hand(base, ids, layer))
    ran = []
    handle = base.transformer.h[2].register_forward_pre_hook(lambda *a: ran.append(1))
    read_hidden(base, ids, 1)
    handle.remove()
    assert ran == []  # the blocks above the one read never run
    assert [default_layer(n) for n in (1, 3, 5, 12, 36)] == [0, 2, 3, 8, 25]


@pytest.mark.parametrize("init", ["scratch", "base"])
def test_loss_and_gradients_match_a_dense_brute_force(base, init):
    model = build_mlp_memory(base, width=24, blocks=2, layer=1, init=init).eval()
    tokens = np.random.default_rng(1).integers(0, VOCAB, 200)
    targets = fake_targets(tokens, m=4)
    batch = make_batch(tokens, targets.ids, targets.probs, sequence_starts(len(tokens), 8)[:2], 8)
    batch["labels"][0, 3] = -100
    logits = model(batch["input_ids"]).logits
    loss, kl, ce = memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"], 0.3)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    hidden = block_input_by_hand(base, batch["input_ids"], 1).detach()
    ref_logits = logits_by_hand(model, hidden)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    ref = dense_loss(ref_logits, batch["target_ids"], batch["target_probs"], batch["labels"], 0.3)
    for ours, theirs in zip((loss, kl, ce), ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    ref_grads = torch.autograd.grad(ref[0], list(model.parameters()))
    for name, ours, theirs in zip([n for n, _ in model.named_parameters()], grads, ref_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-6, msg=name)
    assert all(p.grad is None for p in base.parameters())  # the base is read, never trained


def test_base_init_starts_as_the_base_output_layer_read_at_its_block(base):
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    model = build_mlp_memory(base, width=24, blocks=2, layer=1, init="base").eval()
    hidden = block_input_by_hand(base, ids, 1)
    torch.testing.assert_close(model(ids).logits, base.lm_head(base.transformer.ln_f(hidden)))
    assert model.lm_head.weight.data_ptr() != base.lm_head.weight.data_ptr()  # a copy
    scratch = build_mlp_memory(base, width=24, blocks=2, layer=1, init="scratch")
    assert not torch.allclose(scratch.lm_head.weight, base.lm_head.weight)
    again = build_mlp_memory(base, width=24, blocks=2, layer=1, init="scratch")
    torch.testing.assert_close(again.blocks[0].fc.weight, scratch.blocks[0].fc.weight)  # seeded


def test_parameter_count_and_matched_width(base):
    for width, blocks in [(32, 1), (24, 2), (50, 3)]:
        model = build_mlp_memory(base, width=width, blocks=blocks)
        assert count_parameters(model) == mlp_memory_parameters(width, 32, VOCAB, blocks)
        assert not any(name.startswith("transformer") for name in model.state_dict())
    for target in (5_000, 40_000, 123_456, 1_000_000):
        width = matched_width(target, 32, VOCAB, 2)
        gaps = {w: abs(mlp_memory_parameters(w, 32, VOCAB, 2) - target) for w in range(1, 20000)}
        assert gaps[width] == min(gaps.values()) and width == min(w for w, g in gaps.items()
                                                                  if g == gaps[width])
    decoder = count_parameters(make_gpt2(n_layer=1, n_embd=32))
    width = matched_width(decoder, 32, VOCAB, 2)
    assert abs(count_parameters(build_mlp_memory(base, width, 2)) - decoder) <= \
        mlp_memory_parameters(width + 1, 32, VOCAB, 2) - mlp_memory_parameters(width, 32, VOCAB, 2)
    with pytest.raises(ValueError, match="below the smallest"):
        matched_width(10, 32, VOCAB, 2)
    with pytest.raises(ValueError, match="blocks"):
        matched_width(10_000, 32, VOCAB, 0)


@pytest.fixture
def setup(profile):
    profile = replace(profile, context_length=L, stride=8, batch_size=8, train_batch_size=4,
                      train_steps=12, warmup_steps=3, eval_every=4, learning_rate=3e-3)
    tokens = np.random.default_rng(2).integers(0, VOCAB, 300)
    return profile, tokens, fake_targets(tokens)


def fresh(base):
    return build_mlp_memory(base, width=24, blocks=2, layer=1, seed=0)


def test_it_trains_in_the_decoders_loop_and_resumes_exactly(setup, base, tmp_path):
    profile, tokens, targets = setup
    before = {k: v.clone() for k, v in base.state_dict().items()}
    full, history = train_memory_decoder(profile, fresh(base), tokens, targets,
                                         out_dir=tmp_path / "a", progress=False)
    losses = [s["loss"] for s in history["steps"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses  # measured: 4.06 -> 3.91
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # base frozen

    class Stop(Exception):
        pass

    def stop_at_9(record):
        if record["step"] == 9:
            raise Stop

    with pytest.raises(Stop):
        train_memory_decoder(profile, fresh(base), tokens, targets, out_dir=tmp_path / "b",
                             progress=False, callback=stop_at_9)
    resumed_steps = []
    model, resumed = train_memory_decoder(profile, fresh(base), tokens, targets,
                                          out_dir=tmp_path / "b", progress=False,
                                          callback=resumed_steps.append)
    assert [r["step"] for r in resumed_steps] == [9, 10, 11, 12]
    np.testing.assert_allclose([s["loss"] for s in resumed["steps"]], losses, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.lm_head.weight, full.lm_head.weight, rtol=0, atol=1e-5)
    calls = []
    train_memory_decoder(profile, fresh(base), tokens, targets, out_dir=tmp_path / "a",
                                    progress=False, callback=calls.append)
    assert calls == []  # a finished run is reused
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "model")
    assert isinstance(reloaded, MLPMemoryModel)
    ids = torch.as_tensor(tokens[:10][None].astype(np.int64))
    torch.testing.assert_close(reloaded.attach(base)(ids).logits, full(ids).logits)
    assert json.loads((tmp_path / "a" / "model" / "config.json").read_text())["layer"] == 1


def test_clear_errors(base):
    with pytest.raises(ValueError, match="mlp_memory_layer=3 but the base model has 3 blocks"):
        build_mlp_memory(base, width=8, blocks=1, layer=3)
    with pytest.raises(ValueError, match="width >= 1"):
        build_mlp_memory(base, width=0, blocks=1)
    model = build_mlp_memory(base, width=8, blocks=1)
    with pytest.raises(ValueError, match="base model has width 16 and 97 tokens"):
        model.attach(make_gpt2(n_layer=3, n_embd=16))
    with pytest.raises(ValueError, match="call attach"):
        MLPMemoryModel(model.config)(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="use one of"):
        build_mlp_memory(base, width=8, blocks=1, init="copy")
    for knob, value in [("mlp_memory_layer", -1), ("mlp_memory_blocks", 0), ("mlp_memory_width", 0),
                        ("mlp_memory_init", "copy")]:
        with pytest.raises(ValueError, match=knob):
            load_profile("tiny", **{knob: value})


def test_recipe_follows_its_knobs_and_the_matched_decoder():
    profile = load_profile("tiny")
    key = mlp_memory_recipe(profile, "t").key
    assert mlp_memory_recipe(replace(profile, mlp_memory_layer=1), "t").key != key
    assert mlp_memory_recipe(replace(profile, mlp_memory_blocks=3), "t").key != key
    assert mlp_memory_recipe(replace(profile, mlp_memory_init="scratch"), "t").key != key
    assert mlp_memory_recipe(profile, "other targets").key != key
    assert mlp_memory_recipe(replace(profile, memdec_layers=2), "t").key != key  # matched width
    fixed = replace(profile, mlp_memory_width=64)
    assert mlp_memory_recipe(replace(fixed, memdec_layers=2), "t").key == \
        mlp_memory_recipe(fixed, "t").key  # a given width does not depend on the decoder
    assert mlp_memory_recipe(replace(profile, ablation_workers=1), "t").key == key
    with pytest.raises(ValueError, match="kNN targets"):
        mlp_memory_recipe(profile, None)
