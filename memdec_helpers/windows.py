"""Sliding windows: score every token of a long sequence exactly once with bounded context.

Windows of `context_length` tokens advance by `stride`; each window scores only the positions no
earlier window scored, so every scored position sees at least `context_length - stride` tokens
of context (the standard 1024/512 evaluation). Keys and log-probs use the same plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class WindowPlan:
    starts: np.ndarray  # [W] first token of each window
    first_scored: np.ndarray  # [W] offset inside the window of its first scored position
    length: int  # tokens per window (all windows have the same length)

    @property
    def num_windows(self) -> int:
        return len(self.starts)


def plan_windows(num_tokens: int, context_length: int, stride: int) -> WindowPlan:
    """Plan for scoring positions 0..N-2 (position p predicts token p+1) exactly once."""
    if num_tokens < 2:
        raise ValueError(
            f"the token sequence has {num_tokens} token(s); at least 2 are needed to score one "
            "next token (the corpus is empty or shorter than one window: use a longer text)"
        )
    if context_length < 2 or not 0 < stride <= context_length:
        raise ValueError(
            f"context_length={context_length}, stride={stride}: need context_length >= 2 and "
            "0 < stride <= context_length"
        )
    length = min(context_length, num_tokens)
    step = min(stride, length - 1)  # windows overlap by >= 1 token so no boundary is skipped
    starts = list(range(0, num_tokens - length, step)) + [num_tokens - length]
    starts = np.unique(np.asarray(starts, dtype=np.int64))
    # window w scores input positions [max(start_w, end_{w-1} - 1), start_w + length - 1)
    prev_end = np.concatenate([[0], starts[:-1] + length])
    first_scored = np.maximum(prev_end - 1, starts) - starts
    first_scored[0] = 0
    return WindowPlan(starts=starts, first_scored=first_scored, length=length)


def gather_windows(tokens: torch.Tensor, starts: np.ndarray, length: int) -> torch.Tensor:
    """[W, length] windows of a 1-D token tensor, in one indexing op."""
    index = torch.as_tensor(starts)[:, None] + torch.arange(length)[None, :]  # [W, L]
    return tokens[index]


def scored_mask(first_scored: np.ndarray, length: int) -> torch.Tensor:
    """[W, length-1] True where window w scores position offset j (predicting offset j+1)."""
    offsets = torch.arange(length - 1)[None, :]  # [1, L-1]
    return offsets >= torch.as_tensor(first_scored)[:, None]


def window_batches(token_ids: np.ndarray, context_length: int, stride: int, batch_size: int,
                   progress: bool = False, desc: str = "windows"):
    """Yield (input_ids [b, L], scored [b, L-1] bool, positions [b, L-1]) batches of windows.

    positions[w, j] is the global index of the position at offset j: the entry it fills in a
    length N-1 output (position p predicts token p+1)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    tokens = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
    plan = plan_windows(len(tokens), context_length, stride)
    offsets = torch.arange(plan.length - 1)[None, :]  # [1, L-1]
    bar = tqdm(total=plan.num_windows, desc=desc, disable=not progress, unit="win")
    for lo in range(0, plan.num_windows, batch_size):
        starts = plan.starts[lo: lo + batch_size]
        ids = gather_windows(tokens, starts, plan.length)  # [b, L]
        scored = scored_mask(plan.first_scored[lo: lo + batch_size], plan.length)  # [b, L-1]
        positions = torch.as_tensor(starts)[:, None] + offsets  # [b, L-1]
        yield ids, scored, positions
        bar.update(len(starts))
    bar.close()
