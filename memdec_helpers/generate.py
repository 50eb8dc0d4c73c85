"""Decoding from base + Memory Decoder: p = α·p_Mem + (1−α)·p_base at every step.

Both models keep their own KV cache, so each step feeds only the new token to each model:
the Memory Decoder adds one small forward pass per token and no retrieval.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .devices import resolve_device
from .evaluate import mix_logprobs
from .memdec import check_same_vocabulary


class CachedLM:
    """A causal LM stepped one token at a time with its KV cache."""

    def __init__(self, model: Any):
        self.model, self.past = model, None
        # transformers >= 5.2x names the cache argument `cache`; 4.4x calls it `past_key_values`
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def _run(self, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.model(ids, use_cache=True, **kwargs)
        self.past = getattr(out, "cache", None) or out.past_key_values
        return torch.log_softmax(out.logits[:, -1].float(), -1)  # [B, V]

    def start(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._run(input_ids)

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        return self._run(next_ids[:, None], **{self.cache_arg: self.past})


def filter_logits(logprobs: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then keep the top-k and the smallest set with cumulative prob >= top_p."""
    logits = logprobs / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, -1) >= top_p  # keep the first over top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
    return logits


def _check_args(alpha, temperature, top_k, top_p, input_ids) -> None:
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (the Memory Decoder's weight)")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_k={top_k} must be >= 0 and top_p={top_p} in (0, 1]")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [B, T] tensor, got {tuple(input_ids.shape)}")


@torch.inference_mode()
def generate(base_model: Any, memdec: Any, input_ids: torch.Tensor, max_new_tokens: int,
             alpha: float | None = 0.5, *, do_sample: bool = False, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             device: Any = None, return_logprobs: bool = False) -> Any:
    """Prompt + `max_new_tokens` tokens [B, T + n]; with return_logprobs also the mixed
    next-token log-probs of every step [B, n, V]. memdec=None or alpha=None: base model only."""
    input_ids = torch.as_tensor(input_ids)
    input_ids = input_ids[None] if input_ids.ndim == 1 else input_ids
    _check_args(alpha, temperature, top_k, top_p, input_ids)
    use_mem = memdec is not None and alpha is not None and alpha > 0
    if memdec is not None:
        check_same_vocabulary(memdec, base_model)
    device = resolve_device(device or next(base_model.parameters()).device)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    ids = input_ids.to(device)
    base, mem = CachedLM(base_model), CachedLM(memdec) if use_mem else None
    base_lp, mem_lp = base.start(ids), mem.start(ids) if use_mem else None
    steps = []
    for _ in range(max_new_tokens):
        mixed = mix_logprobs(base_lp, mem_lp, alpha) if use_mem else base_lp  # [B, V]
        steps.append(mixed)
        if do_sample:
            probs = torch.softmax(filter_logits(mixed, temperature, top_k, top_p), -1)
            next_ids = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            next_ids = mixed.argmax(-1)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        base_lp = base.step(next_ids)
        mem_lp = mem.step(next_ids) if use_mem else None
    if return_logprobs:
        return ids, torch.stack(steps, dim=1)
    return ids


def decode_continuations(tokenizer: Any, ids: torch.Tensor, prompt_length: int) -> list[str]:
    """The generated part of each row, as text."""
    return tokenizer.batch_decode(ids[:, prompt_length:], skip_special_tokens=True)
