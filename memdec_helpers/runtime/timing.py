"""Timing a piece of work: the fastest of a few runs (the least disturbed by other work)."""
from __future__ import annotations

import time
from typing import Any, Callable


def fastest(run: Callable[[], Any], repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls of `run` (>= 1 call)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best
