"""Scoring text with a model: per-token log-probs and KL to kNN targets, with sliding windows."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.loss import sparse_kl
from ..core.windows import WindowSpec, as_token_array
from .batching import sized_window_batches
from .devices import autocast, autocast_dtype
from .models import check_context_fits, check_finite, check_token_range, model_id, run_device


FLOAT32_CHUNK = 2**26  # logits upcast to float32 at a time (256 MB), whatever the batch size


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[b, T] log-softmax of `logits` [b, T, V] at `targets` [b, T], in float32.

    Same as log_softmax(...).gather(...), without a [b, T, V] tensor of log-probs: the float32
    upcast is done a few windows at a time, so a 1024 x 50k-vocabulary batch of fp16 logits
    does not triple in memory."""
    rows = max(1, FLOAT32_CHUNK // max(1, logits.shape[1] * logits.shape[2]))
    out = []
    for lo in range(0, len(logits), rows):
        chunk = logits[lo:lo + rows].float()  # [c, T, V]
        lse = torch.logsumexp(chunk, dim=-1)  # [c, T]
        check_finite(lse, "logits")
        out.append(chunk.gather(-1, targets[lo:lo + rows, :, None]).squeeze(-1) - lse)  # [c, T]
    return torch.cat(out)  # [b, T]


@torch.inference_mode()
def score_tokens(model: Any, token_ids: Any, spec: WindowSpec, *,
                 device: str | torch.device | None = None, progress: bool = False) -> np.ndarray:
    """float32 [N-1]: entry i = log p(token[i+1] | up to `spec.context_length` preceding tokens),
    each token scored once by the spec's sliding windows."""
    tokens = as_token_array(token_ids)
    check_context_fits(model, spec.context_length)
    check_token_range(model, tokens)
    device = run_device(model, device)
    amp = autocast_dtype(device, spec.dtype)
    batches, _ = sized_window_batches(model, tokens, spec, "logprobs", device, progress=progress,
                                      desc="log-probs")
    out = np.empty(len(tokens) - 1, dtype=np.float32)  # [N-1]
    for ids, scored, positions in batches:
        ids = ids.to(device)  # [b, L]
        with autocast(device, amp):
            logits = model(ids, use_cache=False).logits[:, :-1]  # [b, L-1, V]
        try:
            target = target_logprobs(logits, ids[:, 1:]).cpu()  # [b, L-1]
        except ValueError as err:
            raise ValueError(f"model {model_id(model)}: {err}") from None
        out[positions[scored].numpy()] = target[scored].numpy()
    return out


def token_logprobs(model: Any, token_ids: Any, context_length: int, stride: int,
                   batch_size: int = 32, device: str | torch.device | None = None, *,
                   progress: bool = False, dtype: str = "auto") -> np.ndarray:
    """float32 [N-1]: entry i = log p(token[i+1] | up to `context_length` preceding tokens),
    each token scored exactly once with sliding windows of `context_length` advancing by
    `stride` (the course's public signature; `score_tokens` takes a WindowSpec)."""
    spec = WindowSpec(context_length, stride, batch_size, dtype)
    return score_tokens(model, token_ids, spec, device=device, progress=progress)


@torch.inference_mode()
def validation_kl(model: Any, token_ids: np.ndarray, targets: Any, spec: WindowSpec) -> float:
    """Mean KL(p_kNN ‖ p_Mem) over positions 0..N-2, each scored once with the same sliding
    windows as score_tokens and the keys (targets row i = position i)."""
    device = next(model.parameters()).device
    amp = autocast_dtype(device, spec.dtype)
    total, count = 0.0, 0
    batches, _ = sized_window_batches(model, np.asarray(token_ids), spec, "logprobs", device)
    for ids, scored, positions in batches:
        with autocast(device, amp):
            logits = model(ids.to(device), use_cache=False).logits[:, :-1]  # [b, L-1, V]
        rows = positions.numpy()  # [b, L-1] targets rows
        target_ids = torch.from_numpy(np.asarray(targets.ids[rows], dtype=np.int64)).to(device)
        target_probs = torch.from_numpy(np.asarray(targets.probs[rows], dtype=np.float32)).to(device)
        kl = sparse_kl(torch.log_softmax(logits.float(), -1), target_ids, target_probs)  # [b, L-1]
        total += float(kl[scored.to(device)].double().sum())
        count += int(scored.sum())
    return total / count
