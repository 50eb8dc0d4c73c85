"""Sliding windows: score every token of a long sequence exactly once with bounded context.

Windows of `context_length` tokens advance by `stride`; each window scores only the positions no
earlier window scored, so every scored position sees at least `context_length - stride` tokens
of context (the standard 1024/512 evaluation). Keys and log-probs use the same plan.

Position p is the input token p; it "predicts" token p + 1. A sequence of N tokens has N - 1
positions to score, 0 .. N-2, and every output of this plan (log-probs, keys) has length N - 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from .hashing import array_hash


@dataclass(frozen=True)
class WindowSpec:
    """How every forward pass walks a token stream: windows of `context_length` tokens advancing
    by `stride`, `batch_size` windows per pass (lowered to what memory holds), computed in
    `dtype` (autocast on a GPU; "auto": bf16 where native, else fp16). One object, so no pass
    can forget a knob."""

    context_length: int
    stride: int
    batch_size: int = 32
    dtype: str = "auto"

    @classmethod
    def of(cls, profile: Any) -> "WindowSpec":
        """The spec a profile's knobs describe."""
        return cls(profile.context_length, profile.stride, profile.batch_size, profile.dtype)


@dataclass
class WindowPlan:
    """Where the windows start and which of their positions each one scores."""

    starts: np.ndarray  # [W] int64, first token of each window
    first_scored: np.ndarray  # [W] int64, offset inside the window of its first scored position
    length: int  # tokens per window (all windows have the same length)

    @property
    def num_windows(self) -> int:
        return len(self.starts)


def as_token_array(token_ids: Any, name: str = "token_ids") -> np.ndarray:
    """Token ids (numpy, torch or a list) as a 1-D int64 numpy array; ValueError otherwise."""
    if isinstance(token_ids, torch.Tensor):
        token_ids = token_ids.detach().cpu().numpy()
    array = np.asarray(token_ids)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids; got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids; got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def tokens_hash(token_ids: Any) -> str:
    """A short hash of a token sequence: the identity of an input corpus in manifests."""
    return array_hash(as_token_array(token_ids))


def check_window_args(num_tokens: int, context_length: int, stride: int) -> None:
    """ValueError for a sequence or window knobs the plan cannot serve."""
    if num_tokens < 2:
        raise ValueError(
            f"the token sequence has {num_tokens} token(s): the corpus is shorter than the 2 "
            "tokens needed to score one next token; use a longer text (or a larger "
            "max_train_tokens / max_eval_tokens)"
        )
    if int(context_length) != context_length or context_length < 2:
        raise ValueError(f"context_length={context_length} must be an integer >= 2")
    if int(stride) != stride or not 0 < stride <= context_length:
        raise ValueError(
            f"stride={stride} must be an integer with 0 < stride <= context_length "
            f"(= {context_length})"
        )


def plan_windows(num_tokens: int, context_length: int, stride: int) -> WindowPlan:
    """Plan for scoring positions 0..N-2 (position p predicts token p+1) exactly once.

    N >= L: full windows at 0, S, 2S, ... while start + L < N, then one ending at the last token.
    N < L: one window of N tokens. With S = L the step is L - 1: window w's last input token
    would otherwise be scored by nobody (it is the first, context-only token of window w + 1).
    """
    check_window_args(num_tokens, context_length, stride)
    length = min(int(context_length), int(num_tokens))
    step = min(int(stride), length - 1)
    starts = np.unique(np.append(np.arange(0, num_tokens - length, step), num_tokens - length))
    # window w scores positions [max(start_w, end_{w-1} - 1), start_w + length - 1)
    prev_end = np.concatenate([[0], starts[:-1] + length])  # [W]
    first_scored = np.maximum(prev_end - 1, starts) - starts  # [W]
    first_scored[0] = 0
    return WindowPlan(starts=starts.astype(np.int64), first_scored=first_scored.astype(np.int64),
                      length=length)


def gather_windows(tokens: torch.Tensor, starts: np.ndarray, length: int) -> torch.Tensor:
    """[W, length] windows of a 1-D token tensor, in one indexing op."""
    index = torch.as_tensor(starts)[:, None] + torch.arange(length)[None, :]  # [W, L]
    return tokens[index]


def scored_mask(first_scored: np.ndarray, length: int) -> torch.Tensor:
    """[W, length-1] True where window w scores position offset j (predicting offset j+1)."""
    offsets = torch.arange(length - 1)[None, :]  # [1, L-1]
    return offsets >= torch.as_tensor(first_scored)[:, None]


def window_batches(token_ids: Any, context_length: int, stride: int, batch_size: int, *,
                   start_window: int = 0
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches (input_ids [b, L], scored [b, L-1] bool, positions [b, L-1]) of the plan's windows.

    positions[w, j] is the global index of the position at offset j: the entry it fills in a
    length N-1 output. `start_window` skips the first windows (resuming a build). Arguments are
    checked here, before the first batch is asked for."""
    tokens = torch.as_tensor(as_token_array(token_ids))
    plan = plan_windows(len(tokens), context_length, stride)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be an integer >= 1")
    if not 0 <= start_window <= plan.num_windows:
        raise ValueError(f"start_window={start_window} must be in [0, {plan.num_windows}]")
    return _iter_batches(tokens, plan, int(batch_size), start_window)


def _iter_batches(tokens: torch.Tensor, plan: WindowPlan, batch_size: int, start_window: int
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    offsets = torch.arange(plan.length - 1)[None, :]  # [1, L-1]
    for lo in range(start_window, plan.num_windows, batch_size):
        starts = plan.starts[lo: lo + batch_size]  # [b]
        ids = gather_windows(tokens, starts, plan.length)  # [b, L]
        scored = scored_mask(plan.first_scored[lo: lo + batch_size], plan.length)  # [b, L-1]
        positions = torch.as_tensor(starts)[:, None] + offsets  # [b, L-1]
        yield ids, scored, positions
