"""The Memory Decoder's loss and training loop in their plainest form, as lesson 03 shows them.

Lesson 03's cells are copies of `plain_memdec_loss` and `plain_train`. The tests check that
they compute what `memdec.memdec_loss` and `train.train_memory_decoder` compute (same batches,
optimizer, schedule and clipping), so the package's trainer adds only resume, mixed precision,
validation and files. `kl_without_gradient=True` reproduces the `float()` bug of a naive first
version: the KL term's log-probs read out as Python numbers, the right value and no gradient.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..runtime.devices import seed_everything
from ..runtime.training import batch_sequences, lr_factor, make_batch, make_optimizer, sequence_starts


def plain_memdec_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                      labels: torch.Tensor, beta: float,
                      kl_without_gradient: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce): β·KL(p_kNN ‖ p_Mem) + (1−β)·CE, means over all positions (no ignored
    labels); sparse targets [B, T, m] with probability 0 on padding."""
    log_q = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V] log p_Mem
    log_q_at_targets = log_q.gather(-1, target_ids)  # [B, T, m] log p_Mem of the kNN tokens
    if kl_without_gradient:  # the float() bug: log-probs read out as Python numbers (.tolist())
        log_q_at_targets = torch.tensor(log_q_at_targets.tolist(), device=logits.device)
    p = target_probs.float()  # [B, T, m] p_kNN
    log_p = torch.where(p > 0, p.log(), torch.zeros_like(p))  # 0 · log 0 = 0 on padding
    kl = (p * (log_p - log_q_at_targets)).sum(-1).mean()  # KL(p_kNN ‖ p_Mem), mean over positions
    ce = -log_q.gather(-1, labels[..., None]).mean()  # -log p_Mem(true next token)
    return beta * kl + (1 - beta) * ce, kl, ce


def plain_train(model: Any, tokens: np.ndarray, targets: Any, profile: Any,
                steps: int | None = None, kl_without_gradient: bool = False) -> list[dict]:
    """Train `model` in place for `steps` (default: profile.train_steps) of the profile's
    schedule; the loss, kl and ce of every step (last micro-batch)."""
    seed_everything(profile.seed)
    model.float().train()
    device = next(model.parameters()).device
    starts = sequence_starts(len(tokens), profile.context_length)  # non-overlapping sequences
    optimizer = make_optimizer(model, profile.learning_rate, profile.weight_decay)  # AdamW
    schedule = LambdaLR(optimizer, lambda s: lr_factor(s, profile.warmup_steps, profile.train_steps))
    history = []
    for step in range(profile.train_steps if steps is None else steps):
        for micro in range(profile.grad_accum):  # the same batches as the package's trainer
            chosen = batch_sequences(step, micro, profile.train_batch_size, profile.grad_accum,
                                     len(starts), profile.seed)
            batch = make_batch(tokens, targets.ids, targets.probs, starts[chosen],
                               profile.context_length)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            logits = model(batch["input_ids"]).logits  # [b, L, V]
            loss, kl, ce = plain_memdec_loss(logits, batch["target_ids"], batch["target_probs"],
                                             batch["labels"], profile.beta, kl_without_gradient)
            (loss / profile.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), profile.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        history.append({"step": step + 1, "loss": loss.item(), "kl": kl.item(), "ce": ce.item()})
    return history
