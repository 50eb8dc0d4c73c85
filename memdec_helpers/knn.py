"""kNN next-token distributions: k neighbours vote for their next tokens with softmax(-d²/τ).

p_kNN(y | x) = Σ_{(k_i, v_i) ∈ N(x)} 1[v_i = y] · exp(-d(x, k_i)/τ) / Σ_j exp(-d(x, k_j)/τ)

Everything is vectorized over the batch: sort each row's tokens, sum the weights of equal tokens
with one scatter_add, return a sparse [B, m] distribution.
"""
from __future__ import annotations

from typing import Any, Sequence

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
    if (neighbor_tokens < 0).any():
        raise ValueError("neighbor_tokens contain negative ids (a failed search returns -1); "
                         "token ids must be >= 0")
    if distances.is_floating_point() and torch.isnan(distances).any():
        raise ValueError("distances contain NaN; the keys or queries are broken (rebuild them)")
    if (distances == torch.inf).all(dim=1).any():
        raise ValueError("a row of distances is all inf: every row needs one finite distance")


def neighbor_weights(distances: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(-d/τ) per row [B, k], stable for huge distances (inf counts as infinitely far)."""
    d = torch.nan_to_num(distances.double(), posinf=torch.finfo(torch.float64).max)
    return torch.softmax(-(d - d.min(dim=1, keepdim=True).values) / temperature, dim=1)


def knn_distribution(distances: torch.Tensor, neighbor_tokens: torch.Tensor,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse p_kNN per row: `token_ids` int64 [B, m], `probs` [B, m], sorted by probability.

    Each token appears once per row; a row with fewer than m distinct tokens is padded with
    probability exactly 0 and the smallest ids not in the row (so ids stay unique and valid)."""
    distances, neighbor_tokens = torch.as_tensor(distances), torch.as_tensor(neighbor_tokens)
    _check_inputs(distances, neighbor_tokens, temperature)
    weights = neighbor_weights(distances, temperature)  # [B, k]
    tokens, order = neighbor_tokens.long().sort(dim=1)  # [B, k]
    weights = weights.gather(1, order)
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[:, 1:] = tokens[:, 1:] != tokens[:, :-1]  # start of each run of equal tokens
    segment = first.long().cumsum(dim=1) - 1  # [B, k] run index
    summed = torch.zeros_like(weights).scatter_add_(1, segment, weights)  # [B, k]
    unique = torch.zeros_like(tokens).scatter_(1, segment, tokens)  # [B, k] sorted unique tokens
    n_unique = first.sum(dim=1, keepdim=True)  # [B, 1]
    m = int(n_unique.max())
    probs, by_prob = summed.sort(dim=1, descending=True, stable=True)
    ids = unique.gather(1, by_prob)[:, :m]
    probs = probs[:, :m]
    column = torch.arange(m)[None, :]
    is_pad = column >= n_unique  # [B, m]
    if is_pad.any():
        ids = torch.where(is_pad, _missing_ids(unique[:, :m], n_unique, column), ids)
        probs = probs.masked_fill(is_pad, 0.0)
    return ids, probs.to(distances.dtype if distances.is_floating_point() else torch.float32)


def _missing_ids(unique: torch.Tensor, n_unique: torch.Tensor,
                 column: torch.Tensor) -> torch.Tensor:
    """For padding column j of a row, the (j - n)-th smallest non-negative id not in the row.

    `unique` [B, w] holds each row's n sorted distinct ids first; gaps[j] = unique[j] - j counts
    the ids missing below unique[j], so the r-th missing id is r + #(gaps <= r)."""
    index = torch.arange(unique.shape[1])[None, :]
    gaps = torch.where(index < n_unique, unique - index, torch.iinfo(torch.long).max)  # sorted
    rank = (column - n_unique).clamp(min=0).expand_as(unique).contiguous()
    return rank + torch.searchsorted(gaps.contiguous(), rank, right=True)


def knn_token_logprobs(distances: Any, neighbor_tokens: Any, targets: Any,
                       temperature: float) -> np.ndarray:
    """log p_kNN(target) per query [Q]; -inf where the target is not among the neighbours."""
    distances, neighbor_tokens = torch.as_tensor(distances), torch.as_tensor(neighbor_tokens)
    _check_inputs(distances, neighbor_tokens, temperature)
    targets = torch.as_tensor(np.asarray(targets)).long()
    if targets.shape != distances.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must have one entry per query "
                         f"({distances.shape[0]})")
    d = torch.nan_to_num(distances.double(), posinf=torch.finfo(torch.float64).max)
    logits = -(d - d.min(dim=1, keepdim=True).values) / temperature  # [Q, k]
    hit = neighbor_tokens.long() == targets[:, None]
    hit_logits = logits.masked_fill(~hit, -torch.inf)
    return (torch.logsumexp(hit_logits, 1) - torch.logsumexp(logits, 1)).float().numpy()


def knn_lm_logprobs(index: Any, datastore_vals: np.ndarray, query_keys: np.ndarray,
                    next_tokens: np.ndarray, temperatures: Sequence[float], k: int,
                    progress: bool = False, batch_size: int = 4096) -> dict[float, np.ndarray]:
    """temperature -> per-token log p_kNN(next token) [Q]; one search per query batch serves
    every temperature, and only a batch's [b, k] neighbours are ever held in memory."""
    from tqdm import tqdm

    from .index import search

    temperatures = [float(t) for t in temperatures]
    if not temperatures or not min(temperatures) > 0:
        raise ValueError(f"temperatures={temperatures}: give at least one, all > 0")
    next_tokens = np.asarray(next_tokens)
    if len(query_keys) == 0 or len(query_keys) != len(next_tokens):
        raise ValueError(f"query_keys ({len(query_keys)}) and next_tokens ({len(next_tokens)}) "
                         "must be non-empty and have one entry per query")
    vals = np.asarray(datastore_vals)
    out = {t: np.empty(len(next_tokens), dtype=np.float32) for t in temperatures}
    for lo in tqdm(range(0, len(next_tokens), batch_size), desc="kNN-LM", disable=not progress):
        hi = min(lo + batch_size, len(next_tokens))
        distances, indices = search(index, query_keys[lo:hi], k)  # [b, k]
        tokens = vals[indices]  # [b, k]
        for t in temperatures:
            out[t][lo:hi] = knn_token_logprobs(distances, tokens, next_tokens[lo:hi], t)
    return out


def top_m(token_ids: torch.Tensor, probs: torch.Tensor,
          m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the m most probable entries of sorted sparse rows, padding (prob 0, unused ids) if
    a row has fewer; ids stay unique per row."""
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m={m!r} (target_top_m) must be an integer >= 1")
    if token_ids.shape[1] >= m:
        return token_ids[:, :m], probs[:, :m]
    have = token_ids.shape[1]
    unique = token_ids.sort(dim=1).values
    width = torch.arange(m)[None, :]
    extra = _missing_ids(torch.cat([unique, unique.new_zeros(len(unique), m - have)], 1),
                         torch.full((len(unique), 1), have), width)[:, have:]
    pad = probs.new_zeros(len(probs), m - have)  # [B, m - have]
    return torch.cat([token_ids, extra], 1), torch.cat([probs, pad], 1)
