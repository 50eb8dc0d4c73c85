"""Training targets from one search: drop the query's own entry *by position*, keep the top m.

For datastore position i the query is keys[i]; its own entry (same position, distance 0) is
always in the datastore. Dropping "the first hit" blindly, as a naive first version and the
official code do, removes the wrong neighbour whenever another key ties with it.
"""
from __future__ import annotations

import numpy as np
import torch

from .knn import knn_distribution, top_m


def sparse_targets(distances: np.ndarray, tokens: np.ndarray, temperature: float,
                   m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-m of p_kNN per row: ids int32 [B, m], renormalized probs float32 [B, m], mass [B]."""
    ids, probs = knn_distribution(torch.from_numpy(distances), torch.from_numpy(tokens),
                                  temperature)  # [B, <=k]
    ids, probs = top_m(ids, probs.double(), m)
    mass = probs.sum(dim=1)  # [B]
    return ids.int().numpy(), (probs / mass[:, None]).float().numpy(), mass.float().numpy()


def drop_self(distances: np.ndarray, indices: np.ndarray,
              positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove from each row the neighbour whose datastore row is the query's own position
    (or the farthest one if it was not retrieved), leaving k of k+1: ([B, k], [B, k])."""
    own = indices == positions[:, None]  # [B, k+1], at most one True per row (ids are unique)
    keep = ~own
    keep[~own.any(axis=1), -1] = False  # self not retrieved (ties): drop the farthest instead
    rows, k = len(indices), indices.shape[1] - 1
    return distances[keep].reshape(rows, k), indices[keep].reshape(rows, k)
