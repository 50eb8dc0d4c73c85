"""Solutions to the exercises of memdec_helpers.exercises, kept apart from the lessons.

Each function is named after its exercise, takes (some of) the keyword context the lesson
passes to `check`, and returns the answer a learner should have written. They are written the
way a learner would, by hand, not with the package's vectorised functions.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..core.knn import knn_token_logprobs
from ..core.windows import plan_windows


def perplexity_by_hand(logprobs: Any) -> float:
    """exp(−mean log-prob), the mean in float64."""
    return float(np.exp(-np.mean(logprobs, dtype=np.float64)))


def datastore_values(tokens: Any, positions: Any) -> np.ndarray:
    """The value of position i is the token that follows it."""
    return np.asarray(tokens)[np.asarray(positions) + 1]


def datastore_key(model: Any, tokens: Any, position: int, context_length: int,
                  stride: int) -> np.ndarray:
    """The last block's MLP input at `position`, from the window that scored it (a GPT-2)."""
    plan = plan_windows(len(tokens), context_length, stride)
    w = int(np.searchsorted(plan.starts + plan.first_scored, position, side="right")) - 1
    start = int(plan.starts[w])
    captured = {}
    hook = model.transformer.h[-1].mlp.register_forward_pre_hook(
        lambda module, args: captured.update(key=args[0]))  # args[0]: the MLP's input [1, T, d]
    try:
        with torch.inference_mode():
            model(torch.as_tensor(np.asarray(tokens)[start:position + 1], dtype=torch.long)[None]
                  .to(model.device))
    finally:
        hook.remove()
    return captured["key"][0, -1].float().cpu().numpy()


def _knn_row(distances_row: Any, tokens_row: Any, temperature: float) -> dict[int, float]:
    """p_kNN of one query with a plain loop: weights exp(-(d - d_min)/τ), equal tokens added."""
    weights = np.exp(-(distances_row - distances_row.min()) / temperature)
    votes: dict[int, float] = {}
    for w, token in zip(weights, tokens_row):
        votes[int(token)] = votes.get(int(token), 0.0) + float(w)
    total = sum(votes.values())
    return {token: w / total for token, w in votes.items()}


def knn_row() -> Callable[[Any, Any, float], dict[int, float]]:
    """The answer is a function."""
    return _knn_row


def sparse_kl_by_hand(logits: Any, target_ids: Any, target_probs: Any) -> float:
    """Σ over entries with p > 0 of p · (log p − log q[id]), q = softmax(logits)."""
    log_q = torch.log_softmax(torch.as_tensor(logits).detach().double(), dim=-1)  # [V]
    p = torch.as_tensor(target_probs).double()  # [m]
    ids = torch.as_tensor(target_ids)  # [m]
    used = p > 0
    return (p[used] * (p[used].log() - log_q[ids[used]])).sum().item()


def choose_alpha(base_logprobs: Any, memdec_logprobs: Any, grid: Any) -> tuple[list[float], float]:
    """(perplexity of the mixture for every α, the α with the lowest one)."""
    base = np.asarray(base_logprobs, dtype=np.float64)
    mem = np.asarray(memdec_logprobs, dtype=np.float64)
    with np.errstate(divide="ignore"):  # log(0) = -inf at α = 0 or 1 is fine inside logaddexp
        ppls = [float(np.exp(-np.mean(np.logaddexp(np.log(a) + mem, np.log1p(-a) + base))))
                for a in grid]
    return ppls, grid[int(np.argmin(ppls))]


def relative_cost(cost: dict[str, float]) -> dict[str, float]:
    """ms/token of each add-on over ms/token of its base model alone."""
    return {name: cost[name] / cost[name.split(" + ")[0]] for name in cost if " + " in name}


def first_k_columns(fresh: Any, distances: Any, tokens: Any, next_tokens: Any,
                    temperature: float, k: int) -> np.ndarray:
    """log p_kNN of the first len(fresh) queries from the first k columns of the search."""
    n = len(fresh)
    return knn_token_logprobs(np.asarray(distances)[:n, :k], np.asarray(tokens)[:n, :k],
                              np.asarray(next_tokens)[:n], temperature)
