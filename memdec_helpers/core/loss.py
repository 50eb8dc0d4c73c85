"""The Memory Decoder's loss: L = beta * KL(p_kNN || p_Mem) + (1 - beta) * CE(y).

KL is computed from the sparse top-m targets by a gather on the log-softmax: never a dense
[tokens x vocabulary] target tensor (the official code builds one per batch, ~1.6 GB).
"""
from __future__ import annotations

import torch
IGNORE = -100  # label of a position that is not trained on


NORM_TOLERANCE = 1e-2  # |sum of target_probs - 1| allowed per position (float16 targets)


def _check_loss_inputs(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                       labels: torch.Tensor, beta: float) -> None:
    """Shapes, dtypes and ranges of memdec_loss's arguments (ValueError before any work)."""
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1] (the weight of the KL term)")
    if logits.ndim != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float [B, T, V] tensor, got {logits.dtype} "
                         f"{tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(f"logits {tuple(logits.shape)} is empty: a batch needs at least one "
                         "sequence and one position (B, T >= 1) over a vocabulary (V >= 1)")
    if (target_ids.ndim != 3 or target_ids.shape != target_probs.shape
            or target_ids.shape[:2] != logits.shape[:2] or target_ids.shape[2] == 0):
        raise ValueError(
            f"target_ids {tuple(target_ids.shape)} and target_probs {tuple(target_probs.shape)} "
            f"must both be [B, T, m] (m >= 1) with B, T of logits {tuple(logits.shape[:2])}"
        )
    if target_ids.is_floating_point() or not target_probs.is_floating_point():
        raise ValueError(f"target_ids must be integers and target_probs floats, got "
                         f"{target_ids.dtype} and {target_probs.dtype}")
    if labels.shape != logits.shape[:2] or labels.is_floating_point():
        raise ValueError(f"labels must be integer [B, T] = {tuple(logits.shape[:2])}, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    _check_ranges(logits.shape[-1], target_ids, target_probs, labels, logits)


def _check_ranges(vocab: int, target_ids: torch.Tensor, target_probs: torch.Tensor,
                  labels: torch.Tensor, logits: torch.Tensor | None = None) -> None:
    """Ids in [0, V) (padding ids with prob 0 and -100 labels excepted), target probabilities
    finite, >= 0 and summing to 1 where a label is trained on, each token once per trained
    row, finite logits; one device sync for all."""
    used = target_probs > 0
    keep = labels != IGNORE  # [B, T]
    probs = target_probs.float()  # [B, T, m]
    off_one = (probs.sum(-1) - 1).abs() * keep  # [B, T], 0 where the label is ignored
    repeats = _repeated_ids(target_ids, used) & keep  # [B, T]
    flags = torch.stack([
        (used & ((target_ids < 0) | (target_ids >= vocab))).any(),  # foreign target ids
        (keep & ((labels < 0) | (labels >= vocab))).any(),  # labels outside the vocabulary
        ~keep.any(),  # nothing to train on
        ~torch.isfinite(probs).all() | (probs < 0).any(),  # not probabilities
        off_one.max() > NORM_TOLERANCE,  # rows that do not sum to 1
        repeats.any(),  # a token twice in a row: its p log p would be split
        ~torch.isfinite(logits).all() if logits is not None else torch.zeros_like(keep.any()),
    ]).tolist()
    first = repeats.nonzero()[0].tolist() if flags[5] else None
    problems = [
        f"target_ids with probability > 0 must be in [0, {vocab}) (the logits' vocabulary); "
        "were the targets built with another tokenizer?",
        f"labels must be in [0, {vocab}) or {IGNORE} (ignored)",
        f"every label is {IGNORE} (ignored): there is no position to train on",
        "target_probs must be finite and >= 0 (got NaN, inf or a negative probability)",
        f"target_probs must sum to 1 over m at every trained position (within {NORM_TOLERANCE}); "
        "renormalise truncated targets",
        f"target_ids repeat a token with probability > 0 in one row (first at position "
        f"({first[0] if first else 0}, {first[1] if first else 0})): each token must appear once "
        "per row, as knn_distribution gives them; sum the probabilities of equal ids first",
        "logits contain NaN or inf: the model's forward pass is broken (a diverged run: lower "
        "learning_rate; fp16 overflow; damaged weights)",
    ]
    for flag, problem in zip(flags, problems):
        if flag:
            raise ValueError(problem)


def _repeated_ids(target_ids: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """[B, T] True where a row names one token twice among its entries with probability > 0
    (padding entries, probability 0, are given distinct negative ids first)."""
    m = target_ids.shape[-1]
    unused = -1 - torch.arange(m, device=target_ids.device)  # [m] distinct, never a real id
    ids = torch.where(used, target_ids.long(), unused).sort(-1).values  # [B, T, m]
    return (ids[..., 1:] == ids[..., :-1]).any(-1)


def _entropy_terms(p: torch.Tensor) -> torch.Tensor:
    """p·log p elementwise with 0·log 0 = 0 (padding entries)."""
    return torch.where(p > 0, p * p.clamp_min(torch.finfo(p.dtype).tiny).log(), torch.zeros_like(p))


def sparse_kl(log_q: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per position [B, T] = Σ_j p_j (log p_j − log q[id_j]), by gather (no dense p)."""
    p = target_probs.float()  # [B, T, m]
    return _kl_from_gathered(p, log_q.gather(-1, _used_ids(target_ids, p)))


def _used_ids(target_ids: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Target ids as int64, padding entries (p = 0) pointed at id 0 (any valid id will do)."""
    return torch.where(p > 0, target_ids.long(), torch.zeros_like(target_ids, dtype=torch.long))


def _kl_from_gathered(p: torch.Tensor, log_q_at_targets: torch.Tensor) -> torch.Tensor:
    """[B, T] KL from the target probs and log q gathered at the target ids ([B, T, m] each)."""
    return (_entropy_terms(p) - p * log_q_at_targets).sum(-1)


def memdec_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                labels: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce): β·KL(p_kNN ‖ softmax(logits)) + (1−β)·CE, means over non-ignored positions;
    aligned inputs (logits[b, t] predicts labels[b, t]), no shift inside.

    One gather reads log q at the m target ids and at the label together, so the backward pass
    scatters into a single [B, T, V] gradient."""
    _check_loss_inputs(logits, target_ids, target_probs, labels, beta)
    keep = labels != IGNORE  # [B, T]
    log_q = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    p = target_probs.float()  # [B, T, m]
    ids = torch.cat([_used_ids(target_ids, p), labels.clamp_min(0).long()[..., None]], -1)  # [B, T, m+1]
    gathered = log_q.gather(-1, ids)  # [B, T, m+1]
    kl = _kl_from_gathered(p, gathered[..., :-1])[keep].mean()
    ce = -gathered[..., -1][keep].mean()
    return beta * kl + (1 - beta) * ce, kl, ce
