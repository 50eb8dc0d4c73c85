"""kNN-LM, the baseline Memory Decoder replaces: scoring held-out text and decoding. Every token
needs the base model's key for its position, a nearest-neighbour search and a kNN distribution:

    p(y | x) = α · p_kNN(y | x) + (1 − α) · p_LM(y | x)

(α is the paper's λ for kNN-LM.) The distribution math itself lives in `knn`; the search in
`index`; decoding reuses `generate`'s loop, checks and KV cache.
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


def knn_lm_logprobs(index: Any, datastore_vals: np.ndarray, query_keys: np.ndarray,
                    next_tokens: np.ndarray, temperatures: Sequence[float], k: int,
                    progress: bool = False, batch_size: int = 4096) -> dict[float, np.ndarray]:
    """temperature -> per-token log p_kNN(next token) [Q]; one search per query batch serves
    every temperature, and only a batch's [b, k] neighbours are ever held in memory."""
    temperatures = [float(t) for t in temperatures]
    if not temperatures or not min(temperatures) > 0:
        raise ValueError(f"temperatures={temperatures}: give at least one, all > 0")
    next_tokens = np.asarray(next_tokens)
    if len(query_keys) == 0 or len(query_keys) != len(next_tokens):
        raise ValueError(f"query_keys ({len(query_keys)}) and next_tokens ({len(next_tokens)}) "
                         "must be non-empty and have one entry per query")
    vals = np.asarray(datastore_vals)
    out = {t: np.empty(len(next_tokens), dtype=np.float32) for t in temperatures}
    for lo in progress_bar(range(0, len(next_tokens), batch_size), desc="kNN-LM",
                           disable=not progress):
        hi = min(lo + batch_size, len(next_tokens))
        distances, indices = search(index, query_keys[lo:hi], k)  # [b, k]
        tokens = vals[indices]  # [b, k]
        for t in temperatures:
            out[t][lo:hi] = knn_token_logprobs(distances, tokens, next_tokens[lo:hi], t)
    return out


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
