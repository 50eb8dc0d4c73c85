"""Exercises on inference (lessons 04-05): choose α on validation, mix the base model's and the
Memory Decoder's next-token distributions for one generation step, and decide whether a Memory
Decoder plugs into a base model."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..core.mixing import mix_logprobs, perplexity
from .exercise_kit import WrongAnswer, exercise, f64, function, given, returned


@exercise("the validation perplexity of the mixture for every α of `grid` (my_ppls), and the "
          "best α (my_alpha)",
          "log p_mix = np.logaddexp(log α + log p_Mem, log(1−α) + log p_LM); the best α has "
          "the LOWEST perplexity")
def choose_alpha(answer: Any, base_logprobs: Any, memdec_logprobs: Any, grid: Any,
                 chosen: float | None = None) -> str:
    """Lesson 04: answer = (my_ppls, my_alpha); compared with core.mixing.sweep."""
    answer = given(answer)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise WrongAnswer("check the pair (my_ppls, my_alpha)")
    ppls, alpha = (given(part) for part in answer)
    base, mem, grid = f64(base_logprobs), f64(memdec_logprobs), [float(a) for a in grid]
    right = [perplexity(mix_logprobs(base, mem, a)) for a in grid]
    ppls = np.asarray(ppls, dtype=np.float64)
    if ppls.shape != (len(grid),):
        raise WrongAnswer(f"one perplexity per α of the grid ({len(grid)}), got shape {ppls.shape}")
    if not np.allclose(ppls, right, rtol=1e-6):
        geometric = [perplexity(a * mem + (1 - a) * base) for a in grid]
        swapped = [perplexity(mix_logprobs(mem, base, a)) for a in grid]
        if np.allclose(ppls, geometric, rtol=1e-6):
            raise WrongAnswer("you mixed the log-probs linearly (a geometric mean); mix the "
                              "probabilities: logaddexp(log α + log p_Mem, log(1−α) + log p_LM)")
        if np.allclose(ppls, swapped, rtol=1e-6):
            raise WrongAnswer("α is the weight of the Memory Decoder: α·p_Mem + (1−α)·p_LM")
        bad = int(np.flatnonzero(~np.isclose(ppls, right, rtol=1e-6))[0])
        raise WrongAnswer(f"at α = {grid[bad]} the perplexity is {right[bad]:.4f}, "
                          f"you have {ppls[bad]:.4f}")
    best = grid[int(np.argmin(right))]
    if float(alpha) != best:
        worst = grid[int(np.argmax(right))]
        why = ("the best α has the LOWEST perplexity" if float(alpha) == worst
               else "pick the α of the grid with the lowest perplexity")
        raise WrongAnswer(f"{why}: α = {best} (perplexity {min(right):.2f}), not {alpha}")
    table = "" if chosen is None else f"; the results table uses α = {chosen}"
    if chosen is not None and float(chosen) != best:
        raise WrongAnswer(f"your α = {best} is right, but the results table uses {chosen}: was it "
                          "chosen on another split?")
    return f"best α = {best}: validation perplexity {min(right):.2f}{table}"




MIX_SIGNATURE = "mix_next_token(base_logits, memdec_logits, alpha)"
UNDERFLOW_GAP = 2000.0  # nats below the top token: exp underflows to 0, even in float64


@exercise("write " + MIX_SIGNATURE + " -> the log-probabilities [V] of the next token under "
          "α·p_Mem + (1−α)·p_LM, from the two models' logits [V] at one generation step",
          "log_softmax each model's logits; torch.logaddexp(log α + log p_Mem, log(1−α) + "
          "log p_LM) (math.log(alpha), math.log1p(-alpha)): the mixture of the probabilities, "
          "computed in log space so that nothing underflows")
def mix_next_token(answer: Any, base_logits: Any, memdec_logits: Any, alpha: float) -> str:
    """Lesson 04: one step of generate's mixing, against float64 logaddexp; then a step where
    both models give a token a probability below e^-2000 (0 in any float)."""
    mix = function(answer, MIX_SIGNATURE)
    base = torch.as_tensor(base_logits).detach().double().cpu().reshape(-1)
    mem = torch.as_tensor(memdec_logits).detach().double().cpu().reshape(-1)
    if base.shape != mem.shape:
        raise ValueError(f"base_logits {tuple(base.shape)} and memdec_logits {tuple(mem.shape)} "
                         "must cover the same vocabulary")
    # α at an end of the grid (0 or 1) would hide every mixing mistake: check at 0.5 then
    alpha = float(alpha) if 0.0 < float(alpha) < 1.0 else 0.5
    for case, (b, m) in {"the lesson's step": (base, mem),
                         "a step where both models give one token a probability below e^-2000":
                             _underflow_case(base, mem)}.items():
        right = mixed_reference(b, m, alpha)
        mine = _mixed(returned(mix(b.clone().float(), m.clone().float(), alpha)), right.shape)
        if not _same(mine, right):
            raise WrongAnswer(f"on {case}: " + _mix_mistake(mine, right, b, m, alpha))
    return (f"your mixture equals log(α·p_Mem + (1−α)·p_LM) at α = {alpha:.2f}, also where a "
            "probability underflows: generate does this at every step")


def mixed_reference(base_logits: torch.Tensor, memdec_logits: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """log(α·softmax(mem) + (1−α)·softmax(base)), float64, in log space."""
    return mix_logprobs(torch.log_softmax(base_logits.double(), -1),
                        torch.log_softmax(memdec_logits.double(), -1), alpha)


def _underflow_case(base: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lesson's logits with the base model's least likely token pushed 2000 nats below
    both models' top token."""
    token = int(base.argmin())
    b, m = base.clone(), mem.clone()
    b[token], m[token] = b.max() - UNDERFLOW_GAP, m.max() - UNDERFLOW_GAP
    return b, m


def _mixed(answer: Any, shape: torch.Size) -> torch.Tensor:
    """The learner's log-probs as a float64 vector of the vocabulary's size."""
    if not isinstance(answer, (torch.Tensor, np.ndarray)):
        raise WrongAnswer(f"return a tensor of log-probabilities [V], got {type(answer).__name__}")
    mine = torch.as_tensor(f64(answer)).reshape(-1)
    if mine.shape != shape:
        raise WrongAnswer(f"one log-probability per vocabulary token: shape {tuple(shape)}, got "
                          f"{tuple(np.shape(answer))}")
    return mine


def _same(mine: torch.Tensor, right: torch.Tensor, atol: float = 1e-3) -> bool:
    """Equal within float32 rounding, with infinities (and NaN) where the reference has them."""
    finite = torch.isfinite(right)
    return bool(torch.equal(torch.isfinite(mine), finite)
                and (mine[finite] - right[finite]).abs().max() <= atol)


def _mix_mistake(mine: torch.Tensor, right: torch.Tensor, base: torch.Tensor, mem: torch.Tensor,
                 alpha: float) -> str:
    """Name the mistake behind a wrong mixture."""
    log_b, log_m = torch.log_softmax(base, -1), torch.log_softmax(mem, -1)
    bad = ~torch.isfinite(mine) & torch.isfinite(right)
    if bad.any():
        token = int(bad.nonzero()[0])
        return (f"token {token} gets {float(mine[token])} instead of {float(right[token]):.1f}: "
                "its probability underflows to 0 when you exponentiate; mix in log space, "
                "torch.logaddexp(log α + log p_Mem, log(1−α) + log p_LM)")
    with np.errstate(all="ignore"):
        candidates = {
            "you mixed the LOG-probabilities linearly (α·log p_Mem + (1−α)·log p_LM is a "
            "weighted geometric mean, not a mixture): mix the probabilities, in log space with "
            "logaddexp": alpha * log_m + (1 - alpha) * log_b,
            "α is the weight of the Memory Decoder: α·p_Mem + (1−α)·p_LM (you swapped them)":
                mix_logprobs(log_m, log_b, alpha),
            "log_softmax each model's logits first: logits are not log-probabilities (your "
            "mixture does not sum to 1)": torch.logaddexp(mem + np.log(alpha),
                                                          base + np.log1p(-alpha)),
            "mixing logits is not mixing distributions: log_softmax each model's logits, then "
            "mix the probabilities": torch.log_softmax(alpha * mem + (1 - alpha) * base, -1),
            "return LOG-probabilities (the log of the mixture), not probabilities": right.exp(),
        }
    for why, candidate in candidates.items():
        if _same(mine, candidate.double()):
            return why
    total = float(torch.logsumexp(mine, 0))
    if abs(total) > 1e-3:
        return f"your log-probabilities do not sum to 1 (logsumexp = {total:.3f})"
    worst = float((mine - right)[torch.isfinite(right)].abs().max())
    return f"your log-probabilities differ from log(α·p_Mem + (1−α)·p_LM) by up to {worst:.2e}"


PLUGS_SIGNATURE = "plugs_in(memdec_config, base_config, memdec_vocab, base_vocab)"


@exercise("write " + PLUGS_SIGNATURE + " -> True when the Memory Decoder can be mixed with the "
          "base model (configs: model.config; vocabs: tokenizer.get_vocab(), token -> id)",
          "the mixture only touches next-token distributions: both output layers must have the "
          "same size (config.vocab_size) and token i must mean the same string in both "
          "(the token -> id maps equal); widths and depths do not matter")
def plugs_in(answer: Any, memdec_config: Any, base_config: Any, memdec_vocab: dict,
             base_vocab: dict) -> str:
    """Lesson 05: checked on the lesson's pair and on four pairs built from it."""
    decide = function(answer, PLUGS_SIGNATURE)
    for case, (config, vocab, right) in _plug_cases(base_config, base_vocab).items():
        if case == LESSON_BASE:  # fits, as check_same_vocabulary said in the lesson
            right = _plugs_reference(memdec_config, config, memdec_vocab, vocab)
        mine = returned(decide(copy.deepcopy(memdec_config), config, dict(memdec_vocab), vocab))
        if not isinstance(mine, (bool, np.bool_)):
            raise WrongAnswer(f"return True or False, got {type(mine).__name__}")
        if bool(mine) != right:
            raise WrongAnswer(_PLUG_MISTAKES[case] if right == _plug_default(case) else
                              f"{case}: expected {right}, got {bool(mine)}")
    return ("your test accepts any base with the same vocabulary, whatever its width and depth, "
            "and refuses another size or another token -> id map: check_same_vocabulary's rule")


LESSON_BASE = "the lesson's base model"


def _plug_default(case: str) -> bool:
    """Whether the decoder plugs into the base of `case` when the lesson's pair fits."""
    return case in (LESSON_BASE, "a wider, deeper base with the same tokenizer")


def _plugs_reference(memdec_config: Any, base_config: Any, memdec_vocab: dict,
                     base_vocab: dict) -> bool:
    """Same output size and the same token -> id map."""
    return memdec_config.vocab_size == base_config.vocab_size and memdec_vocab == base_vocab


def _plug_cases(config: Any, vocab: dict) -> dict[str, tuple[Any, dict, bool]]:
    """Base models built from the lesson's: (config, vocab, whether the decoder plugs in)."""
    wider = copy.deepcopy(config)
    for name in ("n_embd", "hidden_size", "d_model"):
        if hasattr(wider, name):
            setattr(wider, name, 2 * getattr(wider, name))
    for name in ("n_layer", "num_hidden_layers"):
        if hasattr(wider, name):
            setattr(wider, name, getattr(wider, name) + 2)
    bigger = copy.deepcopy(config)
    bigger.vocab_size = config.vocab_size + 64
    more_tokens = dict(vocab) | {f"<extra {i}>": len(vocab) + i for i in range(64)}
    tokens = sorted(vocab, key=vocab.get)
    permuted = dict(vocab) | {tokens[0]: vocab[tokens[1]], tokens[1]: vocab[tokens[0]]}
    padded = copy.deepcopy(config)
    padded.vocab_size = config.vocab_size + 64  # a padded output layer, same tokenizer
    return {"the lesson's base model": (copy.deepcopy(config), dict(vocab), True),
            "a wider, deeper base with the same tokenizer": (wider, dict(vocab), True),
            "a base with 64 more tokens": (bigger, more_tokens, False),
            "a base whose tokenizer swaps two ids": (copy.deepcopy(config), permuted, False),
            "a base with the same tokenizer but a padded output layer": (padded, dict(vocab), False)}


_PLUG_MISTAKES = {
    "the lesson's base model": "the lesson's base model fits (check_same_vocabulary accepted it "
        "above), although its width and depth may differ from the decoder's: the mixture only "
        "touches distributions over the vocabulary, never hidden states",
    "a wider, deeper base with the same tokenizer": "a wider, deeper base with the same tokenizer "
        "DOES fit: the mixture only touches distributions over the vocabulary, never hidden "
        "states (unlike a kNN-LM datastore, whose keys are one model's hidden states)",
    "a base with 64 more tokens": "a base with 64 more tokens does not fit: its distribution "
                                  "has another size",
    "a base whose tokenizer swaps two ids": "same size is not enough: here two tokens swap ids, "
        "so p_Mem[i] and p_LM[i] would be probabilities of different strings; compare the token "
        "-> id maps",
    "a base with the same tokenizer but a padded output layer": "same tokenizer, but its output "
        "layer has 64 more rows (padding): the two distributions would not line up; compare "
        "config.vocab_size too",
}
