"""kNN next-token distributions: k neighbours vote for their next tokens with softmax(-d²/τ).

p_kNN(y | x) = Σ_{(k_i, v_i) ∈ N(x)} 1[v_i = y] · exp(-d(x, k_i)/τ) / Σ_j exp(-d(x, k_j)/τ)

Everything is vectorized over the batch: sort each row's tokens, sum the weights of equal tokens
with one scatter_add, sort the sums by probability and return a sparse [B, m] distribution.
No Python loop over rows or neighbours (benchmarks/speed.py compares it with one).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _check_inputs(distances: torch.Tensor, neighbor_tokens: torch.Tensor,
                  temperature: float) -> None:
    """ValueError (naming the argument and what is allowed) before any computation."""
    if not float(temperature) > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (it divides the distances)")
    if distances.ndim != 2 or distances.shape != neighbor_tokens.shape:
        raise ValueError(
            f"distances {tuple(distances.shape)} and neighbor_tokens "
            f"{tuple(neighbor_tokens.shape)} must both be [B, k] with the same shape"
        )
    if distances.numel() == 0:
        raise ValueError(f"distances {tuple(distances.shape)} is empty: need at least one query "
                         "(B >= 1) and at least one neighbour per query (k >= 1)")
    if neighbor_tokens.is_floating_point() or neighbor_tokens.dtype == torch.bool:
        raise ValueError(
            f"neighbor_tokens must hold integer token ids; got {neighbor_tokens.dtype}")
    if neighbor_tokens.min() < 0:
        raise ValueError("neighbor_tokens contain negative ids (a failed search returns -1); "
                         "token ids must be >= 0")
    nearest = distances.amin(dim=1)  # [B]; NaN (or -inf) anywhere in a row is its minimum
    if nearest.isnan().any():
        raise ValueError("distances contain NaN; the keys or queries are broken (rebuild them)")
    if (nearest == -torch.inf).any():
        raise ValueError("distances contain -inf; squared L2 distances must be >= 0 (inf is "
                         "allowed: weight 0)")
    if (nearest == torch.inf).any():
        raise ValueError("a row of distances is all inf: every row needs one finite distance")


def neighbor_logits(distances: torch.Tensor, temperature: float) -> torch.Tensor:
    """-(d - d_min)/τ per row [B, k] in float64: softmax(-d/τ) up to a constant, and <= 0, so
    huge distances stay finite and inf becomes -inf (weight 0)."""
    d = distances.double()  # float64: the weights of far neighbours keep their precision
    return (d.amin(dim=1, keepdim=True) - d) / temperature


def neighbor_weights(distances: torch.Tensor, temperature: float,
                     normalize: bool = True) -> torch.Tensor:
    """softmax(-d/τ) per row [B, k]; with normalize=False, exp(-(d - d_min)/τ) (the nearest
    weighs 1)."""
    weights = torch.exp(neighbor_logits(distances, temperature))  # [B, k] in [0, 1]
    return weights / weights.sum(dim=1, keepdim=True) if normalize else weights


def knn_distribution(distances: torch.Tensor, neighbor_tokens: torch.Tensor,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse p_kNN per row: `token_ids` int64 [B, m], `probs` [B, m], sorted by probability.

    Each token appears once per row; a row with fewer than m distinct tokens is padded with
    probability exactly 0 and the smallest ids not in the row (so ids stay unique and valid).
    Computed on the CPU, where search results live; returned on the input's device."""
    distances, neighbor_tokens = torch.as_tensor(distances), torch.as_tensor(neighbor_tokens)
    _check_inputs(distances, neighbor_tokens, temperature)
    device = distances.device
    distances, neighbor_tokens = distances.cpu(), neighbor_tokens.cpu()
    tokens, order = sort_rows(neighbor_tokens)  # [B, k] each row by token id
    weights = neighbor_weights(distances, temperature, normalize=False).gather(1, order)
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[:, 1:] = tokens[:, 1:] != tokens[:, :-1]  # start of each run of equal tokens
    segment = first.cumsum(dim=1) - 1  # [B, k] run index = column of the token in the output
    n_unique = segment[:, -1:] + 1  # [B, 1]
    m = int(n_unique.max())
    summed = torch.zeros_like(weights).scatter_add_(1, segment, weights)[:, :m]  # [B, m]
    unique = torch.zeros_like(tokens).scatter_(1, segment, tokens)[:, :m]  # sorted by id
    _, by_prob = sort_rows(_descending_key(summed))  # ties keep id order
    ids, probs = unique.gather(1, by_prob), summed.gather(1, by_prob)
    probs = probs / probs.sum(dim=1, keepdim=True)  # padding columns hold exactly 0
    is_pad = torch.arange(m)[None, :] >= n_unique  # [B, m]
    if is_pad.any():
        pad_rank = (torch.arange(m)[None, :] - n_unique).clamp(min=0)  # [B, m]
        ids = torch.where(is_pad, _missing_ids(neighbor_tokens, m).gather(1, pad_rank), ids)
    dtype = distances.dtype if distances.is_floating_point() else torch.float32
    return ids.to(device), probs.to(device, dtype)


def sort_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable ascending sort of each row of non-negative integers (token ids, int32 keys):
    (sorted int64 [B, k], their original columns [B, k]).

    One numpy sort of packed (value, column) keys: numpy's SIMD sort is several times faster
    than torch's on short rows, and the column in the low bits makes the sort stable."""
    k = values.shape[1]
    bits = max((k - 1).bit_length(), 1)
    dtype = np.int32 if int(values.max()) < 1 << (31 - bits) else np.int64
    key = values.numpy().astype(dtype) << bits  # [B, k]
    key |= np.arange(k, dtype=dtype)
    key.sort(axis=1)
    return (torch.from_numpy((key >> bits).astype(np.int64)),
            torch.from_numpy((key & ((1 << bits) - 1)).astype(np.int64)))


def _descending_key(probs: torch.Tensor) -> torch.Tensor:
    """Non-negative int32 keys that sort probabilities [B, m] in descending order (the bits of a
    non-negative float32 order like the float, so subtract them from those of inf)."""
    return 0x7F800000 - probs.float().view(torch.int32)


def _missing_ids(tokens: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` smallest non-negative ids absent from each row of `tokens` [B, k]: [B, count].

    They all lie below k + count, so a presence table of that width suffices; a stable sort puts
    the absent ids first, in increasing order."""
    width = tokens.shape[1] + count
    present = torch.zeros(len(tokens), width + 1, dtype=torch.int32)
    present.scatter_(1, tokens.long().clamp(max=width), 1)  # [B, width + 1], last column spare
    _, ids = sort_rows(present[:, :width])
    return ids[:, :count]


def knn_token_logprobs(distances: Any, neighbor_tokens: Any, targets: Any,
                       temperature: float) -> np.ndarray:
    """log p_kNN(target) per query [Q]; -inf where the target is not among the neighbours."""
    distances, neighbor_tokens = torch.as_tensor(distances), torch.as_tensor(neighbor_tokens)
    _check_inputs(distances, neighbor_tokens, temperature)
    targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must hold integer token ids; got {targets.dtype} (a float "
                         "array would be truncated to other tokens)")
    targets = torch.as_tensor(targets).long()
    if targets.shape != distances.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must have one entry per query "
                         f"({distances.shape[0]})")
    logits = neighbor_logits(distances, temperature)  # [Q, k]
    hit = neighbor_tokens.long() == targets[:, None]
    hit_logits = logits.masked_fill(~hit, -torch.inf)
    return (torch.logsumexp(hit_logits, 1) - torch.logsumexp(logits, 1)).float().numpy()


def top_m(token_ids: torch.Tensor, probs: torch.Tensor,
          m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the m most probable entries of sorted sparse rows, padding (prob 0, unused ids) if
    a row has fewer; ids stay unique per row."""
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m={m!r} (target_top_m) must be an integer >= 1")
    if token_ids.shape[1] >= m:
        return token_ids[:, :m], probs[:, :m]
    have = token_ids.shape[1]
    extra = _missing_ids(token_ids, m - have)  # [B, m - have]
    pad = probs.new_zeros(len(probs), m - have)
    return torch.cat([token_ids, extra], 1), torch.cat([probs, pad], 1)
