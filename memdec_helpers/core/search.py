"""Exact nearest-neighbour search with torch: the keys on the GPU, chunked matmul + top-k.

Squared L2 = |k|² − 2 q·k + |q|², computed for a block of queries against a chunk of keys at a
time in the keys' dtype (fp16 on a GPU, where tensor cores do the matmul), the best
k + margin candidates of each chunk merged into a running top list, and the survivors re-ranked
with float32 distances. Results equal faiss's flat index (same neighbours up to ties, same
distances to float32 rounding); memory is the keys plus one [queries × chunk] score block.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCORE_ELEMENTS = 2**25  # scores per [query block × key chunk] (fp32: 128 MB; fp16 product: 64 MB)
QUERY_BLOCK = 2048  # queries per block
RERANK_ELEMENTS = 2**26  # gathered candidate key entries per re-rank step (float32: 256 MB)
UPLOAD_ROWS = 65_536  # keys copied to the device per step (bounded host memory)
FP16_DOT_LIMIT = 1024.0  # queries are scaled so every fp16 dot product stays below this


def key_bytes(n: float, d: int, value_bytes: int = 2) -> float:
    """Memory of `n` keys of size `d` held for exact search: the keys (fp16 by default) and their
    float32 squared norms. The one formula the runtime and the planner both use."""
    return n * (d * value_bytes + 4)


def candidate_count(k: int, n: int) -> int:
    """k plus a margin of candidates kept from the low-precision scores for the exact re-rank."""
    return min(n, k + max(32, k // 4))


class TorchFlatIndex:
    """A faiss-like exact L2 index (`d`, `ntotal`, `search(x, k)`) over keys held by torch.

    The keys (e.g. the datastore's fp16 memmap) are copied to `device` on the first search, a
    chunk at a time, and kept there: one copy per process (pipeline.index memoises it)."""

    def __init__(self, keys: np.ndarray, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, identity: str | None = None) -> None:
        if keys.ndim != 2 or len(keys) == 0:
            raise ValueError(f"keys must be a non-empty [N, d] array; got shape {keys.shape}")
        self.source = keys
        self.ntotal, self.d = (int(x) for x in keys.shape)
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.identity = identity  # what made the keys (a datastore's manifest hash), for manifests
        self.keys: torch.Tensor | None = None  # [N, d] on device
        self.norms: torch.Tensor | None = None  # [N] float32 |k|²

    @property
    def nbytes(self) -> int:
        """Device memory the keys and their norms take."""
        return int(key_bytes(self.ntotal, self.d, torch.finfo(self.dtype).bits // 8))

    def load(self) -> "TorchFlatIndex":
        """Copy the keys to the device (once) and compute their squared norms in float32."""
        if self.keys is None:
            keys = torch.empty((self.ntotal, self.d), dtype=self.dtype, device=self.device)
            norms = torch.empty(self.ntotal, dtype=torch.float32, device=self.device)
            for lo in range(0, self.ntotal, UPLOAD_ROWS):
                rows = np.array(self.source[lo:lo + UPLOAD_ROWS], dtype=np.float32)  # a copy
                chunk = torch.from_numpy(rows).to(self.device)  # [c, d] float32
                keys[lo:lo + len(chunk)] = chunk.to(self.dtype)
                norms[lo:lo + len(chunk)] = chunk.square().sum(1)
            self.keys, self.norms = keys, norms
            self.max_norm = float(norms.max().sqrt())
        return self

    def release(self) -> None:
        """Free the device copy (the next search copies the keys again)."""
        self.keys = self.norms = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared-L2 float32 [Q, k], ids int64 [Q, k]), nearest first, like faiss."""
        self.load()
        out_d = np.empty((len(queries), k), dtype=np.float32)
        out_i = np.empty((len(queries), k), dtype=np.int64)
        for lo in range(0, len(queries), QUERY_BLOCK):
            q = torch.as_tensor(np.asarray(queries[lo:lo + QUERY_BLOCK], dtype=np.float32))
            d, i = self._search_block(q.to(self.device), k)  # [b, k] each
            out_d[lo:lo + len(q)], out_i[lo:lo + len(q)] = d.cpu().numpy(), i.cpu().numpy()
        return out_d, out_i

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates from chunked low-precision scores, then the exact re-rank."""
        ids = self._candidates(q, candidate_count(k, self.ntotal))  # [b, c]
        return self._rerank(q, ids, k)

    def _candidates(self, q: torch.Tensor, count: int) -> torch.Tensor:
        """ids [b, count] of the smallest |k|² − 2 q·k (the |q|² term does not change order)."""
        scale = self._query_scale(q)
        qs = (q * scale).to(self.dtype)  # [b, d]
        chunk = max(count, SCORE_ELEMENTS // len(q))
        best_s = torch.empty((len(q), 0), dtype=torch.float32, device=self.device)
        best_i = torch.empty((len(q), 0), dtype=torch.int64, device=self.device)
        for lo in range(0, self.ntotal, chunk):
            dots = (qs @ self.keys[lo:lo + chunk].T).float()  # [b, c] in the keys' dtype
            scores = self.norms[lo:lo + chunk] - dots * (2.0 / scale)  # [b, c] float32
            s, i = scores.topk(min(count, scores.shape[1]), dim=1, largest=False)
            best_s, pick = torch.cat([best_s, s], 1).topk(
                min(count, best_s.shape[1] + s.shape[1]), dim=1, largest=False)
            best_i = torch.cat([best_i, i + lo], 1).gather(1, pick)
        return best_i

    def _query_scale(self, q: torch.Tensor) -> float:
        """1 in float32; in fp16, a factor that keeps every dot product below FP16_DOT_LIMIT."""
        if self.dtype == torch.float32:
            return 1.0
        q_max = float(q.norm(dim=1).max())
        return FP16_DOT_LIMIT / max(q_max * self.max_norm, 1e-6)

    def _rerank(self, q: torch.Tensor, ids: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact float32 squared distances |q|² + |k|² − 2 q·k of the candidates (as faiss
        computes them); the k nearest, sorted."""
        rows = max(1, RERANK_ELEMENTS // (ids.shape[1] * self.d))
        out_d, out_i = [], []
        for lo in range(0, len(q), rows):
            cand, qs = ids[lo:lo + rows], q[lo:lo + rows]  # [r, c], [r, d]
            keys = self.keys[cand].float()  # [r, c, d]
            dots = torch.bmm(keys, qs[:, :, None])[:, :, 0]  # [r, c]
            dist = (self.norms[cand] - 2 * dots + qs.square().sum(1, keepdim=True)).clamp_min(0)
            d, pick = dist.topk(k, dim=1, largest=False)  # [r, k], sorted ascending
            out_d.append(d)
            out_i.append(cand.gather(1, pick))
        return torch.cat(out_d), torch.cat(out_i)




def describe(index: Any) -> str:
    """One line about a torch index (for notebooks and logs)."""
    return (f"exact search on {index.device.type} ({str(index.dtype).split('.')[-1]} keys, "
            f"{index.nbytes / 2**30:.2f} GiB), {index.ntotal:,} keys of size {index.d}")


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Share of the exact k nearest neighbours that the approximate search also returned."""
    a, e = np.sort(approx_indices, axis=1), np.sort(exact_indices, axis=1)  # [Q, k]
    hits = (a[:, :, None] == e[:, None, :]).any(axis=2)  # [Q, k]
    return float(hits.mean())
