"""The training step: every position of every sequence of the domain corpus is supervised.

A sequence is a chunk of `context_length` positions of the training stream; position t of the
chunk starting at s predicts token s+t+1 and is matched to the kNN target of datastore row s+t
(a naive first version supervised one position per 128-token forward pass). The batch of a
step is a pure function of (step, seed), so a resumed run repeats the uninterrupted one. The
run folder (checkpoints, resume, the finished model) is stages/training.py.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.loss import memdec_loss
from ..profiles import Profile
from .batching import act_bytes_for, fit_batch
from .devices import autocast
from .distributed import all_reduce_sum, world


def sequence_starts(num_tokens: int, length: int) -> np.ndarray:
    """Starts of the non-overlapping training sequences (each needs length + 1 tokens)."""
    starts = np.arange(0, num_tokens - length, length)
    if len(starts) == 0:
        raise ValueError(f"the training corpus has {num_tokens} tokens, fewer than one sequence "
                         f"of context_length + 1 = {length + 1}; use more text or a shorter context")
    return starts


def batch_sequences(step: int, micro: int, batch_size: int, accum: int, num_sequences: int,
                    seed: int) -> np.ndarray:
    """Sequence indices of micro-batch `micro` of `step`: a pure function of its arguments
    (per-epoch seeded permutations), so a resumed run sees exactly the same batches."""
    first = (step * accum + micro) * batch_size
    sample = np.arange(first, first + batch_size)  # global sample numbers
    epochs = sample // num_sequences
    out = np.empty_like(sample)
    for epoch in np.unique(epochs):  # one or two epochs per batch (loop over epochs, not tokens)
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_sequences)
        mask = epochs == epoch
        out[mask] = perm[sample[mask] % num_sequences]
    return out


def make_batch(tokens: np.ndarray, target_ids: np.ndarray, target_probs: np.ndarray,
               starts: np.ndarray, length: int) -> dict[str, torch.Tensor]:
    """input_ids/labels [b, L] and sparse targets [b, L, m] for the sequences at `starts`."""
    rows = starts[:, None] + np.arange(length)[None, :]  # [b, L] datastore rows = input positions
    return {"input_ids": torch.from_numpy(tokens[rows].astype(np.int64)),
            "labels": torch.from_numpy(tokens[rows + 1].astype(np.int64)),
            "target_ids": torch.from_numpy(np.asarray(target_ids[rows], dtype=np.int64)),
            "target_probs": torch.from_numpy(np.asarray(target_probs[rows], dtype=np.float32))}


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the lr at 0-based `step`: linear warmup to 1 over `warmup` steps, then
    linear decay reaching 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases or LayerNorms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class TrainState:
    """Everything a training step changes and a checkpoint saves, in one object."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    step: int  # optimizer steps done
    history: dict  # per-step records and evaluations (history.json)
    device: torch.device
    amp: torch.dtype | None  # autocast dtype (None: float32)
    micro_batch: int  # sequences per forward pass (a batch is split into passes of this size)
    runner: Any  # what runs the forward pass: the model, or its DDP wrapper under torchrun


def micro_batch_size(profile: Profile, model: Any, device: torch.device,
                     amp: torch.dtype | None) -> int:
    """Sequences per forward pass: `micro_batch_size` (or all of `train_batch_size`), lowered
    to what the device's memory holds. It splits a batch, it does not change the step."""
    asked = min(profile.micro_batch_size or profile.train_batch_size, profile.train_batch_size)
    return fit_batch(asked, model, profile.context_length, "train", device, act_bytes_for(amp))


def step_parts(profile: Profile, starts: np.ndarray, step: int, micro_size: int) -> list[np.ndarray]:
    """Starts of the sequences this process runs in `step`, one array per forward pass: its
    share (every world-th) of each of the `grad_accum` batches, in passes of <= micro_size."""
    rank, size = world()
    parts = []
    for micro in range(profile.grad_accum):
        chosen = batch_sequences(step, micro, profile.train_batch_size, profile.grad_accum,
                                 len(starts), profile.seed)[rank::size]
        parts += [starts[chosen[lo:lo + micro_size]] for lo in range(0, len(chosen), micro_size)]
    return parts


def _train_step(profile: Profile, state: TrainState, tokens: np.ndarray, targets: Any,
                starts: np.ndarray) -> dict:
    """One optimizer step over `grad_accum` batches, each run in forward passes of at most
    `state.micro_batch` sequences (shared among data-parallel processes; every sequence weighs
    the same); records and returns the mean loss/kl/ce, the gradient norm and the learning rate
    of the step."""
    size = world()[1]
    totals = torch.zeros(3, device=state.device)
    per_sequence = 1.0 / (profile.train_batch_size * profile.grad_accum)
    parts = step_parts(profile, starts, state.step, state.micro_batch)
    for j, part in enumerate(parts):
        batch = make_batch(tokens, targets.ids, targets.probs, part, profile.context_length)
        batch = {k: v.to(state.device, non_blocking=True) for k, v in batch.items()}
        last = j == len(parts) - 1  # DDP averages the gradients once, after the last pass
        with contextlib.nullcontext() if last or size == 1 else state.runner.no_sync():
            with autocast(state.device, state.amp):
                logits = state.runner(batch["input_ids"], use_cache=False).logits  # [b, L, V]
            loss, kl, ce = memdec_loss(logits, batch["target_ids"], batch["target_probs"],
                                       batch["labels"], profile.beta)
            weight = len(part) * per_sequence  # every position of a sequence is supervised
            state.scaler.scale(loss * (weight * size)).backward()  # x size: DDP divides by it
        totals += torch.stack([loss.detach(), kl.detach(), ce.detach()]) * weight
    all_reduce_sum(totals)
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), profile.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    loss, kl, ce = totals.tolist()
    record = {"step": state.step + 1, "loss": loss, "kl": kl, "ce": ce,
              "grad_norm": float(grad_norm), "lr": state.scheduler.get_last_lr()[0]}
    state.scheduler.step()
    state.step += 1
    state.history["steps"].append(record)
    return record
