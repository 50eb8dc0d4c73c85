"""The kNN datastore: for every position of the domain corpus, a key (a hidden state of the frozen
base LM) and a value (the next token).

Key = the input of the last transformer block's MLP (after its LayerNorm), as in kNN-LM and the
Memory Decoder paper; `final_hidden` (the output of the final norm) is the alternative.
On disk: raw memmaps `keys.f16` [N, d] and `vals.i32` [N], streamed batch by batch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .artifacts import (PROGRESS, atomic_write_json, open_memmap, read_manifest, resume_point,
                        stage_dir, stage_is_current, stage_lock, write_manifest)
from .budget import sized_window_batches
from .devices import autocast, autocast_dtype
from .models import (backbone, check_context_fits, check_finite, check_token_range, model_id,
                     run_device, transformer_blocks)
from .profiles import KEY_LAYERS, Profile
from .windows import as_token_array, tokens_hash, window_batches


def key_module(model: Any, key_layer: str) -> torch.nn.Module:
    """The module whose input (mlp_input: the last block's MLP) or output (final_hidden: the
    final norm) is the key; GPT-2 and Llama/Qwen/Mistral layouts."""
    if key_layer not in KEY_LAYERS:
        raise ValueError(f"key_layer={key_layer!r} is not supported; use one of {KEY_LAYERS}")
    body = backbone(model)
    final_norm = getattr(body, "ln_f", None) or getattr(body, "norm", None)
    try:
        blocks = transformer_blocks(model)
    except ValueError:
        blocks = None
    if blocks is None or final_norm is None or not hasattr(blocks[-1], "mlp"):
        raise ValueError(
            f"cannot find the transformer blocks of {type(model).__name__}: key_layer "
            f"{key_layer!r} supports GPT-2 style (transformer.h[-1].mlp, transformer.ln_f) and "
            "Llama/Qwen/Mistral style (model.layers[-1].mlp, model.norm) models"
        )
    return blocks[-1].mlp if key_layer == "mlp_input" else final_norm


@contextlib.contextmanager
def capture_keys(model: Any, key_layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Context in which every forward pass stores the key tensor [B, T, d] in box["keys"]."""
    module = key_module(model, key_layer)
    box: dict[str, torch.Tensor] = {}

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        box["keys"] = args[0] if args else next(iter(kwargs.values()))  # the MLP's input

    def after(module: torch.nn.Module, args: tuple, output: Any) -> None:
        box["keys"] = output[0] if isinstance(output, tuple) else output  # the final norm's output

    if key_layer == "mlp_input":
        handle = module.register_forward_pre_hook(before, with_kwargs=True)
    else:
        handle = module.register_forward_hook(after)
    try:
        yield box
    finally:
        handle.remove()


def check_key_args(model: Any, tokens: np.ndarray, context_length: int, stride: int,
                   key_layer: str, batch_size: int) -> None:
    """Every argument of a key extraction checked before any forward pass or file write."""
    key_module(model, key_layer)
    check_context_fits(model, context_length)
    check_token_range(model, tokens)
    window_batches(tokens, context_length, stride, batch_size)  # validates the window knobs


def key_batches(model: Any, tokens: np.ndarray, context_length: int, stride: int,
                key_layer: str, batch_size: int, device: Any = None, progress: bool = False,
                start_window: int = 0, dtype: str = "auto"
                ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(positions [n], keys float16 [n, d], windows done) of the scored positions of each batch
    of windows (the batch lowered to what memory holds)."""
    device = run_device(model, device)
    amp = autocast_dtype(device, dtype)
    batches, _ = sized_window_batches(model, tokens, context_length, stride, batch_size, "keys",
                                      device, amp, progress, "keys", start_window)
    body = backbone(model)  # no LM head: the keys do not need the [b, L, V] logits
    done = start_window
    with capture_keys(model, key_layer) as box:
        for ids, scored, positions in batches:
            with torch.inference_mode(), autocast(device, amp):
                body(input_ids=ids.to(device), use_cache=False)
            keys = box.pop("keys")[:, :-1]  # [b, L-1, d]: position j (predicting j+1)
            keys = keys[scored.to(keys.device)].to(torch.float16)  # [n, d]
            check_finite(keys, f"float16 keys of model {model_id(model)}")
            done += len(ids)
            yield positions[scored].numpy(), keys.cpu().numpy(), done


def extract_keys(model: Any, token_ids: Any, context_length: int, stride: int,
                 key_layer: str = "mlp_input", batch_size: int = 32, device: Any = None,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """In memory: keys float16 [N-1, d] (hidden state at position i), vals int32 [N-1] = token[i+1]."""
    tokens = as_token_array(token_ids)
    check_key_args(model, tokens, context_length, stride, key_layer, batch_size)
    keys = np.empty((len(tokens) - 1, key_dim(model)), dtype=np.float16)  # [N-1, d]
    for positions, batch_keys, _ in key_batches(model, tokens, context_length, stride, key_layer,
                                                batch_size, device, progress):
        keys[positions] = batch_keys
    return keys, tokens[1:].astype(np.int32)


@dataclass
class Datastore:
    """A finished datastore: keys[i] is the context ending at token i, vals[i] = token i + 1."""

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
    """Open a finished datastore read-only; a truncated or corrupted file raises ValueError."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"{path} holds no finished datastore (no manifest.json); build it first "
                         "with build_datastore")
    n, d = manifest["n"], manifest["dim"]
    return Datastore(path, open_memmap(path / KEYS, np.float16, (n, d)),
                     open_memmap(path / VALS, np.int32, (n,)), manifest)


def check_datastore_matches(datastore: Datastore, model_id: str, key_dim: int) -> None:
    """ValueError unless the datastore's keys come from `model_id` (same key space and size)."""
    built_with = datastore.manifest.get("model_id")
    if built_with != model_id or datastore.dim != key_dim:
        raise ValueError(
            f"the datastore at {datastore.path} was built with model {built_with!r} (key size "
            f"{datastore.dim}) but the model in use is {model_id!r} (key size {key_dim}); "
            "rebuild the datastore with the current model"
        )


def key_dim(model: Any) -> int:
    """Size of a key: the model's hidden size."""
    return int(getattr(model.config, "n_embd", None) or model.config.hidden_size)


KEYS, VALS = "keys.f16", "vals.i32"


def _part(name: str) -> str:
    return f".{name}.part"


def datastore_config(profile: Profile, tokens: np.ndarray, model_id: str) -> dict[str, Any]:
    """Everything the datastore's bytes depend on: the model, the tokens and the window knobs."""
    return {"model_id": model_id, "tokens": tokens_hash(tokens), "n_tokens": int(len(tokens)),
            **profile.subset("key_layer", "context_length", "stride", "dtype")}


def build_datastore(profile: Profile, model: Any, token_ids: Any, model_id: str,
                    progress: bool = True, stage: str = "datastore") -> Datastore:
    """Stream keys/values of `token_ids` into memmaps under `stage`; reused when its manifest
    matches; an interrupted build continues from its last finished batch on the next call.
    One process builds at a time: another one waits, then reuses the result."""
    tokens = as_token_array(token_ids)
    check_key_args(model, tokens, profile.context_length, profile.stride, profile.key_layer,
                   profile.batch_size)
    config = datastore_config(profile, tokens, model_id)
    directory = stage_dir(profile, stage)
    with stage_lock(directory):
        if stage_is_current(directory, config):
            return load_datastore(directory)
        n, d = len(tokens) - 1, key_dim(model)
        parts = {_part(KEYS): n * d * 2, _part(VALS): n * 4}
        done = resume_point(directory, {"config": config}, parts, "windows_done")
        _write_keys(directory, config, model, tokens, profile, done, progress)
        _finish(directory, config, n, d, model_id, profile)
        return load_datastore(directory)


def _write_keys(directory: Path, config: dict, model: Any, tokens: np.ndarray, profile: Profile,
                done: int, progress: bool) -> None:
    """Fill the .part memmaps window batch by window batch, from window `done` on."""
    mode = "r+" if done else "w+"
    keys = open_memmap(directory / _part(KEYS), np.float16, (len(tokens) - 1, key_dim(model)), mode)
    vals = open_memmap(directory / _part(VALS), np.int32, (len(tokens) - 1,), mode)
    vals[:] = tokens[1:]
    vals.flush()
    batches = key_batches(model, tokens, profile.context_length, profile.stride,
                          profile.key_layer, profile.batch_size, None, progress, done,
                          profile.dtype)
    for positions, batch_keys, done in batches:
        keys[positions] = batch_keys  # [n, d]
        keys.flush()  # bytes on disk before the progress file says so
        atomic_write_json(directory / PROGRESS, {"config": config, "windows_done": done})
    del keys, vals


def _finish(directory: Path, config: dict, n: int, d: int, model_id: str, profile: Profile) -> None:
    """Rename the complete files into place, drop the progress file, write the manifest last."""
    (directory / _part(KEYS)).rename(directory / KEYS)
    (directory / _part(VALS)).rename(directory / VALS)
    (directory / PROGRESS).unlink(missing_ok=True)
    write_manifest(directory, config, n=n, dim=d, dtype="float16", model_id=model_id,
                   key_layer=profile.key_layer, context_length=profile.context_length,
                   stride=profile.stride, tokens=config["tokens"])
