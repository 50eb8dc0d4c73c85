"""Solutions to the exercises of memdec_helpers.lessons.exercises, kept apart from the lessons.

Each function is named after its exercise, takes (some of) the keyword context the lesson
passes to `check`, and returns the answer a learner should have written. They are written the
way a learner would, by hand, not with the package's vectorised functions.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..core.windows import plan_windows


def perplexity_by_hand(logprobs: Any) -> float:
    """exp(−mean log-prob), the mean in float64."""
    return float(np.exp(-np.mean(logprobs, dtype=np.float64)))


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


def choose_alpha(base_logprobs: Any, memdec_logprobs: Any, grid: Any) -> tuple[list[float], float]:
    """(perplexity of the mixture for every α, the α with the lowest one)."""
    base = np.asarray(base_logprobs, dtype=np.float64)
    mem = np.asarray(memdec_logprobs, dtype=np.float64)
    with np.errstate(divide="ignore"):  # log(0) = -inf at α = 0 or 1 is fine inside logaddexp
        ppls = [float(np.exp(-np.mean(np.logaddexp(np.log(a) + mem, np.log1p(-a) + base))))
                for a in grid]
    return ppls, grid[int(np.argmin(ppls))]


def _target_row(distances_row: Any, rows_row: Any, position: int, vals: Any,
                temperature: float) -> dict[int, float]:
    """Leave out the neighbour whose row is `position` (the farthest when it was not
    retrieved), then the kNN vote of the rest."""
    keep = [row != position for row in rows_row]
    if all(keep):
        keep[-1] = False
    distances = np.asarray(distances_row, dtype=np.float64)[keep]
    tokens = np.asarray(vals)[np.asarray(rows_row)[keep]]
    return _knn_row(distances, tokens, temperature)


def target_row() -> Callable[..., dict[int, float]]:
    """The answer is a function."""
    return _target_row


def _memdec_loss_by_hand(log_probs: torch.Tensor, target_ids: torch.Tensor,
                         target_probs: torch.Tensor, labels: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """β·KL(p ‖ q) + (1−β)·CE, each a mean over positions, from log q [B, T, V]."""
    p = target_probs.to(log_probs.dtype)  # [B, T, m]
    log_q_at_targets = log_probs.gather(-1, target_ids)  # [B, T, m]
    log_p = torch.where(p > 0, p.log(), torch.zeros_like(p))  # 0 · log 0 = 0 on padding
    kl = (p * (log_p - log_q_at_targets)).sum(-1).mean()
    ce = -log_probs.gather(-1, labels[..., None]).mean()
    return beta * kl + (1 - beta) * ce


def memdec_loss_by_hand() -> Callable[..., torch.Tensor]:
    """The answer is a function."""
    return _memdec_loss_by_hand


def _training_step(model: Any, batch: dict, optimizer: Any, schedule: Any, beta: float,
                   grad_clip: float) -> float:
    """Forward, loss, backward, clip, optimizer step, schedule step, zero_grad."""
    logits = model(batch["input_ids"]).logits  # [B, L, V]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    loss = _memdec_loss_by_hand(log_probs, batch["target_ids"], batch["target_probs"],
                                batch["labels"], beta)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return loss.item()


def training_step() -> Callable[..., float]:
    """The answer is a function."""
    return _training_step


def _mix_next_token(base_logits: torch.Tensor, memdec_logits: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """log(α·p_Mem + (1−α)·p_LM) over the vocabulary, in log space."""
    log_base = torch.log_softmax(base_logits.double(), dim=-1)
    log_mem = torch.log_softmax(memdec_logits.double(), dim=-1)
    return torch.logaddexp(math.log(alpha) + log_mem, math.log1p(-alpha) + log_base)


def mix_next_token() -> Callable[..., torch.Tensor]:
    """The answer is a function."""
    return _mix_next_token


def _plugs_in(memdec_config: Any, base_config: Any, memdec_vocab: dict, base_vocab: dict) -> bool:
    """The same output size and the same token -> id map; nothing else matters."""
    return memdec_config.vocab_size == base_config.vocab_size and memdec_vocab == base_vocab


def plugs_in() -> Callable[..., bool]:
    """The answer is a function."""
    return _plugs_in


def fact_token_perplexity(logprobs: Any, mask: Any) -> float:
    """exp(−mean log-prob) over the tokens the mask keeps."""
    kept = np.asarray(logprobs, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    return float(math.exp(-kept.mean()))
