"""Training the Memory Decoder on every position of every sequence of the domain corpus.

A sequence is a chunk of `context_length` positions of the training stream; position t of the
chunk starting at s predicts token s+t+1 and is matched to the kNN target of datastore row s+t.
(The seed notebook supervised one position per 128-token forward pass.)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .artifacts import atomic_write_json, config_hash, stage_is_current, write_manifest
from .devices import autocast, autocast_dtype, resolve_device, seed_everything
from .evaluate import tokens_hash
from .memdec import memdec_loss, sparse_kl

TRAIN_KNOBS = ("beta", "learning_rate", "weight_decay", "warmup_steps", "train_steps",
               "train_batch_size", "grad_accum", "grad_clip", "eval_every", "context_length",
               "stride", "seed", "memdec_init", "memdec_layers", "memdec_dim", "memdec_heads")


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
    sample = np.arange(first, first + batch_size)
    epochs = sample // num_sequences
    out = np.empty_like(sample)
    for epoch in np.unique(epochs):  # at most two epochs per batch
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_sequences)
        mask = epochs == epoch
        out[mask] = perm[sample[mask] % num_sequences]
    return out


def make_batch(tokens: np.ndarray, target_ids: np.ndarray, target_probs: np.ndarray,
               starts: np.ndarray, length: int) -> dict[str, torch.Tensor]:
    """input_ids/labels [b, L] and sparse targets [b, L, m] for the sequences at `starts`."""
    offsets = np.arange(length)[None, :]
    rows = starts[:, None] + offsets  # [b, L] datastore rows = input positions
    return {"input_ids": torch.from_numpy(tokens[rows].astype(np.int64)),
            "labels": torch.from_numpy(tokens[rows + 1].astype(np.int64)),
            "target_ids": torch.from_numpy(np.asarray(target_ids[rows], dtype=np.int64)),
            "target_probs": torch.from_numpy(np.asarray(target_probs[rows], dtype=np.float32))}


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_config(profile: Any, train_tokens: np.ndarray, targets: Any) -> dict[str, Any]:
    return {"targets": targets.manifest["config_hash"], "tokens": tokens_hash(train_tokens),
            **profile.subset(*TRAIN_KNOBS)}


def train_memory_decoder(profile: Any, model: Any, train_tokens: np.ndarray, targets: Any,
                         out_dir: str | Path, *, val_tokens: np.ndarray | None = None,
                         val_targets: Any = None, val_base_logprobs: np.ndarray | None = None,
                         resume: bool = True, progress: bool = True,
                         callback: Callable[[dict], None] | None = None) -> tuple[Any, dict]:
    """Train (or reuse a finished run with the same config); returns (model, history)."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_tokens = np.asarray(train_tokens)
    if len(targets) != len(train_tokens) - 1:
        raise ValueError(f"targets have {len(targets)} rows but the training stream has "
                         f"{len(train_tokens) - 1} positions; build targets from this corpus")
    config = train_config(profile, train_tokens, targets)
    if stage_is_current(out_dir, config):
        history = json.loads((out_dir / "history.json").read_text())
        return AutoModelForCausalLM.from_pretrained(out_dir / "model").eval(), history
    (out_dir / "manifest.json").unlink(missing_ok=True)  # an older finished run is stale now
    device = resolve_device(profile.device)
    amp = autocast_dtype(device, profile.dtype)
    seed_everything(profile.seed)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.learning_rate,
                                  weight_decay=profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, profile.warmup_steps, profile.train_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    history: dict[str, Any] = {"config": config, "steps": [], "evals": []}
    step = 0
    if resume:
        step, history = _load_checkpoint(out_dir, config, model, optimizer, scheduler, scaler) or (0, history)
    starts = sequence_starts(len(train_tokens), profile.context_length)
    evaluate = _evaluator(profile, val_tokens, val_targets, val_base_logprobs)
    bar = tqdm(total=profile.train_steps, initial=step, desc="train", disable=not progress)
    while step < profile.train_steps:
        record = _train_step(profile, model, optimizer, scaler, train_tokens, targets, starts,
                             step, device, amp)
        record["lr"] = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        history["steps"].append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", kl=f"{record['kl']:.3f}")
        if step % profile.eval_every == 0 or step == profile.train_steps:
            history["evals"].append({"step": step, **evaluate(model)})
            _save_checkpoint(out_dir, config, model, optimizer, scheduler, scaler, step, history)
        if callback:
            callback(record)
    bar.close()
    model.eval()
    _finish(out_dir, config, model, history)
    return model, history


def _train_step(profile, model, optimizer, scaler, tokens, targets, starts, step, device, amp) -> dict:
    """One optimizer step over `grad_accum` micro-batches; returns mean loss/kl/ce."""
    totals = torch.zeros(3)
    for micro in range(profile.grad_accum):
        chosen = batch_sequences(step, micro, profile.train_batch_size, profile.grad_accum,
                                 len(starts), profile.seed)
        batch = {k: v.to(device) for k, v in make_batch(tokens, targets.ids, targets.probs,
                                                        starts[chosen], profile.context_length).items()}
        with autocast(device, amp):
            logits = model(batch["input_ids"]).logits  # [b, L, V]
        loss, kl, ce = memdec_loss(logits, batch["target_ids"], batch["target_probs"],
                                   batch["labels"], profile.beta)
        scaler.scale(loss / profile.grad_accum).backward()
        totals += torch.stack([loss.detach(), kl.detach(), ce.detach()]).cpu() / profile.grad_accum
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), profile.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return {"step": step + 1, **dict(zip(("loss", "kl", "ce"), totals.tolist()))}


def _evaluator(profile, val_tokens, val_targets, val_base_logprobs) -> Callable[[Any], dict]:
    """Validation: MemDec perplexity, mixture perplexity (α = 0.5) and KL to the kNN targets."""
    from .evaluate import mix_logprobs, perplexity, token_logprobs

    def evaluate(model: Any) -> dict:
        if val_tokens is None:
            return {}
        model.eval()
        result: dict[str, Any] = {}
        mem = token_logprobs(model, val_tokens, profile.context_length, profile.stride,
                             profile.batch_size)
        result["val_ppl"] = perplexity(mem)
        if val_base_logprobs is not None:
            result["val_mix_ppl"] = perplexity(mix_logprobs(val_base_logprobs, mem, 0.5))
        if val_targets is not None:
            result["val_kl"] = _validation_kl(profile, model, val_tokens, val_targets)
        model.train()
        return result

    return evaluate


@torch.inference_mode()
def _validation_kl(profile, model, tokens, targets, max_sequences: int = 64) -> float:
    starts = sequence_starts(len(tokens), profile.context_length)[:max_sequences]
    batch = make_batch(np.asarray(tokens), targets.ids, targets.probs, starts, profile.context_length)
    device = next(model.parameters()).device
    log_q = torch.log_softmax(model(batch["input_ids"].to(device)).logits.float(), -1)
    return float(sparse_kl(log_q, batch["target_ids"].to(device),
                           batch["target_probs"].to(device)).mean())


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save_checkpoint(out_dir, config, model, optimizer, scheduler, scaler, step, history) -> None:
    """Weights (save_pretrained) + optimizer/scheduler/scaler/RNG state, swapped in atomically."""
    final, tmp = out_dir / "checkpoint", out_dir / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"config_hash": config_hash(config), "step": step, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": _rng_state(), "history": history}, tmp / "training_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _load_checkpoint(out_dir, config, model, optimizer, scheduler, scaler):
    """(step, history) from a checkpoint of this config, with all states restored; else None."""
    from safetensors.torch import load_file

    path = out_dir / "checkpoint" / "training_state.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    if state["config_hash"] != config_hash(config):
        return None
    weights = load_file(out_dir / "checkpoint" / "model.safetensors")
    model.load_state_dict(weights, strict=False)
    if "lm_head.weight" not in weights and getattr(model.config, "tie_word_embeddings", True):
        model.tie_weights()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"], state["history"]


def _finish(out_dir: Path, config: dict, model: Any, history: dict) -> None:
    """Final weights and history, then the manifest (last: the run is complete)."""
    final, tmp = out_dir / "model", out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_json(out_dir / "history.json", history)
    write_manifest(out_dir, config, steps=len(history["steps"]))


def load_history(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "history.json").read_text())

