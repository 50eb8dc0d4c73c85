"""The kNN datastore on disk: for every position of the domain corpus, a key (a hidden state of
the frozen base LM, runtime/keys.py) and a value (the next token).

On disk: raw memmaps `keys.f16` [N, d] and `vals.i32` [N], streamed batch by batch; an
interrupted build continues from its last finished batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.windows import as_token_array, tokens_hash
from ..profiles import Profile
from ..runtime.keys import check_key_args, key_batches, key_dim
from .store import (PROGRESS, atomic_write_json, open_memmap, read_manifest, resume_point,
                    stage_dir, stage_is_current, stage_lock, write_manifest)


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
