"""Evaluation: per-token log-probs with sliding windows, interpolation, perplexity, results table.

Per-token log-probs are cached on disk, so every alpha / lambda / temperature sweep afterwards is
a few numpy operations.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from .artifacts import clear_stage, stage_dir, stage_is_current, write_manifest
from .devices import autocast, autocast_dtype, resolve_device
from .windows import window_batches


def check_context_fits(model: Any, context_length: int) -> None:
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None)
    if limit is not None and context_length > limit:
        raise ValueError(
            f"context_length={context_length} exceeds the model's {limit} positions; "
            f"use context_length <= {limit}"
        )


def check_finite(tensor: torch.Tensor, what: str) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(
            f"{what} contain NaN or inf; the model weights or its precision are broken "
            "(try dtype='float32' or reload the model)"
        )


@torch.inference_mode()
def token_logprobs(model: Any, token_ids: np.ndarray, context_length: int, stride: int,
                   batch_size: int = 32, device: str | torch.device | None = None,
                   progress: bool = False) -> np.ndarray:
    """float32 [N-1]: entry i = log p(token[i+1] | up to `context_length` preceding tokens)."""
    check_context_fits(model, context_length)
    device = resolve_device(device or next(model.parameters()).device)
    amp = autocast_dtype(device)
    out = np.empty(len(token_ids) - 1 if len(token_ids) > 1 else 0, dtype=np.float32)
    for ids, scored, positions in window_batches(token_ids, context_length, stride, batch_size,
                                                 progress, desc="log-probs"):
        ids = ids.to(device)
        with autocast(device, amp):
            logits = model(ids).logits[:, :-1]  # [b, L-1, V]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        check_finite(logprobs, f"log-probs of {getattr(model.config, '_name_or_path', 'the model')}")
        target = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()  # [b, L-1]
        out[positions[scored].numpy()] = target[scored].numpy()
    return out


def _as_float_array(x: Any) -> tuple[Any, bool]:
    return (x, True) if isinstance(x, torch.Tensor) else (np.asarray(x, dtype=np.float64), False)


def mix_logprobs(base_logprobs: Any, mem_logprobs: Any, alpha: float) -> Any:
    """log(alpha * e^mem + (1 - alpha) * e^base), elementwise and stable; numpy or torch."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the weight of the memory component)")
    base, is_torch = _as_float_array(base_logprobs)
    mem, _ = _as_float_array(mem_logprobs)
    if tuple(base.shape) != tuple(mem.shape):
        raise ValueError(f"base_logprobs shape {tuple(base.shape)} != mem_logprobs shape "
                         f"{tuple(mem.shape)}; both must score the same tokens")
    if alpha == 0:
        return base
    if alpha == 1:
        return mem
    if is_torch:
        mem = torch.as_tensor(mem, dtype=base.dtype, device=base.device)
        return torch.logaddexp(mem + np.log(alpha), base + np.log1p(-alpha))
    return np.logaddexp(mem + np.log(alpha), base + np.log1p(-alpha))


def perplexity(token_logprobs: Any) -> float:
    """exp(-mean log-prob)."""
    values = np.asarray(token_logprobs.detach().cpu() if isinstance(token_logprobs, torch.Tensor)
                        else token_logprobs, dtype=np.float64)
    if values.size == 0:
        raise ValueError("token_logprobs is empty; score at least one token")
    return float(np.exp(-values.mean()))


def sweep(base_lp: np.ndarray, other_lp: np.ndarray, grid: Sequence[float]) -> dict[str, Any]:
    """Perplexity of the mixture for every weight in `grid`, and the best weight."""
    ppls = [perplexity(mix_logprobs(base_lp, other_lp, w)) for w in grid]
    best = int(np.argmin(ppls))
    return {"grid": list(map(float, grid)), "ppl": ppls, "best": float(grid[best]),
            "best_ppl": ppls[best]}


def tokens_hash(token_ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(token_ids, dtype=np.int32).tobytes()).hexdigest()[:16]


def cached_token_logprobs(profile: Any, name: str, model: Any, token_ids: np.ndarray, split: str,
                          model_id: str, progress: bool = True) -> np.ndarray:
    """token_logprobs cached in `eval/<name>-<split>.npy`; recomputed when anything changed."""
    directory = stage_dir(profile, f"eval/{name}-{split}")
    config = {"model_id": model_id, "split": split, "tokens": tokens_hash(token_ids),
              **profile.subset("context_length", "stride")}
    if stage_is_current(directory, config):
        return np.load(directory / "logprobs.npy")
    values = token_logprobs(model, token_ids, profile.context_length, profile.stride,
                            profile.batch_size, progress=progress)
    clear_stage(directory)
    np.save(directory / "logprobs.npy", values)
    write_manifest(directory, config, n=len(values), perplexity=perplexity(values))
    return values


def results_table(val: dict[str, Any], test: dict[str, Any], alpha_grid: Sequence[float],
                  lambda_grid: Sequence[float]) -> list[dict[str, Any]]:
    """Rows (method, weight, temperature, val ppl, test ppl); weights chosen on validation.

    `val`/`test` hold "base" and "memdec" arrays and "knn": {temperature: array}."""
    rows = [{"method": "base", "weight": None, "temperature": None,
             "val_ppl": perplexity(val["base"]), "test_ppl": perplexity(test["base"])}]
    if "knn" in val:
        choices = [(sweep(val["base"], lp, lambda_grid), t) for t, lp in val["knn"].items()]
        best, temp = min(choices, key=lambda c: c[0]["best_ppl"])
        rows.append({"method": "base + kNN-LM", "weight": best["best"], "temperature": temp,
                     "val_ppl": best["best_ppl"],
                     "test_ppl": perplexity(mix_logprobs(test["base"], test["knn"][temp],
                                                         best["best"]))})
    if "memdec" in val:
        rows.append({"method": "MemDec alone", "weight": None, "temperature": None,
                     "val_ppl": perplexity(val["memdec"]), "test_ppl": perplexity(test["memdec"])})
        best = sweep(val["base"], val["memdec"], alpha_grid)
        rows.append({"method": "base + MemDec", "weight": best["best"], "temperature": None,
                     "val_ppl": best["best_ppl"],
                     "test_ppl": perplexity(mix_logprobs(test["base"], test["memdec"],
                                                         best["best"]))})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of `results_table` rows."""
    lines = ["| method | weight (α or λ) | kNN τ | val ppl | test ppl |", "|---|---|---|---|---|"]
    for r in rows:
        weight = "" if r["weight"] is None else f"{r['weight']:.2f}"
        temp = "" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(f"| {r['method']} | {weight} | {temp} | {r['val_ppl']:.2f} | {r['test_ppl']:.2f} |")
    return "\n".join(lines)
