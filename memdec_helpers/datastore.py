"""The kNN datastore: for every position of the domain corpus, a key (a hidden state of the frozen
base LM) and a value (the next token).

Key = the input of the last transformer block's MLP (after its LayerNorm), as in kNN-LM and the
Memory Decoder paper; `final_hidden` (the output of the final norm) is the alternative.
On disk: raw memmaps `keys.f16` [N, d] and `vals.i32` [N], streamed batch by batch.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .artifacts import (atomic_write_json, clear_stage, open_memmap, read_manifest, stage_dir,
                        stage_is_current, write_manifest)
from .devices import autocast, autocast_dtype, resolve_device
from .evaluate import check_context_fits, check_finite, tokens_hash
from .windows import plan_windows, window_batches

KEY_LAYERS = ("mlp_input", "final_hidden")


def key_module(model: Any, key_layer: str) -> tuple[torch.nn.Module, str]:
    """(module, "input"|"output") whose tensor is the key: GPT-2 and Llama/Qwen/Mistral layouts."""
    if key_layer not in KEY_LAYERS:
        raise ValueError(f"key_layer={key_layer!r}: use one of {KEY_LAYERS}")
    body = getattr(model, "transformer", None) or getattr(model, "model", None)
    blocks = getattr(body, "h", None) or getattr(body, "layers", None)
    final_norm = getattr(body, "ln_f", None) or getattr(body, "norm", None)
    if blocks is None or final_norm is None:
        raise ValueError(
            f"cannot find the transformer blocks of {type(model).__name__}: supported are GPT-2 "
            "style (transformer.h, transformer.ln_f) and Llama/Qwen/Mistral style (model.layers, "
            "model.norm) models"
        )
    if key_layer == "mlp_input":
        return blocks[-1].mlp, "input"
    return final_norm, "output"


@contextlib.contextmanager
def capture_keys(model: Any, key_layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Context in which every forward pass stores the key tensor [B, T, d] in box["keys"]."""
    module, where = key_module(model, key_layer)
    box: dict[str, torch.Tensor] = {}
    if where == "input":
        handle = module.register_forward_pre_hook(lambda m, args: box.__setitem__("keys", args[0]))
    else:
        handle = module.register_forward_hook(lambda m, args, out: box.__setitem__("keys", out))
    try:
        yield box
    finally:
        handle.remove()


def key_batches(model: Any, token_ids: np.ndarray, context_length: int, stride: int,
                key_layer: str, batch_size: int, device: Any, progress: bool):
    """Yield (positions [n], keys float16 [n, d]) for the scored positions of each window batch."""
    check_context_fits(model, context_length)
    device = resolve_device(device or next(model.parameters()).device)
    amp = autocast_dtype(device)
    with capture_keys(model, key_layer) as box, torch.inference_mode():
        for ids, scored, positions in window_batches(token_ids, context_length, stride, batch_size,
                                                     progress, desc="keys"):
            with autocast(device, amp):
                model(ids.to(device))
            keys = box["keys"][:, :-1].float()  # [b, L-1, d]: position j's key predicts j+1
            check_finite(keys, "keys")
            yield positions[scored].numpy(), keys[scored.to(keys.device)].half().cpu().numpy()


def extract_keys(model: Any, token_ids: np.ndarray, context_length: int, stride: int,
                 key_layer: str = "mlp_input", batch_size: int = 32, device: Any = None,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """In memory: keys float16 [N-1, d] (hidden state at position i), vals int32 [N-1] = token[i+1]."""
    token_ids = np.asarray(token_ids)
    keys = None
    for positions, batch_keys in key_batches(model, token_ids, context_length, stride, key_layer,
                                             batch_size, device, progress):
        if keys is None:
            keys = np.empty((len(token_ids) - 1, batch_keys.shape[1]), dtype=np.float16)
        keys[positions] = batch_keys
    return keys, np.asarray(token_ids[1:], dtype=np.int32)


@dataclass
class Datastore:
    path: Path
    keys: np.ndarray  # [N, d] float16 memmap
    vals: np.ndarray  # [N] int32 memmap
    manifest: dict

    def __len__(self) -> int:
        return len(self.vals)

    @property
    def dim(self) -> int:
        return self.keys.shape[1]


def load_datastore(path: str | Path) -> Datastore:
    """Open a finished datastore; a truncated or corrupted file raises ValueError."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"{path} holds no finished datastore (no manifest.json); build it first")
    n, d = manifest["n"], manifest["dim"]
    return Datastore(path, open_memmap(path / "keys.f16", np.float16, (n, d)),
                     open_memmap(path / "vals.i32", np.int32, (n,)), manifest)


def check_datastore_matches(datastore: Datastore, model_id: str, key_dim: int) -> None:
    """The datastore must come from the model now in use (same keys space)."""
    built_with = datastore.manifest.get("model_id")
    if built_with != model_id or datastore.dim != key_dim:
        raise ValueError(
            f"the datastore at {datastore.path} was built with model {built_with!r} (key size "
            f"{datastore.dim}) but the model in use is {model_id!r} (key size {key_dim}); "
            "rebuild the datastore with the current model"
        )


def key_dim(model: Any) -> int:
    return int(getattr(model.config, "n_embd", None) or model.config.hidden_size)


def build_datastore(profile: Any, model: Any, token_ids: np.ndarray, model_id: str,
                    progress: bool = True, stage: str = "datastore") -> Datastore:
    """Stream keys/values of `token_ids` into memmaps; resumable; reused when the config matches."""
    token_ids = np.asarray(token_ids)
    plan = plan_windows(len(token_ids), profile.context_length, profile.stride)  # validates early
    config = {"model_id": model_id, "tokens": tokens_hash(token_ids), "n_tokens": len(token_ids),
              **profile.subset("key_layer", "context_length", "stride")}
    directory = stage_dir(profile, stage)
    if stage_is_current(directory, config):
        return load_datastore(directory)
    n, d = len(token_ids) - 1, key_dim(model)
    done = _resume_point(directory, config)
    keys = open_memmap(directory / ".keys.f16.part", np.float16, (n, d), mode="r+" if done else "w+")
    vals = open_memmap(directory / ".vals.i32.part", np.int32, (n,), mode="r+" if done else "w+")
    vals[:] = token_ids[1:]
    batch = profile.batch_size
    remaining = token_ids[int(plan.starts[done]):] if done else token_ids
    # resume: re-plan the rest from the first unfinished window (its positions are absolute)
    offset = int(plan.starts[done]) if done else 0
    skip_first = int(plan.first_scored[done]) if done else 0
    windows_done = done
    for positions, batch_keys in key_batches(model, remaining, profile.context_length,
                                             profile.stride, profile.key_layer, batch, None,
                                             progress):
        keep = positions >= skip_first
        keys[positions[keep] + offset] = batch_keys[keep]
        keys.flush()
        windows_done += batch
        _save_progress(directory, config, min(windows_done, plan.num_windows))
    del keys, vals
    (directory / ".keys.f16.part").rename(directory / "keys.f16")
    (directory / ".vals.i32.part").rename(directory / "vals.i32")
    (directory / ".progress.json").unlink(missing_ok=True)
    write_manifest(directory, config, n=n, dim=d, dtype="float16", model_id=model_id,
                   key_layer=profile.key_layer, num_windows=plan.num_windows)
    return load_datastore(directory)


def _resume_point(directory: Path, config: dict) -> int:
    """Windows already written by an interrupted build with this config (else clear and 0)."""
    progress = directory / ".progress.json"
    if progress.exists():
        state = json.loads(progress.read_text())
        if state.get("config") == config and (directory / ".keys.f16.part").exists():
            return int(state["windows_done"])
    clear_stage(directory)
    return 0


def _save_progress(directory: Path, config: dict, windows_done: int) -> None:
    atomic_write_json(directory / ".progress.json", {"config": config, "windows_done": windows_done})
