"""Evaluation: per-token log-probs with sliding windows, interpolation, perplexity, results table.

Per-token log-probs are cached on disk, so every alpha / lambda / temperature sweep afterwards is
a few numpy operations.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .artifacts import cached_array, check_stage_name, stage_dir
from .budget import sized_window_batches
from .devices import autocast, autocast_dtype
from .models import (check_context_fits, check_finite, check_token_range, model_id, run_device,
                     weights_fingerprint)
from .profiles import Profile
from .windows import as_token_array, tokens_hash


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
def token_logprobs(model: Any, token_ids: Any, context_length: int, stride: int,
                   batch_size: int = 32, device: str | torch.device | None = None,
                   progress: bool = False, dtype: str = "auto") -> np.ndarray:
    """float32 [N-1]: entry i = log p(token[i+1] | up to `context_length` preceding tokens)."""
    tokens = as_token_array(token_ids)
    check_context_fits(model, context_length)
    check_token_range(model, tokens)
    device = run_device(model, device)
    amp = autocast_dtype(device, dtype)
    batches, _ = sized_window_batches(model, tokens, context_length, stride, batch_size,
                                      "logprobs", device, amp, progress, "log-probs")
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


def _as_pair(base: Any, mem: Any) -> tuple[Any, Any, bool]:
    """Both as torch tensors (same dtype/device as a torch input) or both as float64 numpy."""
    if isinstance(base, torch.Tensor) or isinstance(mem, torch.Tensor):
        like = base if isinstance(base, torch.Tensor) else mem
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return (torch.as_tensor(base, dtype=dtype, device=like.device),
                torch.as_tensor(mem, dtype=dtype, device=like.device), True)
    return np.asarray(base, dtype=np.float64), np.asarray(mem, dtype=np.float64), False


def mix_logprobs(base_logprobs: Any, mem_logprobs: Any, alpha: float) -> Any:
    """log(alpha * e^mem + (1 - alpha) * e^base), elementwise and stable; numpy or torch.

    alpha = 0 returns the base values and alpha = 1 the memory values exactly; -inf entries
    (probability 0) are fine as long as the other component is not also 0 where it is weighted."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the weight of the memory component)")
    base, mem, is_torch = _as_pair(base_logprobs, mem_logprobs)
    if tuple(base.shape) != tuple(mem.shape):
        raise ValueError(f"base_logprobs shape {tuple(base.shape)} != mem_logprobs shape "
                         f"{tuple(mem.shape)}; both must score the same tokens")
    alpha = float(alpha)
    if alpha == 0.0:
        return base
    if alpha == 1.0:
        return mem
    log_a, log_1ma = float(np.log(alpha)), float(np.log1p(-alpha))
    if is_torch:
        return torch.logaddexp(mem + log_a, base + log_1ma)
    return np.logaddexp(mem + log_a, base + log_1ma)


LOGPROB_SLACK = 1e-5  # rounding can put a log-prob of (almost) 1 a hair above 0


def perplexity(token_logprobs: Any) -> float:
    """exp(-mean log-prob): the perplexity of the scored tokens (-inf entries give inf)."""
    if isinstance(token_logprobs, torch.Tensor):
        token_logprobs = token_logprobs.detach().cpu()
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.size == 0:
        raise ValueError("token_logprobs is empty; perplexity needs at least one scored token")
    if np.isnan(values).any():
        raise ValueError("token_logprobs contain NaN; the model or its precision is broken")
    if values.max() > LOGPROB_SLACK:
        raise ValueError(f"token_logprobs must be log-probabilities (<= 0); got values up to "
                         f"{values.max():.4g} (pass log p, not p or -log p)")
    return float(np.exp(-values.mean()))


def sweep(base_logprobs: Any, mem_logprobs: Any, grid: Sequence[float]) -> dict[str, Any]:
    """Perplexity of the mixture for every alpha in `grid` (the weight of `mem_logprobs`: the
    Memory Decoder's or kNN's), and the best."""
    grid = [float(a) for a in grid]
    if not grid:
        raise ValueError("grid is empty; give at least one mixing weight alpha in [0, 1]")
    ppls = [perplexity(mix_logprobs(base_logprobs, mem_logprobs, a)) for a in grid]
    best = int(np.argmin(ppls))
    return {"grid": grid, "ppl": ppls, "best": grid[best], "best_ppl": ppls[best]}


def cached_token_logprobs(profile: Profile, name: str, model: Any, token_ids: Any, split: str,
                          model_id: str, progress: bool = True) -> np.ndarray:
    """token_logprobs cached in `eval/<name>-<split>/`; recomputed when anything it hashes changed.

    The manifest hashes the model id and its weights, the split, the window knobs and the
    tokens, so sweeps over mixing weights reuse it, and a new corpus or a changed model
    recomputes it."""
    check_stage_name(name, "name")
    check_stage_name(split, "split")
    config = {"model_id": model_id, "weights": weights_fingerprint(model), "split": split,
              "tokens": tokens_hash(token_ids),
              **profile.subset("context_length", "stride", "dtype")}
    return cached_array(stage_dir(profile, "eval", f"{name}-{split}"), config,
                        lambda: token_logprobs(model, token_ids, profile.context_length,
                                               profile.stride, profile.batch_size,
                                               progress=progress, dtype=profile.dtype),
                        "logprobs.npy", n=len, perplexity=perplexity)
