"""The Memory Decoder: a small GPT-2 that shares the base tokenizer, and its training loss.

    L = β · KL(p_kNN ‖ p_Mem) + (1 − β) · CE(y)

KL is computed from the sparse top-m targets by a gather on the log-softmax: never a dense
[tokens × vocabulary] target tensor (the official code builds one per batch, ~1.6 GB).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100


def build_memory_decoder(profile: Any, base_model: Any = None, vocab_size: int | None = None) -> Any:
    """A GPT-2 Memory Decoder: from scratch (profile size), a copy of a base model, or a folder."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    init = profile.memdec_init
    if init.startswith("base:"):
        if base_model is None:
            raise ValueError(f"memdec_init={init!r} copies a base model: pass base_model=")
        return copy.deepcopy(base_model).float().train()
    if init != "scratch":
        if not Path(init).is_dir():
            raise ValueError(f"memdec_init={init!r}: use 'scratch', 'base:<i>' or a "
                             "save_pretrained folder that exists")
        return AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32).train()
    vocab = vocab_size or (base_model.config.vocab_size if base_model is not None else None)
    if vocab is None:
        raise ValueError("a from-scratch Memory Decoder needs vocab_size= or base_model= "
                         "(it must share the base tokenizer)")
    special = {}
    if base_model is not None:
        special = {"bos_token_id": base_model.config.bos_token_id,
                   "eos_token_id": base_model.config.eos_token_id}
    config = GPT2Config(vocab_size=vocab, n_positions=max(256, profile.context_length),
                        n_layer=profile.memdec_layers, n_embd=profile.memdec_dim,
                        n_head=profile.memdec_heads, **special)
    torch.manual_seed(profile.seed)
    return GPT2LMHeadModel(config).train()


def check_same_vocabulary(memdec: Any, base_model: Any) -> None:
    """Plug-and-play needs the same tokenizer: the output vocabularies must match."""
    a, b = memdec.config.vocab_size, base_model.config.vocab_size
    if a != b:
        raise ValueError(
            f"the Memory Decoder's vocabulary ({a} tokens) differs from the base model's ({b}); "
            "plug-and-play needs both to use the same tokenizer: train a Memory Decoder on this "
            "base model's tokenizer"
        )


def _check_loss_inputs(logits, target_ids, target_probs, labels, beta) -> None:
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1] (the weight of the KL term)")
    if logits.ndim != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if target_ids.shape != target_probs.shape or target_ids.shape[:2] != logits.shape[:2]:
        raise ValueError(
            f"target_ids {tuple(target_ids.shape)} and target_probs {tuple(target_probs.shape)} "
            f"must both be [B, T, m] with B, T of logits {tuple(logits.shape[:2])}"
        )
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels {tuple(labels.shape)} must be [B, T] = {tuple(logits.shape[:2])}")


def sparse_kl(log_q: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Σ_j p_j (log p_j − log q[id_j]) per position [B, T], with 0 · log 0 = 0 for padding."""
    p = target_probs.float()
    log_q_at_targets = log_q.gather(-1, target_ids.long())  # [B, T, m]
    log_p = torch.where(p > 0, p.clamp_min(1e-30).log(), torch.zeros_like(p))
    return (p * (log_p - log_q_at_targets)).sum(-1)


def memdec_loss(logits: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                labels: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, kl, ce): β·KL(p_kNN ‖ softmax(logits)) + (1−β)·CE, means over non-ignored positions."""
    _check_loss_inputs(logits, target_ids, target_probs, labels, beta)
    keep = labels != IGNORE  # [B, T]
    if not keep.any():
        raise ValueError("every label is -100 (ignored): there is no position to train on")
    log_q = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    kl = sparse_kl(log_q, target_ids, target_probs)[keep].mean()
    ce = F.nll_loss(log_q[keep], labels[keep])
    return beta * kl + (1 - beta) * ce, kl, ce


def kl_without_gradient_demo(logits: torch.Tensor, target_ids: torch.Tensor,
                             target_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed notebook's bug next to the fix: its KL went through Python floats (`float()` on
    the log-probs), so the value is right but nothing flows back to the model."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    correct = sparse_kl(log_q, target_ids, target_probs).mean()
    detached = log_q.gather(-1, target_ids.long())
    buggy_values = [float(x) for x in detached.flatten()]  # the bug: leaves the autograd graph
    buggy_log_q = torch.tensor(buggy_values).view_as(detached)
    p = target_probs.float()
    log_p = torch.where(p > 0, p.clamp_min(1e-30).log(), torch.zeros_like(p))
    buggy = (p * (log_p - buggy_log_q)).sum(-1).mean()
    return buggy, correct
