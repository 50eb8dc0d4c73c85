"""Training runs on disk: a run folder per decoder (the Memory Decoder, DAPT, an ablation) with
its checkpoints, history and final model, resumable to the same weights.

Checkpoints hold the optimizer, scheduler, scaler and RNG states, so a resumed run repeats the
uninterrupted one exactly; the step itself is runtime/training.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError

from ..core.hashing import config_hash
from ..core.mixing import mix_logprobs, perplexity
from ..core.windows import WindowSpec, tokens_hash
from ..profiles import Profile
from ..progress import no_transformers_bars, progress_bar
from ..runtime.devices import autocast_dtype, resolve_device, seed_everything
from ..runtime.distributed import barrier, check_batch_split, data_parallel, local_device, world
from ..runtime import mlp_memory as _registered  # noqa: F401  AutoModelForCausalLM reloads it
from ..runtime.models import check_context_fits, weights_fingerprint
from ..runtime.scoring import score_tokens, validation_kl
from ..runtime.training import (TrainState, _train_step, lr_factor, make_optimizer,
                                micro_batch_size, sequence_starts)
from .store import (atomic_write_json, check_stage_files, check_writable, full_digest, make_dir,
                    read_manifest, stage_lock, write_manifest)

TRAIN_KNOBS = ("beta", "learning_rate", "weight_decay", "warmup_steps", "train_steps",
               "train_batch_size", "grad_accum", "grad_clip", "eval_every", "context_length",
               "stride", "seed", "memdec_init", "dtype")


RUN_FILES = ("manifest.json", "history.json", "model", "checkpoint", ".model.old",
             ".checkpoint.old")
TENSORS_FILE = "training_state.pt"  # optimizer, scheduler, scaler and RNG tensors (weights_only)


STATE_FILE = "state.json"  # config hash, step and history: checked before any tensor is loaded


def train_config(profile: Profile, model: Any, train_tokens: np.ndarray,
                 targets: Any) -> dict[str, Any]:
    """Everything that decides the trained weights: knobs, data, targets and the starting model."""
    return {"targets": targets.manifest["config_hash"], "tokens": tokens_hash(train_tokens),
            "init_model": weights_fingerprint(model), **profile.subset(*TRAIN_KNOBS)}


def _check_targets(targets: Any, tokens: np.ndarray, what: str) -> None:
    """Targets row i is the kNN distribution of position i: N-1 rows, ids and probs alike."""
    ids, probs = targets.ids, targets.probs
    if ids.ndim != 2 or ids.shape != probs.shape or ids.shape[0] != len(tokens) - 1:
        raise ValueError(f"{what} ids {ids.shape} / probs {probs.shape} must both be [N-1, m] "
                         f"= [{len(tokens) - 1}, m] for the {len(tokens)} tokens given; build the "
                         "targets from this token stream")


def _check_tokens(tokens: np.ndarray, vocab: int, what: str) -> None:
    if tokens.ndim != 1 or len(tokens) < 2:
        raise ValueError(f"{what} must be a 1-D token array with >= 2 tokens, got shape {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= vocab:
        raise ValueError(f"{what} ids must be in [0, {vocab}) (the model's vocabulary); "
                         "were they made with another tokenizer?")


def _check_inputs(profile, model, train_tokens, targets, val_tokens, val_targets,
                  val_base_logprobs) -> None:
    """Every argument of train_memory_decoder, before any work or file write (the knobs were
    checked when the profile was made)."""
    check_context_fits(model, profile.context_length)
    vocab = model.config.vocab_size
    _check_tokens(train_tokens, vocab, "train_tokens")
    _check_targets(targets, train_tokens, "targets")
    sequence_starts(len(train_tokens), profile.context_length)
    if val_tokens is None:
        if val_targets is not None or val_base_logprobs is not None:
            raise ValueError("val_targets / val_base_logprobs need val_tokens (the validation stream)")
        return
    _check_tokens(val_tokens, vocab, "val_tokens")
    if val_targets is not None:
        _check_targets(val_targets, val_tokens, "val_targets")
    if val_base_logprobs is not None and np.shape(val_base_logprobs) != (len(val_tokens) - 1,):
        raise ValueError(f"val_base_logprobs has shape {np.shape(val_base_logprobs)}; it must be "
                         f"[N-1] = [{len(val_tokens) - 1}] (token_logprobs of the base model)")


def train_memory_decoder(profile: Profile, model: Any, train_tokens: np.ndarray, targets: Any, *,
                         out_dir: str | Path, val_tokens: np.ndarray | None = None,
                         val_targets: Any = None, val_base_logprobs: np.ndarray | None = None,
                         resume: bool = True, progress: bool = True,
                         callback: Callable[[dict], None] | None = None,
                         config: dict[str, Any] | None = None,
                         desc: str = "train MemDec") -> tuple[Any, dict]:
    """Train `model` on the kNN targets (or reuse a finished run of the same config); returns
    (trained model in eval mode, history). `callback(step_record)` runs after every step.
    Any model that maps token ids to `.logits` trains here (the MLP memory too; `desc` names it
    on the progress bar).
    `config` is the run's identity (default: its knobs, tokens, targets and starting weights;
    the pipeline passes the run's recipe). One process trains a run folder at a time; another
    one waits, then reuses the result."""
    train_tokens = np.asarray(train_tokens)
    val_tokens = None if val_tokens is None else np.asarray(val_tokens)
    _check_inputs(profile, model, train_tokens, targets, val_tokens, val_targets, val_base_logprobs)
    out_dir = Path(out_dir)
    config = config or train_config(profile, model, train_tokens, targets)
    rank, _ = world()
    check_batch_split(profile.train_batch_size)
    # data-parallel: rank 0 holds the run folder's lock; the others train beside it
    with stage_lock(out_dir) if rank == 0 else contextlib.nullcontext():
        if is_finished(out_dir, config):
            return _reuse(out_dir, model)
        starts = sequence_starts(len(train_tokens), profile.context_length)
        state = _start(profile, model, config, starts, out_dir, resume)
        evaluate = partial(_evaluate, profile, val_tokens=val_tokens, val_targets=val_targets,
                           val_base_logprobs=val_base_logprobs)
        bar = progress_bar(total=profile.train_steps, initial=state.step, desc=desc,
                           disable=not progress or rank != 0)
        while state.step < profile.train_steps:
            record = _train_step(profile, state, train_tokens, targets, starts)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", kl=f"{record['kl']:.3f}",
                            ce=f"{record['ce']:.3f}")
            if (state.step % profile.eval_every == 0 or state.step == profile.train_steps) \
                    and rank == 0:
                state.history["evals"].append({"step": state.step, **evaluate(state.model)})
                _save_checkpoint(out_dir, config, state)
            if callback is not None:
                callback(record)
        bar.close()
        if rank == 0:
            _finish(out_dir, config, state.model.eval(), state.history)
        barrier()
        return state.model.eval(), state.history


def _start(profile: Profile, model: Any, config: dict, starts: np.ndarray, out_dir: Path,
           resume: bool) -> TrainState:
    """A fresh TrainState (seeded, model in float32 on the profile's device, optimizer, schedule,
    scaler, micro-batch size, DDP wrapper under torchrun), restored from this config's
    checkpoint when there is a sound one."""
    rank, _ = world()
    device = local_device(resolve_device(profile.device))
    amp = autocast_dtype(device, profile.dtype)
    seed_everything(profile.seed + rank)  # data-parallel processes: their own dropout masks
    model = model.float().to(device).train()
    optimizer = make_optimizer(model, profile.learning_rate, profile.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup=profile.warmup_steps, total=profile.train_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    state = TrainState(model, optimizer, scheduler, scaler, 0,
                       _new_history(config, profile, starts), device, amp,
                       micro_batch_size(profile, model, device, amp), data_parallel(model, device))
    if rank == 0:
        make_dir(out_dir)
        check_writable(out_dir)  # a read-only disk: a clear error before any training
    if not (resume and _load_checkpoint(out_dir, config, state)) and rank == 0:
        _clear_run(out_dir)
    barrier()
    return state


def _new_history(config: dict, profile: Profile, starts: np.ndarray) -> dict[str, Any]:
    positions_per_step = profile.train_batch_size * profile.grad_accum * profile.context_length
    return {"config": config, "steps": [], "evals": [], "num_sequences": int(len(starts)),
            "positions_per_step": positions_per_step,
            "epochs": profile.train_steps * profile.train_batch_size * profile.grad_accum / len(starts)}


def _evaluate(profile: Profile, model: Any, *, val_tokens: np.ndarray | None, val_targets: Any,
              val_base_logprobs: np.ndarray | None) -> dict[str, float | None]:
    """MemDec perplexity, base+MemDec perplexity at α = 0.5 and KL to the kNN targets, on
    validation (None for what was not given)."""
    result: dict[str, float | None] = {"val_ppl": None, "val_mix_ppl": None, "val_kl": None}
    if val_tokens is None:
        return result
    model.eval()
    spec = WindowSpec.of(profile)
    mem = score_tokens(model, val_tokens, spec)
    result["val_ppl"] = perplexity(mem)
    if val_base_logprobs is not None:
        result["val_mix_ppl"] = perplexity(mix_logprobs(np.asarray(val_base_logprobs), mem, 0.5))
    if val_targets is not None:
        result["val_kl"] = validation_kl(model, val_tokens, val_targets, spec)
    model.train()
    return result


def _save_model(model: Any, folder: Path) -> None:
    with no_transformers_bars():
        model.save_pretrained(folder)


def _saved_model(folder: Path) -> Any:
    """The model saved in `folder` (save_pretrained: safetensors, no pickle)."""
    from transformers import AutoModelForCausalLM

    with no_transformers_bars():
        return AutoModelForCausalLM.from_pretrained(folder)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` onto `final`; killed half-way, `.<final>.old` still holds
    the previous version (see _checkpoint_folder)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _save_checkpoint(out_dir: Path, config: dict, state: TrainState) -> None:
    """Weights (save_pretrained), optimizer/scheduler/scaler/RNG tensors and a JSON state
    (config hash, step, history), written into a folder of this process and renamed into
    place; history.json too, so a run can be plotted while it trains."""
    tmp = out_dir / f".checkpoint.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_model(state.model, tmp)
    torch.save({"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(), "rng": _rng_state()}, tmp / TENSORS_FILE)
    saved = {"config_hash": config_hash(config), "step": state.step, "history": state.history,
             "sha256": {p.name: full_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
    atomic_write_json(tmp / STATE_FILE, {**saved, "state_sha256": _state_digest(saved)})
    _replace_dir(tmp, out_dir / "checkpoint")
    atomic_write_json(out_dir / "history.json", state.history)


def _state_digest(saved: dict) -> str:
    """sha256 of a checkpoint state's JSON fields (config hash, step, history, file hashes)."""
    return hashlib.sha256(json.dumps(saved, sort_keys=True, default=str).encode()).hexdigest()


def check_checkpoint(folder: Path, saved: dict) -> None:
    """ValueError unless the checkpoint's state.json vouches for itself and every file of the
    checkpoint has the sha256 it recorded (full hashes: a resumed run must be exact)."""
    hashes = saved.get("sha256")
    body = {k: v for k, v in saved.items() if k != "state_sha256"}
    if not isinstance(hashes, dict) or saved.get("state_sha256") != _state_digest(body):
        raise ValueError(f"{folder / STATE_FILE} has no valid content hashes (edited, or "
                         "written by an older version)")
    on_disk = {p.name for p in folder.iterdir() if p.is_file() and p.name != STATE_FILE}
    if on_disk != set(hashes):
        raise ValueError(f"the checkpoint holds {sorted(on_disk)}, not the files "
                         f"{sorted(hashes)} its {STATE_FILE} lists")
    for name, digest in hashes.items():
        if full_digest(folder / name) != digest:
            raise ValueError(f"{folder / name} differs from the sha256 recorded when it was saved")


def _checkpoint_folder(out_dir: Path) -> Path | None:
    """The checkpoint to resume from: `checkpoint`, or `.checkpoint.old` when a save was killed
    between its two renames; None if there is neither."""
    for folder in (out_dir / "checkpoint", out_dir / ".checkpoint.old"):
        if (folder / STATE_FILE).exists():
            return folder
    return None


DAMAGED = (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError,
           SafetensorError)  # what a truncated or foreign checkpoint file raises on load


def _load_checkpoint(out_dir: Path, config: dict, state: TrainState) -> bool:
    """Restore `state` from a checkpoint of this exact config: its JSON state is read and its
    config hash compared first, then every file's sha256 is checked, then the tensors are
    loaded with weights_only=True (no code runs). False (and `state` untouched) when there is
    none; a damaged one (truncated, a flipped byte, no hashes) is reported and training starts
    from scratch."""
    folder = _checkpoint_folder(out_dir)
    if folder is None:
        return False
    try:
        saved = json.loads((folder / STATE_FILE).read_text())
        if saved["config_hash"] != config_hash(config):
            return False
        check_checkpoint(folder, saved)
        tensors = torch.load(folder / TENSORS_FILE, weights_only=True, map_location="cpu")
        weights = _saved_model(folder).state_dict()
    except DAMAGED as err:
        warnings.warn(f"the checkpoint in {folder} is damaged ({type(err).__name__}: "
                      f"{str(err)[:200]}); training starts from scratch", stacklevel=3)
        return False
    _restore(state, weights, tensors, saved)
    return True


def _restore(state: TrainState, weights: dict, tensors: dict, saved: dict) -> None:
    """Put a checkpoint's weights, optimizer/scheduler/scaler/RNG states, step and history
    into `state`."""
    state.model.load_state_dict(weights)
    state.optimizer.load_state_dict(tensors["optimizer"])
    state.scheduler.load_state_dict(tensors["scheduler"])
    state.scaler.load_state_dict(tensors["scaler"])
    torch.set_rng_state(tensors["rng"]["torch"])
    if "cuda" in tensors["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["rng"]["cuda"])
    state.step, state.history = int(saved["step"]), saved["history"]


def is_finished(out_dir: Path, config: dict) -> bool:
    """A finished run of this config: manifest with the same hash, vouching for the final
    model folder and the history; a file that differs from its manifest (a flipped byte in the
    weights) is a ValueError that names the folder to delete. A manifest that does not vouch
    for `model/` (written by an older version) is not a finished run: it is trained again."""
    manifest = read_manifest(out_dir) if out_dir.exists() else None
    if manifest is None or manifest["config_hash"] != config_hash(config):
        return False
    vouched = manifest.get("files", {})
    if not {"model/config.json", "history.json"} <= set(vouched):
        return False
    check_stage_files(out_dir, manifest)
    return True


def _reuse(out_dir: Path, model: Any) -> tuple[Any, dict]:
    """The finished run's weights, loaded into `model` (on its device), and its history; a
    damaged saved model is a ValueError that says what to do."""
    try:
        weights = _saved_model(out_dir / "model").state_dict()
        model.load_state_dict(weights)
    except DAMAGED as err:
        raise ValueError(f"the trained Memory Decoder in {out_dir / 'model'} is damaged "
                         f"({type(err).__name__}: {str(err)[:200]}); delete the folder {out_dir} "
                         "to train it again") from None
    return model.eval(), load_history(out_dir)


def load_run(out_dir: str | Path) -> tuple[Any, dict]:
    """A finished run's model (float32, eval mode; no base model needed) and its history; a
    damaged saved model is a ValueError that says what to do."""
    out_dir = Path(out_dir)
    try:
        model = _saved_model(out_dir / "model").float()
    except DAMAGED as err:
        raise ValueError(f"the trained model in {out_dir / 'model'} is damaged "
                         f"({type(err).__name__}: {str(err)[:200]}); delete the folder {out_dir} "
                         "to train it again") from None
    return model.eval(), load_history(out_dir)


def _clear_run(out_dir: Path) -> None:
    """Remove a stale run's files (manifest first, so nothing looks finished) and any leftover
    temporary folders; nothing else."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in [out_dir / name for name in RUN_FILES] + sorted(out_dir.glob(".*.tmp-*")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _finish(out_dir: Path, config: dict, model: Any, history: dict) -> None:
    """Final weights and history, then the manifest (last: the run is complete), then the
    checkpoint is dropped (the optimizer state is twice the model)."""
    tmp = out_dir / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_model(model, tmp)
    _replace_dir(tmp, out_dir / "model")
    atomic_write_json(out_dir / "history.json", history)
    old = out_dir / ".checkpoint.old"  # still a resume point (see _checkpoint_folder), but
    shutil.rmtree(old, ignore_errors=True)  # hidden: not part of the finished run's manifest
    if (out_dir / "checkpoint").exists():
        (out_dir / "checkpoint").rename(old)
    write_manifest(out_dir, config, steps=len(history["steps"]),
                   final_eval=history["evals"][-1] if history["evals"] else None)
    shutil.rmtree(old, ignore_errors=True)


def load_history(out_dir: str | Path) -> dict:
    """The training history of a run folder (history.json)."""
    path = Path(out_dir) / "history.json"
    if not path.exists():
        raise ValueError(f"{path} does not exist: train the Memory Decoder first")
    return json.loads(path.read_text())
