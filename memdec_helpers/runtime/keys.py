"""Datastore keys: the hidden state of the frozen base LM at every position, by a forward hook.

Key = the input of the last transformer block's MLP (after its LayerNorm), as in kNN-LM and the
Memory Decoder paper; `final_hidden` (the output of the final norm) is the alternative.
Value = the next token. The on-disk datastore (stages/datastore.py) streams the same batches.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

from ..core.windows import WindowSpec, as_token_array, window_batches
from ..profiles import KEY_LAYERS
from .batching import sized_window_batches
from .devices import autocast, autocast_dtype
from .models import (backbone, check_context_fits, check_finite, check_token_range, model_id,
                     run_device, transformer_blocks)


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


def check_key_args(model: Any, tokens: np.ndarray, spec: WindowSpec, key_layer: str) -> None:
    """Every argument of a key extraction checked before any forward pass or file write."""
    key_module(model, key_layer)
    check_context_fits(model, spec.context_length)
    check_token_range(model, tokens)
    window_batches(tokens, spec.context_length, spec.stride, spec.batch_size)  # the window knobs


def key_batches(model: Any, tokens: np.ndarray, spec: WindowSpec, *, key_layer: str,
                device: Any = None, progress: bool = False, start_window: int = 0
                ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(positions [n], keys float16 [n, d], windows done) of the scored positions of each batch
    of windows (the batch lowered to what memory holds)."""
    device = run_device(model, device)
    amp = autocast_dtype(device, spec.dtype)
    batches, _ = sized_window_batches(model, tokens, spec, "keys", device, progress=progress,
                                      desc="keys", start_window=start_window)
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


def keys_of(model: Any, token_ids: Any, spec: WindowSpec, *, key_layer: str = "mlp_input",
            device: Any = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """In memory: keys float16 [N-1, d] (hidden state at position i), vals int32 [N-1] = token[i+1]."""
    tokens = as_token_array(token_ids)
    check_key_args(model, tokens, spec, key_layer)
    keys = np.empty((len(tokens) - 1, key_dim(model)), dtype=np.float16)  # [N-1, d]
    for positions, batch_keys, _ in key_batches(model, tokens, spec, key_layer=key_layer,
                                                device=device, progress=progress):
        keys[positions] = batch_keys
    return keys, tokens[1:].astype(np.int32)


def extract_keys(model: Any, token_ids: Any, context_length: int, stride: int,
                 key_layer: str = "mlp_input", batch_size: int = 32, device: Any = None, *,
                 dtype: str = "auto", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """In memory: keys float16 [N-1, d] (hidden state at position i), vals int32 [N-1] =
    token[i+1], with sliding windows as in `token_logprobs` (the course's public signature;
    `keys_of` takes a WindowSpec)."""
    spec = WindowSpec(context_length, stride, batch_size, dtype)
    return keys_of(model, token_ids, spec, key_layer=key_layer, device=device, progress=progress)


def key_dim(model: Any) -> int:
    """Size of a key: the model's hidden size."""
    return int(getattr(model.config, "n_embd", None) or model.config.hidden_size)
