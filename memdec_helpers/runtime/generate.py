"""Decoding from a base model mixed with a second next-token distribution:
p = α·p_mem + (1−α)·p_base at every step.

The second distribution is a Memory Decoder (a causal LM with its own KV cache: one small forward
pass per token, no retrieval) or any `NextTokenSource`, such as kNN-LM's search per token
(`knnlm.knn_lm_generate`); both go through the same loop and the same checks.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from functools import partial
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from .devices import resolve_device
from ..core.mixing import mix_logprobs
from .decoder import check_same_vocabulary
from .models import position_limit


class NextTokenSource(Protocol):
    """A second next-token distribution for decoding, stepped in lockstep with the base model
    (whose forward pass for the same tokens runs first)."""

    def start(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs [B, V] after the prompt [B, T]."""

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Next-token log-probs [B, V] after one more token per row [B]."""


class CachedLM:
    """A causal LM stepped one token at a time with its KV cache (transformers 4.4x or 5.x)."""

    def __init__(self, model: Any):
        self.model, self.past = model, None
        # transformers 5.x names the cache argument `cache`; 4.4x calls it `past_key_values`
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def _run(self, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.model(ids, use_cache=True, **kwargs)
        past = getattr(out, "cache", None)
        self.past = past if past is not None else out.past_key_values
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]

    def start(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the whole prompt [B, T]; next-token log-probs [B, V]."""
        return self._run(input_ids)

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row [B] (the cache holds the rest); next log-probs [B, V]."""
        return self._run(next_ids[:, None], **{self.cache_arg: self.past})


def filter_logits(logprobs: torch.Tensor, sampling_temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> torch.Tensor:
    """Sampling logits [B, V]: divide by the sampling temperature, keep the top_k tokens (0: all)
    and the smallest set whose probability reaches top_p; the rest get -inf."""
    logits = logprobs / sampling_temperature  # [B, V]
    if 0 < top_k < logits.shape[-1]:
        top = logits.topk(top_k, dim=-1).indices  # [B, k]
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
        logits = logits.masked_fill(~keep, -torch.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_logits, dim=-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p  # mass before the token already >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


def _check_args(base_model: Any, memdec: Any, input_ids: torch.Tensor, max_new_tokens: int,
                alpha: float | None, sampling_temperature: float, top_k: int,
                top_p: float) -> None:
    """Every argument of generate (ValueError naming it and what is allowed)."""
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the weight of the second "
                         "distribution: the Memory Decoder or kNN) or None")
    if not sampling_temperature > 0:
        raise ValueError(f"sampling_temperature={sampling_temperature} must be > 0")
    if not _whole(top_k) or top_k < 0:
        raise ValueError(f"top_k={top_k} must be an integer >= 0 (0 keeps every token)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (1 keeps every token)")
    if not _whole(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be an integer >= 0")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0 or input_ids.is_floating_point():
        raise ValueError(f"input_ids must be integer [B, T] with T >= 1 (prompts of equal length), "
                         f"got {input_ids.dtype} {tuple(input_ids.shape)}")
    vocab = base_model.config.vocab_size
    if input_ids.min() < 0 or input_ids.max() >= vocab:
        raise ValueError(f"input_ids must be in [0, {vocab}) (the base model's vocabulary)")
    models = [("base_model", base_model)]
    if isinstance(memdec, torch.nn.Module):
        check_same_vocabulary(memdec, base_model)
        models.append(("memdec", memdec))
    elif memdec is not None and not (hasattr(memdec, "start") and hasattr(memdec, "step")):
        raise ValueError(f"memdec must be a causal LM (a Memory Decoder), a NextTokenSource "
                         f"(start/step, e.g. kNN) or None; got {type(memdec).__name__}")
    fed = input_ids.shape[1] + max(int(max_new_tokens) - 1, 0)  # the last token is never fed
    for name, model in models:
        limit = position_limit(model)
        if limit is not None and fed > limit:
            raise ValueError(f"prompt ({input_ids.shape[1]}) + max_new_tokens ({max_new_tokens}) "
                             f"- 1 = {fed} exceeds the {limit} positions of {name}; "
                             "use a shorter prompt or fewer new tokens")


def _whole(value: Any) -> bool:
    """An integer, or a float with an integer value (NaN, inf and 2.5 are not)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isfinite(value)) and value == int(value)


class _Checked:
    """A next-token source whose log-probs [B, V] are checked at every step: NaN, +inf, or
    -inf for every token of a row is a ValueError naming the model (-inf for some tokens is
    allowed: kNN gives it to tokens no neighbour holds)."""

    def __init__(self, source: Any, who: str) -> None:
        self.source, self.who, self.steps = source, who, 0

    def start(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._checked(self.source.start(input_ids))

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        return self._checked(self.source.step(next_ids))

    def _checked(self, logprobs: torch.Tensor) -> torch.Tensor:
        flags = torch.stack([logprobs.isnan().any(-1), (logprobs == torch.inf).any(-1),
                             logprobs.amax(-1) == -torch.inf])  # [3, B]
        if flags.any():
            problem = ["NaN", "+inf", "-inf for every token"][int(flags.any(-1).int().argmax())]
            rows = flags.any(0).nonzero()[:, 0].tolist()
            raise ValueError(
                f"generate: {self.who} gave next-token log-probs with {problem} at step "
                f"{self.steps} (rows {rows[:8]}): its weights or inputs are broken (a damaged or "
                "diverged model); check it with token_logprobs, and retrain or reload it")
        self.steps += 1
        return logprobs


def _label(name: str, model: Any) -> str:
    """`name` (the argument) and, for a model, what it was loaded from."""
    path = getattr(getattr(model, "config", None), "_name_or_path", "")
    return f"{name} ({path})" if path else name


@contextlib.contextmanager
def _eval_mode(*models: Any) -> Iterator[None]:
    """Dropout off while generating; each model's train/eval mode is restored afterwards."""
    modes = [(m, m.training) for m in models if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, was_training in modes:
            m.train(was_training)


def _next_tokens(mixed: torch.Tensor, do_sample: bool, sampling_temperature: float, top_k: int,
                 top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy argmax or a sample from the filtered mixed distribution; [B]."""
    if not do_sample:
        return mixed.argmax(dim=-1)
    logits = filter_logits(mixed, sampling_temperature, top_k, top_p)  # [B, V]
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(base_model: Any, memdec: Any, input_ids: Any, max_new_tokens: int,
             alpha: float | None = 0.5, *, do_sample: bool = False,
             sampling_temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             seed: int | None = None, device: str | torch.device | None = None,
             return_logprobs: bool = False) -> Any:
    """Prompt + exactly `max_new_tokens` tokens, LongTensor [B, T + n], decoded from
    log(α·p_mem + (1−α)·p_base) with a KV cache per model (no early stop at EOS).

    `memdec` is the second distribution: a Memory Decoder (a causal LM sharing the base
    tokenizer) or a `NextTokenSource` (kNN-LM); None, or alpha=None, decodes the base model
    alone. Models are moved to `device` (default: the base model's). With return_logprobs, also
    the mixed next-token log-probs of every step, [B, n, V]."""
    input_ids = torch.as_tensor(input_ids)
    input_ids = input_ids[None] if input_ids.ndim == 1 else input_ids
    _check_args(base_model, memdec, input_ids, max_new_tokens, alpha, sampling_temperature,
                top_k, top_p)
    weight = float(alpha) if memdec is not None and alpha is not None else 0.0
    device = resolve_device(device) if device is not None else next(base_model.parameters()).device
    models = [base_model] + ([memdec] if weight > 0 and isinstance(memdec, torch.nn.Module) else [])
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    pick = partial(_next_tokens, do_sample=do_sample, sampling_temperature=sampling_temperature,
                   top_k=top_k, top_p=top_p, generator=generator)
    second = _Checked(_second(memdec), _label("memdec", memdec)) if weight > 0 else None
    with _eval_mode(*(m.to(device) for m in models)):
        return _decode(_Checked(CachedLM(base_model), _label("base_model", base_model)), second,
                       weight, input_ids.long().to(device), int(max_new_tokens), pick,
                       return_logprobs)


def _second(memdec: Any) -> NextTokenSource:
    """The second distribution as a NextTokenSource (a Memory Decoder gets its KV cache)."""
    return CachedLM(memdec) if isinstance(memdec, torch.nn.Module) else memdec


def _decode(base: CachedLM, mem: NextTokenSource | None, alpha: float, ids: torch.Tensor,
            max_new_tokens: int, pick: Callable[[torch.Tensor], torch.Tensor],
            return_logprobs: bool) -> Any:
    """The decoding loop: one base step, one step of the second distribution, mix, pick."""
    base_lp = base.start(ids)  # [B, V]; first: a source may read the base model's state
    mem_lp = mem.start(ids).to(ids.device) if mem is not None else None  # [B, V]
    steps = []
    for i in range(max_new_tokens):
        mixed = mix_logprobs(base_lp, mem_lp, alpha) if mem is not None else base_lp  # [B, V]
        if return_logprobs:
            steps.append(mixed)
        next_ids = pick(mixed)  # [B]
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        if i + 1 < max_new_tokens:  # the last token needs no forward pass
            base_lp = base.step(next_ids)
            mem_lp = mem.step(next_ids).to(ids.device) if mem is not None else None
    if not return_logprobs:
        return ids
    empty = torch.empty(ids.shape[0], 0, base_lp.shape[-1], device=ids.device)
    return ids, torch.stack(steps, dim=1) if steps else empty


def decode_continuations(tokenizer: Any, ids: torch.Tensor, prompt_length: int) -> list[str]:
    """The generated part of each row, as text."""
    return tokenizer.batch_decode(ids[:, prompt_length:], skip_special_tokens=True)


def ms_per_token_rounds(runs: dict[str, Callable[[int], Any]], new_tokens: int, repeats: int = 5,
                        warmup_tokens: int = 4, clock: Callable[[], float] = time.perf_counter
                        ) -> dict[str, list[float]]:
    """Milliseconds per generated token of each run (`run(n)` generates n tokens) in each of
    `repeats` rounds in which the runs alternate, so a burst of load on a shared machine moves
    one round, not one method."""
    if new_tokens < 1 or repeats < 1:
        raise ValueError(f"new_tokens={new_tokens} and repeats={repeats} must be >= 1")
    for run in runs.values():
        run(warmup_tokens)  # first calls pay for allocations and lazy initialisation
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = clock()
            run(new_tokens)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # GPU work is asynchronous: wait before reading the clock
            ms[name].append(1e3 * (clock() - start) / new_tokens)
    return ms


def median_ms_per_token(runs: dict[str, Callable[[int], Any]], new_tokens: int, repeats: int = 5,
                        warmup_tokens: int = 4, clock: Callable[[], float] = time.perf_counter
                        ) -> dict[str, float]:
    """The median over `repeats` alternating rounds of ms_per_token_rounds, per run."""
    rounds = ms_per_token_rounds(runs, new_tokens, repeats, warmup_tokens, clock)
    return {name: float(np.median(ms)) for name, ms in rounds.items()}
