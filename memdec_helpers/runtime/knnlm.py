"""kNN-LM, the baseline Memory Decoder replaces: scoring held-out text and decoding. Every token
needs the base model's key for its position, a nearest-neighbour search and a kNN distribution:

    p(y | x) = α · p_kNN(y | x) + (1 − α) · p_LM(y | x)

(α is the paper's λ for kNN-LM.) The distribution math itself lives in core/knn.py; the search
in runtime/search.py; decoding reuses `generate`'s loop, checks and KV cache.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..core.knn import knn_distribution, knn_token_logprobs
from ..progress import progress_bar
from .generate import generate
from .keys import capture_keys
from .search import search


def knn_lm_grid(index: Any, datastore_vals: np.ndarray, query_keys: np.ndarray,
                next_tokens: np.ndarray, *, grid: Sequence[tuple[int, float]],
                progress: bool = False, batch_size: int = 4096) -> np.ndarray:
    """log p_kNN(next token) [len(grid), Q] for every (k, tau) of `grid`: one search per query
    batch with the largest k serves them all (the first k columns of a search are the k nearest,
    every tau re-weights the same distances); only a batch's neighbours are held in memory."""
    grid = [(int(k), float(t)) for k, t in grid]
    if not grid or min(t for _, t in grid) <= 0 or min(k for k, _ in grid) < 1:
        raise ValueError(f"grid={grid}: give at least one (k, tau), every k >= 1 and tau > 0")
    next_tokens = np.asarray(next_tokens)
    if len(query_keys) == 0 or len(query_keys) != len(next_tokens):
        raise ValueError(f"query_keys ({len(query_keys)}) and next_tokens ({len(next_tokens)}) "
                         "must be non-empty and have one entry per query")
    vals, widest = np.asarray(datastore_vals), max(k for k, _ in grid)
    out = np.empty((len(grid), len(next_tokens)), dtype=np.float32)  # [G, Q]
    for lo in progress_bar(range(0, len(next_tokens), batch_size), desc="kNN-LM",
                           disable=not progress):
        hi = min(lo + batch_size, len(next_tokens))
        distances, rows = search(index, query_keys[lo:hi], widest)  # [b, K], nearest first
        tokens = vals[rows]  # [b, K]
        for g, (k, t) in enumerate(grid):
            out[g, lo:hi] = knn_token_logprobs(distances[:, :k], tokens[:, :k], next_tokens[lo:hi], t)
    return out


def knn_lm_logprobs(index: Any, datastore_vals: np.ndarray, query_keys: np.ndarray,
                    next_tokens: np.ndarray, *, temperatures: Sequence[float], k: int,
                    progress: bool = False, batch_size: int = 4096) -> dict[float, np.ndarray]:
    """temperature -> per-token log p_kNN(next token) [Q] for one k (knn_lm_grid's one k)."""
    temperatures = [float(t) for t in temperatures]
    if not temperatures or not min(temperatures) > 0:
        raise ValueError(f"temperatures={temperatures}: give at least one, all > 0")
    scores = knn_lm_grid(index, datastore_vals, query_keys, next_tokens,
                         grid=[(k, t) for t in temperatures], progress=progress,
                         batch_size=batch_size)
    return dict(zip(temperatures, scores))


def knn_next_logprobs(keys: torch.Tensor, index: Any, vals: np.ndarray, k: int,
                      temperature: float, vocab_size: int) -> torch.Tensor:
    """log p_kNN over the whole vocabulary [B, V] for query keys [B, d] (-inf off the support)."""
    distances, rows = search(index, keys.float().cpu().numpy(), k)
    ids, probs = knn_distribution(torch.from_numpy(distances),
                                  torch.from_numpy(np.asarray(vals)[rows]), temperature)
    dense = torch.zeros(len(ids), vocab_size, dtype=torch.float64).scatter_add_(1, ids, probs.double())
    return dense.log().float()  # [B, V]


class KnnNextTokens:
    """p_kNN of the next token as a `generate.NextTokenSource`: the query is the key the base
    model's forward pass just captured (so generate must run the base model first)."""

    def __init__(self, keys: dict[str, torch.Tensor], index: Any, vals: np.ndarray, k: int,
                 temperature: float, vocab_size: int):
        self.keys, self.index, self.vals = keys, index, np.asarray(vals)
        self.k, self.temperature, self.vocab_size = k, temperature, vocab_size

    def start(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._next()

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        return self._next()

    def _next(self) -> torch.Tensor:
        return knn_next_logprobs(self.keys["keys"][:, -1], self.index, self.vals, self.k,
                                 self.temperature, self.vocab_size)  # [B, V]


def knn_lm_generate(base_model: Any, index: Any, vals: np.ndarray, input_ids: Any,
                    max_new_tokens: int, alpha: float, temperature: float, k: int,
                    key_layer: str = "mlp_input") -> torch.Tensor:
    """Greedy kNN-LM decoding: `generate` with p_kNN (one search per token) as the second
    distribution, weight `alpha` (the paper's λ), kNN temperature `temperature`."""
    with capture_keys(base_model, key_layer) as keys:
        knn = KnnNextTokens(keys, index, vals, k, temperature, base_model.config.vocab_size)
        return generate(base_model, knn, input_ids, max_new_tokens, alpha)
