"""kNN-LM decoding: the baseline Memory Decoder replaces. Every generated token needs the base
model's key for the new position, a nearest-neighbour search and a kNN distribution:

    p(y | x) = λ · p_kNN(y | x) + (1 − λ) · p_LM(y | x)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .datastore import capture_keys
from .evaluate import mix_logprobs
from .generate import CachedLM
from .index import search
from .knn import knn_distribution


def knn_next_logprobs(keys: torch.Tensor, index: Any, vals: np.ndarray, k: int,
                      temperature: float, vocab_size: int) -> torch.Tensor:
    """log p_kNN over the whole vocabulary [B, V] for query keys [B, d] (-inf off the support)."""
    distances, rows = search(index, keys.float().cpu().numpy(), k)
    ids, probs = knn_distribution(torch.from_numpy(distances),
                                  torch.from_numpy(np.asarray(vals)[rows]), temperature)
    dense = torch.zeros(len(ids), vocab_size, dtype=torch.float64).scatter_add_(1, ids, probs.double())
    return dense.log().float()  # [B, V]


@torch.inference_mode()
def knn_lm_generate(base_model: Any, index: Any, vals: np.ndarray, input_ids: torch.Tensor,
                    max_new_tokens: int, lam: float, temperature: float, k: int,
                    key_layer: str = "mlp_input") -> torch.Tensor:
    """Greedy kNN-LM decoding with the base model's KV cache and one search per token."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam} must be in [0, 1] (the kNN distribution's weight)")
    ids = torch.as_tensor(input_ids)
    ids = (ids[None] if ids.ndim == 1 else ids).to(next(base_model.parameters()).device)
    lm = CachedLM(base_model)
    vocab = base_model.config.vocab_size
    with capture_keys(base_model, key_layer) as box:
        base_lp = lm.start(ids)
        for _ in range(max_new_tokens):
            knn_lp = knn_next_logprobs(box["keys"][:, -1], index, vals, k, temperature, vocab)
            next_ids = mix_logprobs(base_lp, knn_lp.to(base_lp.device), lam).argmax(-1)
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            base_lp = lm.step(next_ids)
    return ids
