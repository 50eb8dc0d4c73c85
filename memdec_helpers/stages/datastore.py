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

from ..core.windows import WindowSpec, as_token_array, tokens_hash
from ..profiles import Profile
from ..runtime.keys import check_key_args, key_batches, key_dim
from .recipes import Recipe, window_knobs
from .store import open_memmap, read_manifest, stage_dir, stage_is_current, stage_lock
from .writer import StreamedWriter


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

    @property
    def key(self) -> str:
        """The datastore's recipe key (what the stages built from it record)."""
        return self.manifest["config_hash"]


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


def datastore_recipe_of(profile: Profile, tokens: np.ndarray, model_id: str,
                        label: str = "datastore") -> Recipe:
    """A datastore's recipe from the content of its inputs, for a direct call (the pipeline
    names the same stage by the profile alone: recipes.datastore_recipe)."""
    return Recipe("datastore", label, {**profile.subset("key_layer"), **window_knobs(profile)},
                  {"model": model_id, "tokens": tokens_hash(tokens)})


def build_datastore(profile: Profile, model: Any, token_ids: Any, model_id: str, *,
                    progress: bool = True, stage: str = "datastore",
                    recipe: Recipe | None = None) -> Datastore:
    """Stream keys/values of `token_ids` into memmaps in the folder of `recipe` (default: one
    named `stage` and keyed on the model id and the tokens); reused when its manifest matches;
    an interrupted build continues from its last finished batch on the next call. One process
    builds at a time: another one waits, then reuses the result."""
    tokens = as_token_array(token_ids)
    spec = WindowSpec.of(profile)
    check_key_args(model, tokens, spec, profile.key_layer)
    recipe = recipe or datastore_recipe_of(profile, tokens, model_id, stage)
    directory = stage_dir(profile, recipe.folder)
    with stage_lock(directory):
        if stage_is_current(directory, recipe.config()):
            return load_datastore(directory)
        n, d = len(tokens) - 1, key_dim(model)
        writer = StreamedWriter(directory, recipe.config(),
                                {KEYS: (np.float16, (n, d)), VALS: (np.int32, (n,))}, "windows_done")
        done = writer.start()
        writer[VALS][:] = tokens[1:]
        for positions, batch_keys, done in key_batches(model, tokens, spec,
                                                       key_layer=profile.key_layer,
                                                       progress=progress, start_window=done):
            writer[KEYS][positions] = batch_keys  # [n, d]
            writer.commit(done)
        writer.finish(n=n, dim=d, dtype="float16", model_id=model_id, key_layer=profile.key_layer,
                      context_length=profile.context_length, stride=profile.stride,
                      tokens=tokens_hash(tokens))
        return load_datastore(directory)
