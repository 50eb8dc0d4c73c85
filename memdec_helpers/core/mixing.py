"""Mixing two next-token distributions in log space, perplexity, and weight sweeps.

    log p = logaddexp(log(alpha) + log p_mem, log(1 - alpha) + log p_base)

Per-token log-probs are cached on disk by the stages, so every alpha / lambda sweep is a few
numpy operations on them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


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
