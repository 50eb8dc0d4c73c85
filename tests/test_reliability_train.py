"""Reliability of training runs (issue 21): a flipped byte in the trained weights or in a
checkpoint is found before it is reused or resumed from."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import make_gpt2
from test_train import L, fake_targets, interrupted_run
from memdec_helpers.stages.training import train_memory_decoder


@pytest.fixture
def setup(profile, token_ids):
    profile = replace(profile, context_length=L, stride=8, batch_size=8, train_batch_size=4,
                      train_steps=12, warmup_steps=3, eval_every=4, learning_rate=3e-3,
                      memdec_init="scratch")
    return profile, token_ids, fake_targets(token_ids)


def flip_inside(path, needle: bytes) -> None:
    """Flip the lowest bit of one byte in the middle of `needle`, found in the file's bytes (a
    tensor's data: the file still loads, with one value changed)."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0
    data[at + len(needle) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def weights_bytes(model) -> bytes:
    return model.lm_head.weight.detach().numpy().astype(np.float32).tobytes()[:64]


def test_a_flipped_byte_in_the_trained_weights_is_an_error(setup, tmp_path):
    """The run's manifest vouched for top-level files only: damaged model/ weights were reused."""
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    model, _ = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "model/model.safetensors" in manifest["files"]
    assert not any(name.startswith("checkpoint/") for name in manifest["files"])
    flip_inside(tmp_path / "model" / "model.safetensors", weights_bytes(model))
    with pytest.raises(ValueError, match=r"model\.safetensors was changed.*delete the folder"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)


def test_a_run_whose_manifest_does_not_vouch_for_its_weights_is_trained_again(setup, tmp_path):
    profile, tokens, targets = setup
    profile = replace(profile, train_steps=4)
    train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())  # as an older manifest: top-level files only
    for key in ("files", "file_sha256", "file_sample_sha256"):
        manifest[key] = {k: v for k, v in manifest.get(key, {}).items() if "/" not in k}
    path.write_text(json.dumps(manifest))
    steps = []
    train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path, progress=False,
                         callback=steps.append)
    assert len(steps) == 4


def checkpoint_tensor_bytes(run) -> dict:
    """Bytes of one optimizer tensor and one weight, as stored in the run's checkpoint."""
    state = torch.load(run / "checkpoint" / "training_state.pt", weights_only=True)
    exp_avg = next(iter(state["optimizer"]["state"].values()))["exp_avg"]
    from safetensors.torch import load_file

    weight = load_file(run / "checkpoint" / "model.safetensors")["transformer.wte.weight"]
    return {"training_state.pt": exp_avg.numpy().tobytes()[:64],
            "model.safetensors": weight.numpy().tobytes()[:64]}


@pytest.mark.parametrize("damaged", ["training_state.pt", "model.safetensors"])
def test_a_flipped_byte_in_a_checkpoint_is_not_resumed(setup, tmp_path, damaged):
    """One flipped byte in an optimizer tensor or a weight loaded fine and was resumed from,
    silently, with different final weights; the checkpoint's state.json now records the
    sha256 of every file, checked before any tensor is loaded."""
    profile, tokens, targets = setup
    _, full = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=tmp_path / "a",
                                   progress=False)
    run = tmp_path / "b"
    interrupted_run(profile, tokens, targets, run)
    flip_inside(run / "checkpoint" / damaged, checkpoint_tensor_bytes(run)[damaged])
    steps = []
    with pytest.warns(UserWarning, match=f"damaged.*{damaged}.*from scratch"):
        _, history = train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run,
                                          progress=False, callback=steps.append)
    assert [s["step"] for s in steps] == list(range(1, 13))  # not resumed at step 9
    np.testing.assert_allclose([s["loss"] for s in history["steps"]],
                               [s["loss"] for s in full["steps"]], rtol=0, atol=1e-5)


def test_an_edited_checkpoint_state_is_not_resumed(setup, tmp_path):
    profile, tokens, targets = setup
    run = tmp_path / "b"
    interrupted_run(profile, tokens, targets, run)
    path = run / "checkpoint" / "state.json"
    path.write_text(path.read_text().replace('"step": 8', '"step": 9'))
    steps = []
    with pytest.warns(UserWarning, match="damaged.*state.json"):
        train_memory_decoder(profile, make_gpt2(), tokens, targets, out_dir=run, progress=False,
                             callback=steps.append)
    assert steps[0]["step"] == 1
