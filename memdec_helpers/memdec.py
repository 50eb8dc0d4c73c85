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

from .models import backbone, position_limit, transformer_blocks
from .profiles import Profile, parse_memdec_init

IGNORE = -100  # label of a position that is not trained on
NORM_TOLERANCE = 1e-2  # |sum of target_probs - 1| allowed per position (float16 targets)


# --- the model -----------------------------------------------------------------------------

def build_memory_decoder(profile: Profile, base_model: Any = None,
                         vocab_size: int | None = None) -> Any:
    """A Memory Decoder sharing the base tokenizer: from scratch (profile size), a copy of base
    model `i` (`memdec_init="base:<i>"`, pass that model as base_model; `memdec_layers` keeps
    only its first blocks) or a saved folder."""
    kind, where = parse_memdec_init(profile.memdec_init)
    if kind == "base":
        model = _copy_of_base(profile.memdec_init, base_model, profile.memdec_layers)
    elif kind == "scratch":
        model = _from_scratch(profile, base_model, vocab_size)
    else:
        model = _from_folder(where)
    _check_built(model, profile, base_model, vocab_size)
    return model.float().train()


def _copy_of_base(init: str, base_model: Any, layers: int | None = None) -> Any:
    """A deep copy of the base model (its weights are the starting point, the base stays
    frozen), keeping its embeddings, its first `layers` blocks (None: all) and its final norm."""
    if base_model is None:
        raise ValueError(f"memdec_init={init!r} copies a base model: pass that model as base_model=")
    depth = len(transformer_blocks(base_model))
    if layers is not None and not 1 <= layers <= depth:
        raise ValueError(f"memdec_layers={layers} but {init} has {depth} blocks; a "
                         f"decoder copied from it keeps its first 1..{depth} blocks (None: all)")
    model = copy.deepcopy(base_model)
    if layers is not None and layers < depth:
        keep_first_blocks(model, layers)
    return model


def keep_first_blocks(model: Any, layers: int) -> None:
    """Drop every block after the first `layers`, in place, and record it in the config so
    save_pretrained / from_pretrained round-trip the smaller model."""
    body = backbone(model)
    name = "h" if hasattr(body, "h") else "layers"
    setattr(body, name, torch.nn.ModuleList(list(transformer_blocks(model))[:layers]))
    for key in ("n_layer", "num_hidden_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, layers)
    if getattr(model.config, "layer_types", None):  # newer Llama-style configs list every layer
        model.config.layer_types = model.config.layer_types[:layers]


def _from_folder(path: str) -> Any:
    """A Memory Decoder saved with save_pretrained (e.g. a finished training run's `model/`)."""
    from transformers import AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"memdec_init={path!r} is not 'scratch', 'base:<i>' or a save_pretrained "
                         "folder (no config.json there)")
    return AutoModelForCausalLM.from_pretrained(path)


def _from_scratch(profile: Profile, base_model: Any, vocab_size: int | None) -> Any:
    """A randomly initialised GPT-2 of the profile's size (seeded; the global RNG is untouched)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = vocab_size or (base_model.config.vocab_size if base_model is not None else None)
    if vocab is None:
        raise ValueError("a from-scratch Memory Decoder needs vocab_size= or base_model= "
                         "(it must share the base model's tokenizer)")
    positions = max(profile.context_length, position_limit(base_model) or 0)
    special = {"bos_token_id": None, "eos_token_id": None}  # GPT-2's 50256 may not exist here
    if base_model is not None:
        special = {k: getattr(base_model.config, k, None)
                   for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if profile.memdec_layers is None:
        raise ValueError("memdec_init='scratch' needs memdec_layers (blocks of the new decoder)")
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_layer=profile.memdec_layers,
                        n_embd=profile.memdec_dim, n_head=profile.memdec_heads, **special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.seed)
        return GPT2LMHeadModel(config)


def _check_built(model: Any, profile: Profile, base_model: Any, vocab_size: int | None) -> None:
    """The Memory Decoder must fit the training context and the base vocabulary."""
    limit = position_limit(model)
    if limit is not None and limit < profile.context_length:
        raise ValueError(f"the Memory Decoder ({profile.memdec_init!r}) has {limit} positions, "
                         f"fewer than context_length={profile.context_length}; use a shorter "
                         "context_length or memdec_init='scratch'")
    if vocab_size is not None and model.config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size={vocab_size} but the Memory Decoder ({profile.memdec_init!r}) "
                         f"has {model.config.vocab_size} tokens; it must share the base tokenizer")
    if base_model is not None:
        check_same_vocabulary(model, base_model)


def _output_vocab(model: Any) -> int:
    """Rows of the output layer (falls back to config.vocab_size)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def check_same_vocabulary(memdec: Any, base_model: Any, memdec_tokenizer: Any = None,
                          base_tokenizer: Any = None) -> None:
    """Plug-and-play needs one tokenizer: equal output vocabularies (and equal token -> id maps
    when both tokenizers are given), else ValueError."""
    a, b = _output_vocab(memdec), _output_vocab(base_model)
    if a != b:
        raise ValueError(
            f"the Memory Decoder's vocabulary ({a} tokens) differs from the base model's ({b}); "
            "plug-and-play needs both to use the same tokenizer: train a Memory Decoder on this "
            "base model's tokenizer"
        )
    if (memdec_tokenizer is None) != (base_tokenizer is None):
        raise ValueError("pass both memdec_tokenizer and base_tokenizer (or neither) to compare them")
    if memdec_tokenizer is not None:
        mem_vocab, base_vocab = memdec_tokenizer.get_vocab(), base_tokenizer.get_vocab()
        if mem_vocab != base_vocab:
            differ = len(set(mem_vocab.items()) ^ set(base_vocab.items()))
            raise ValueError(
                f"the tokenizers differ ({differ} token/id pairs are not shared): plug-and-play "
                "needs the Memory Decoder and the base model to use the same tokenizer"
            )


# --- the loss ------------------------------------------------------------------------------

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
