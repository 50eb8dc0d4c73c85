"""Batch sizing: how many windows (or training sequences) one forward pass may take.

Every stage that runs a model asks `fit_batch` for its batch: the profile's batch size, lowered
until the estimated memory of one item times the batch fits what the device has free (GPU) or
half the available host memory (CPU). The estimates follow the model's shape:

- keys (backbone only, no gradients): a few [T, d] activations per window;
- log-probs: the same plus the [T, V] logits (fp16 under autocast);
- training: the activations kept for the backward pass, ~80 bytes per token per layer per
  unit of width in fp16 (34 for a block with a fused attention kernel, Korthikanti et al. 2022,
  plus GPT-2's tanh-GELU intermediates and dropout masks), plus the [T, V] logits, their
  float32 log-softmax and its gradient (~18 bytes per logit), on top of 16 bytes per parameter
  for weights, gradients and Adam's two moments.

The planner (planning/) uses the same rules to estimate a whole run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..core.windows import WindowSpec, as_token_array, plan_windows, window_batches
from ..progress import progress_bar
from .devices import autocast_dtype, available_bytes
LOGPROB_CHUNK_BYTES = 2**26 * 4 * 2  # scoring.target_logprobs' float32 upcast and its logsumexp
KINDS = ("keys", "logprobs", "train")


TRAIN_ACTIVATIONS = 40  # activations kept per token, layer and unit of width in training


@dataclass(frozen=True)
class ModelShape:
    """What the memory and FLOP estimates need to know about a causal LM."""

    layers: int
    width: int
    vocab: int
    params: int

    @classmethod
    def of(cls, model: Any) -> "ModelShape":
        """The shape of a GPT-2 or Llama-style Hugging Face model."""
        c = model.config
        layers = getattr(c, "n_layer", None) or c.num_hidden_layers
        width = getattr(c, "n_embd", None) or c.hidden_size
        params = sum(p.numel() for p in model.parameters())
        return cls(int(layers), int(width), int(c.vocab_size), int(params))

    @property
    def body_params(self) -> int:
        """Parameters outside the token embedding (what a token's matmuls touch)."""
        return max(self.params - self.vocab * self.width, 0)


def item_bytes(shape: ModelShape, length: int, kind: str, act_bytes: int = 2) -> int:
    """Estimated memory of one window of `length` tokens in a `kind` pass (see module doc)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}")
    tokens_width = length * shape.width
    if kind == "keys":
        return tokens_width * (16 * act_bytes + 8)
    logits = length * shape.vocab
    if kind == "logprobs":
        return tokens_width * (16 * act_bytes + 8) + logits * act_bytes
    return shape.layers * tokens_width * TRAIN_ACTIVATIONS * act_bytes + logits * (act_bytes + 16)


def fixed_bytes(shape: ModelShape, kind: str) -> int:
    """Memory a pass needs whatever its batch: optimizer state and gradients (training, the
    weights themselves are already placed), the float32 upcast chunk (log-probs)."""
    if kind == "train":
        return shape.params * (4 + 8 + 2)  # gradients, Adam moments, fp16 weight copies
    return LOGPROB_CHUNK_BYTES if kind == "logprobs" else 0


def fit_batch(requested: int, model: Any, length: int, kind: str, device: torch.device,
              act_bytes: int = 2) -> int:
    """The largest batch <= `requested` (>= 1) whose estimated memory fits the device."""
    shape = ModelShape.of(model)
    room = available_bytes(torch.device(device)) - fixed_bytes(shape, kind)
    per_item = item_bytes(shape, length, kind, act_bytes)
    return int(max(1, min(int(requested), room // per_item)))


def act_bytes_for(amp: torch.dtype | None) -> int:
    """Bytes per activation: 2 under fp16/bf16 autocast, 4 in float32."""
    return 4 if amp is None else 2


def sized_window_batches(model: Any, tokens: Any, spec: WindowSpec, kind: str,
                         device: torch.device, *, progress: bool = False, desc: str = "windows",
                         start_window: int = 0) -> tuple[Iterator, int]:
    """(window_batches with the spec's batch lowered to what memory holds, that batch size);
    the arguments are checked with the batch asked for, before any sizing."""
    tokens = as_token_array(tokens)  # once: window_batches below reuses it without a copy
    ctx, stride = spec.context_length, spec.stride
    window_batches(tokens, ctx, stride, spec.batch_size, start_window=start_window)
    length = min(int(ctx), len(tokens))
    amp = autocast_dtype(device, spec.dtype)
    fitted = fit_batch(spec.batch_size, model, length, kind, device, act_bytes_for(amp))
    batches = window_batches(tokens, ctx, stride, fitted, start_window=start_window)
    total = plan_windows(len(tokens), ctx, stride).num_windows
    return _counted(batches, total, start_window, desc, progress), fitted


def _counted(batches: Iterator, total: int, done: int, desc: str, progress: bool) -> Iterator:
    """The batches, with a progress bar counting their windows."""
    bar = progress_bar(total=total, initial=done, desc=desc, disable=not progress, unit="win")
    for batch in batches:
        yield batch
        bar.update(len(batch[0]))
    bar.close()
