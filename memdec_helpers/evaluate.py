"""Evaluation: per-token log-probs with sliding windows, interpolation, perplexity, results table.

Per-token log-probs are cached on disk, so every alpha / lambda / temperature sweep afterwards is
a few numpy operations.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .artifacts import (array_hash, atomic_save_npy, check_stage_name, clear_stage, stage_dir,
                        stage_is_current, write_manifest)
from .budget import sized_window_batches
from .devices import autocast, autocast_dtype, resolve_device
from .models import position_limit
from .windows import as_token_array


def model_name(model: Any) -> str:
    """The model's hub name or folder, else its class name (for error messages)."""
    return getattr(model.config, "_name_or_path", "") or type(model).__name__


def check_context_fits(model: Any, context_length: int) -> None:
    """ValueError if the windows are longer than the model's position embeddings."""
    limit = position_limit(model)
    if limit is not None and context_length > limit:
        raise ValueError(
            f"context_length={context_length} exceeds the {limit} positions of model "
            f"{model_name(model)}; use context_length <= {limit}"
        )


def check_token_range(model: Any, tokens: np.ndarray) -> None:
    """ValueError if a token id is outside the model's vocabulary (another tokenizer's ids)."""
    vocab = getattr(model.config, "vocab_size", None)
    if tokens.size and (tokens.min() < 0 or (vocab is not None and tokens.max() >= vocab)):
        raise ValueError(
            f"token_ids span [{tokens.min()}, {tokens.max()}] but model {model_name(model)} has "
            f"a vocabulary of {vocab}; tokenize the text with the model's own tokenizer"
        )


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """ValueError if `tensor` holds NaN or inf (broken weights or an fp16 overflow)."""
    if not torch.isfinite(tensor).all():
        raise ValueError(
            f"{what} contain NaN or inf; the model weights or its precision are broken "
            "(try dtype='float32' or reload the model)"
        )


def run_device(model: Any, device: str | torch.device | None) -> torch.device:
    """`device` if given (the model is moved there), else the device the model is on."""
    if device is None:
        return next(model.parameters()).device
    device = resolve_device(device)
    model.to(device)
    return device


FLOAT32_CHUNK = 2**26  # logits upcast to float32 at a time (256 MB), whatever the batch size


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[b, T] log-softmax of `logits` [b, T, V] at `targets` [b, T], in float32.

    Same as log_softmax(...).gather(...), without a [b, T, V] tensor of log-probs: the float32
    upcast is done a few windows at a time, so a 1024 x 50k-vocabulary batch of fp16 logits
    does not triple in memory."""
    rows = max(1, FLOAT32_CHUNK // max(1, logits.shape[1] * logits.shape[2]))
    out = []
    for lo in range(0, len(logits), rows):
        chunk = logits[lo:lo + rows].float()  # [c, T, V]
        lse = torch.logsumexp(chunk, dim=-1)  # [c, T]
        check_finite(lse, "logits")
        out.append(chunk.gather(-1, targets[lo:lo + rows, :, None]).squeeze(-1) - lse)  # [c, T]
    return torch.cat(out)  # [b, T]


@torch.inference_mode()
def token_logprobs(model: Any, token_ids: Any, context_length: int, stride: int,
                   batch_size: int = 32, device: str | torch.device | None = None,
                   progress: bool = False, dtype: str = "auto") -> np.ndarray:
    """float32 [N-1]: entry i = log p(token[i+1] | up to `context_length` preceding tokens)."""
    tokens = as_token_array(token_ids)
    check_context_fits(model, context_length)
    check_token_range(model, tokens)
    device = run_device(model, device)
    amp = autocast_dtype(device, dtype)
    batches, _ = sized_window_batches(model, tokens, context_length, stride, batch_size,
                                      "logprobs", device, amp, progress, "log-probs")
    out = np.empty(len(tokens) - 1, dtype=np.float32)  # [N-1]
    for ids, scored, positions in batches:
        ids = ids.to(device)  # [b, L]
        with autocast(device, amp):
            logits = model(ids, use_cache=False).logits[:, :-1]  # [b, L-1, V]
        try:
            target = target_logprobs(logits, ids[:, 1:]).cpu()  # [b, L-1]
        except ValueError as err:
            raise ValueError(f"model {model_name(model)}: {err}") from None
        out[positions[scored].numpy()] = target[scored].numpy()
    return out


def _as_pair(base: Any, mem: Any) -> tuple[Any, Any, bool]:
    """Both as torch tensors (same dtype/device as a torch input) or both as float64 numpy."""
    if isinstance(base, torch.Tensor) or isinstance(mem, torch.Tensor):
        like = base if isinstance(base, torch.Tensor) else mem
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return (torch.as_tensor(base, dtype=dtype, device=like.device),
                torch.as_tensor(mem, dtype=dtype, device=like.device), True)
    return np.asarray(base, dtype=np.float64), np.asarray(mem, dtype=np.float64), False


def mix_logprobs(base_logprobs: Any, mem_logprobs: Any, alpha: float) -> Any:
    """log(alpha * e^mem + (1 - alpha) * e^base), elementwise and stable; numpy or torch.

    alpha = 0 returns the base values and alpha = 1 the memory values exactly; -inf entries
    (probability 0) are fine as long as the other component is not also 0 where it is weighted."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the weight of the memory component)")
    base, mem, is_torch = _as_pair(base_logprobs, mem_logprobs)
    if tuple(base.shape) != tuple(mem.shape):
        raise ValueError(f"base_logprobs shape {tuple(base.shape)} != mem_logprobs shape "
                         f"{tuple(mem.shape)}; both must score the same tokens")
    alpha = float(alpha)
    if alpha == 0.0:
        return base
    if alpha == 1.0:
        return mem
    log_a, log_1ma = float(np.log(alpha)), float(np.log1p(-alpha))
    if is_torch:
        return torch.logaddexp(mem + log_a, base + log_1ma)
    return np.logaddexp(mem + log_a, base + log_1ma)


def perplexity(token_logprobs: Any) -> float:
    """exp(-mean log-prob): the perplexity of the scored tokens."""
    if isinstance(token_logprobs, torch.Tensor):
        token_logprobs = token_logprobs.detach().cpu()
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.size == 0:
        raise ValueError("token_logprobs is empty; perplexity needs at least one scored token")
    return float(np.exp(-values.mean()))


def sweep(base_lp: Any, other_lp: Any, grid: Sequence[float]) -> dict[str, Any]:
    """Perplexity of the mixture for every weight in `grid` (weight of `other_lp`), and the best."""
    grid = [float(w) for w in grid]
    if not grid:
        raise ValueError("grid is empty; give at least one mixing weight in [0, 1]")
    ppls = [perplexity(mix_logprobs(base_lp, other_lp, w)) for w in grid]
    best = int(np.argmin(ppls))
    return {"grid": grid, "ppl": ppls, "best": grid[best], "best_ppl": ppls[best]}


def tokens_hash(token_ids: Any) -> str:
    """A short hash of a token sequence: the identity of an input corpus in manifests."""
    return array_hash(as_token_array(token_ids).astype(np.int64, copy=False))


def cached_token_logprobs(profile: Any, name: str, model: Any, token_ids: Any, split: str,
                          model_id: str, progress: bool = True) -> np.ndarray:
    """token_logprobs cached in `eval/<name>-<split>/`; recomputed when anything it hashes changed.

    The manifest hashes the model id, the split, the window knobs and the tokens, so sweeps over
    mixing weights reuse it and a new corpus or model id recomputes it. The model's weights are
    not hashed: give a retrained model a new `model_id`."""
    check_stage_name(name, "name")
    check_stage_name(split, "split")
    config = {"model_id": model_id, "split": split, "tokens": tokens_hash(token_ids),
              **profile.subset("context_length", "stride", "dtype")}
    directory = stage_dir(profile, f"eval/{name}-{split}")
    if stage_is_current(directory, config):
        return np.load(directory / "logprobs.npy")
    values = token_logprobs(model, token_ids, profile.context_length, profile.stride,
                            profile.batch_size, progress=progress, dtype=profile.dtype)
    clear_stage(directory)
    atomic_save_npy(directory / "logprobs.npy", values)
    write_manifest(directory, config, n=len(values), perplexity=perplexity(values))
    return values


def _check_split_dicts(val: dict[str, Any], test: dict[str, Any]) -> None:
    if "base" not in val or "base" not in test:
        raise ValueError("val and test must both hold 'base' log-probs")
    if set(val) != set(test):
        raise ValueError(f"val has {sorted(val)} but test has {sorted(test)}; give the same methods")
    if "knn" in val and set(val["knn"]) != set(test["knn"]):
        raise ValueError(f"kNN temperatures differ: val {sorted(val['knn'])}, "
                         f"test {sorted(test['knn'])}")


def _row(method: str, weight: float | None, temperature: float | None, val_ppl: float,
         test_ppl: float) -> dict[str, Any]:
    return {"method": method, "weight": weight, "temperature": temperature,
            "val_ppl": val_ppl, "test_ppl": test_ppl}


def results_table(val: dict[str, Any], test: dict[str, Any], alpha_grid: Sequence[float],
                  lambda_grid: Sequence[float]) -> list[dict[str, Any]]:
    """Rows (method, weight, temperature, val ppl, test ppl); every choice made on validation.

    `val`/`test` hold "base" and optionally "memdec" arrays and "knn": {temperature: array};
    kNN-LM picks (lambda, temperature) jointly, base + MemDec picks alpha."""
    _check_split_dicts(val, test)
    rows = [_row("base", None, None, perplexity(val["base"]), perplexity(test["base"]))]
    if val.get("knn"):
        choices = [(sweep(val["base"], lp, lambda_grid), t) for t, lp in val["knn"].items()]
        best, temp = min(choices, key=lambda c: c[0]["best_ppl"])
        test_mix = mix_logprobs(test["base"], test["knn"][temp], best["best"])
        rows.append(_row("base + kNN-LM", best["best"], temp, best["best_ppl"],
                         perplexity(test_mix)))
    if "memdec" in val:
        rows.append(_row("MemDec alone", None, None, perplexity(val["memdec"]),
                         perplexity(test["memdec"])))
        best = sweep(val["base"], val["memdec"], alpha_grid)
        test_mix = mix_logprobs(test["base"], test["memdec"], best["best"])
        rows.append(_row("base + MemDec", best["best"], None, best["best_ppl"],
                         perplexity(test_mix)))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of `results_table` rows."""
    lines = ["| method | weight (α or λ) | kNN τ | val ppl | test ppl |", "|---|---|---|---|---|"]
    for r in rows:
        weight = "" if r["weight"] is None else f"{r['weight']:.2f}"
        temp = "" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(f"| {r['method']} | {weight} | {temp} | {r['val_ppl']:.2f} | "
                     f"{r['test_ppl']:.2f} |")
    return "\n".join(lines)
