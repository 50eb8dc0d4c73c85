"""Datastore: keys are the right hidden states, values the next tokens; streaming and resume."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from memdec_helpers.runtime.keys import extract_keys, key_module
from memdec_helpers.stages.datastore import build_datastore, check_datastore_matches, load_datastore
from memdec_helpers.core.windows import plan_windows, scored_mask


def reference_keys(model, tokens, key_layer):
    """Keys from one full forward pass, computed without hooks."""
    ids = torch.as_tensor(tokens, dtype=torch.long)[None]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        if key_layer == "final_hidden":
            return hidden[-1][0].numpy()
        last = model.transformer.h[-1]
        x = hidden[-2]  # the input of the last block
        h = x + last.attn(last.ln_1(x))[0]  # residual after attention
        return last.ln_2(h)[0].numpy()  # the MLP's input


@pytest.mark.parametrize("key_layer", ["mlp_input", "final_hidden"])
def test_short_sequence_keys_equal_one_forward_pass(gpt2, token_ids, key_layer):
    tokens = token_ids[:50]
    keys, vals = extract_keys(gpt2, tokens, 64, 32, key_layer=key_layer)
    assert keys.dtype == np.float16 and vals.dtype == np.int32
    assert keys.shape == (49, gpt2.config.n_embd)
    np.testing.assert_array_equal(vals, tokens[1:])
    ref = reference_keys(gpt2, tokens, key_layer)[:-1]
    np.testing.assert_allclose(keys.astype(np.float32), ref, atol=2e-3, rtol=2e-3)


def test_long_sequence_keys_follow_the_window_plan(gpt2, token_ids):
    keys, vals = extract_keys(gpt2, token_ids, 32, 16, batch_size=3)
    np.testing.assert_array_equal(vals, token_ids[1:])
    plan = plan_windows(len(token_ids), 32, 16)
    expected = np.full(keys.shape, np.nan, dtype=np.float32)
    for start, row in zip(plan.starts, scored_mask(plan.first_scored, plan.length).numpy()):
        window = reference_keys(gpt2, token_ids[start:start + plan.length], "mlp_input")[:-1]
        expected[start + np.flatnonzero(row)] = window[row]
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(keys.astype(np.float32), expected, atol=2e-3, rtol=2e-3)


def small_profile(profile):
    profile = replace(profile, context_length=32, stride=16, batch_size=4)
    return profile


def test_build_equals_extract_and_is_reused(profile, gpt2, token_ids):
    profile = small_profile(profile)
    store = build_datastore(profile, gpt2, token_ids, "m", progress=False)
    keys, vals = extract_keys(gpt2, token_ids, 32, 16)
    np.testing.assert_array_equal(np.asarray(store.keys), keys)
    np.testing.assert_array_equal(np.asarray(store.vals), vals)
    mtime = (store.path / "keys.f16").stat().st_mtime_ns
    again = build_datastore(profile, gpt2, token_ids, "m", progress=False)
    assert (again.path / "keys.f16").stat().st_mtime_ns == mtime  # reused, not rebuilt
    profile = replace(profile, key_layer="final_hidden")
    changed = build_datastore(profile, gpt2, token_ids, "m", progress=False)
    assert changed.manifest["config"]["knobs"]["key_layer"] == "final_hidden"
    assert not np.array_equal(np.asarray(changed.keys), keys)


def test_interrupted_build_resumes_to_identical_files(profile, gpt2, token_ids, monkeypatch):
    profile = small_profile(profile)
    clean = build_datastore(profile, gpt2, token_ids, "m", progress=False)
    clean_bytes = (clean.path / "keys.f16").read_bytes()
    clean_vals = (clean.path / "vals.i32").read_bytes()
    profile = replace(profile, artifacts_dir=profile.artifacts_dir + "-2")
    calls = {"n": 0}
    block = gpt2.transformer.h[-1].mlp

    def die_after_three(module, args):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")

    handle = block.register_forward_pre_hook(die_after_three)
    with pytest.raises(KeyboardInterrupt):
        build_datastore(profile, gpt2, token_ids, "m", progress=False)
    handle.remove()
    with pytest.raises(ValueError, match="no finished datastore"):
        load_datastore(clean.path.parents[1].parent / "artifacts-2" / "tiny" / "datastore")
    counted = {"n": 0}
    handle = block.register_forward_pre_hook(lambda m, a: counted.__setitem__("n", counted["n"] + 1))
    resumed = build_datastore(profile, gpt2, token_ids, "m", progress=False)
    handle.remove()
    assert (resumed.path / "keys.f16").read_bytes() == clean_bytes
    assert (resumed.path / "vals.i32").read_bytes() == clean_vals
    assert sorted(p.name for p in resumed.path.iterdir()) == ["keys.f16", "manifest.json", "vals.i32"]
    total_batches = -(-plan_windows(len(token_ids), 32, 16).num_windows // 4)
    assert counted["n"] == total_batches - 3  # continued after the 3 finished batches


def test_truncated_keys_file_is_detected(profile, gpt2, token_ids):
    store = build_datastore(small_profile(profile), gpt2, token_ids, "m", progress=False)
    with open(store.path / "keys.f16", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(ValueError, match="truncated"):
        load_datastore(store.path)


def test_datastore_from_another_model_is_refused(profile, gpt2, token_ids):
    store = build_datastore(small_profile(profile), gpt2, token_ids, "model-a", progress=False)
    check_datastore_matches(store, "model-a", gpt2.config.n_embd)
    with pytest.raises(ValueError, match="rebuild"):
        check_datastore_matches(store, "model-b", gpt2.config.n_embd)


@pytest.mark.parametrize("bad", [float("nan"), 1e6])  # NaN, and a float16 overflow (inf)
def test_nan_and_inf_keys_are_refused(gpt2, token_ids, bad):
    with torch.no_grad():
        gpt2.transformer.h[-1].ln_2.weight[0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        extract_keys(gpt2, token_ids[:40], 32, 16)


def test_bad_arguments_are_refused_before_any_file_is_written(profile, gpt2, token_ids, tmp_path):
    profile = replace(small_profile(profile), context_length=128)  # > the model's 64 positions
    with pytest.raises(ValueError, match="context_length"):
        build_datastore(profile, gpt2, token_ids, "m", progress=False)
    assert not (tmp_path / "artifacts").exists()
    with pytest.raises(ValueError, match="vocabulary"):
        extract_keys(gpt2, np.array([1, 2, 1000]), 32, 16)
    with pytest.raises(ValueError, match="blocks"):
        key_module(torch.nn.Linear(2, 2), "mlp_input")
    with pytest.raises(ValueError, match="key_layer"):
        extract_keys(gpt2, token_ids, 32, 16, key_layer="attention_output")


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_llama_style_keys():
    """Llama layout: mlp_input is the output of the last block's post-attention norm."""
    model, tokens = tiny_llama(), np.arange(40) % 97
    seen = {}
    norm = model.model.layers[-1].post_attention_layernorm
    handle = norm.register_forward_hook(lambda m, a, out: seen.__setitem__("k", out))
    ids = torch.as_tensor(tokens)[None]
    with torch.no_grad():
        final = model(ids, output_hidden_states=True).hidden_states[-1][0, :-1].numpy()
    handle.remove()
    keys, _ = extract_keys(model, tokens, 64, 32, key_layer="mlp_input")
    np.testing.assert_allclose(keys.astype(np.float32), seen["k"][0, :-1].numpy(), atol=2e-3,
                               rtol=2e-3)
    keys, _ = extract_keys(model, tokens, 64, 32, key_layer="final_hidden")
    np.testing.assert_allclose(keys.astype(np.float32), final, atol=2e-3, rtol=2e-3)


def test_too_short_corpus_is_refused(gpt2):
    with pytest.raises(ValueError, match="shorter"):
        extract_keys(gpt2, np.array([5]), 32, 16)


def test_overwritten_keys_are_detected(profile, gpt2, token_ids):
    """Same size, other bytes (e.g. a second writer's zero rows): refused, never reused."""
    store = build_datastore(small_profile(profile), gpt2, token_ids, "m", progress=False)
    keys = np.memmap(store.path / "keys.f16", dtype=np.float16, mode="r+", shape=store.keys.shape)
    keys[10:20] = 0
    keys.flush()
    with pytest.raises(ValueError, match="keys.f16 was changed"):
        build_datastore(small_profile(profile), gpt2, token_ids, "m", progress=False)
