"""Exercises the learner solves: an answer in place of a `...` stub, and a check that explains.

In a lesson:

    my_ppl = ...  # your answer
    ex.check("perplexity_by_hand", my_ppl, logprobs=logprobs)

`check` prints a hint while the answer is still `...` (or a function whose body is `...`), a
✓ line when it is right, and raises `WrongAnswer` saying what is wrong otherwise. Solutions
live apart, in `memdec_helpers.solutions`. CI runs each lesson twice: as shipped (every check
prints its hint, the lesson still runs) and with MEMDEC_SOLUTIONS=1, where a check answers an
unanswered exercise with its solution and checks that (the checks accept right answers); unit
tests feed them typical wrong answers. Checks compare with what the package computes from the
same inputs, so they hold on every profile.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from . import solutions
from ..core.knn import knn_distribution, knn_token_logprobs
from ..core.loss import sparse_kl
from ..core.mixing import mix_logprobs, perplexity
from ..core.windows import plan_windows
from ..runtime.keys import capture_keys

SOLUTIONS_ENV = "MEMDEC_SOLUTIONS"


class WrongAnswer(AssertionError):
    """An answer that fails its check; the message says what is wrong."""


class Unanswered(Exception):
    """The answer is still the stub."""


@dataclass(frozen=True)
class Exercise:
    """A named exercise: what to do, a hint, and a verifier that raises WrongAnswer or returns
    the success message."""
    name: str
    task: str
    hint: str
    verify: Callable[..., str]


EXERCISES: dict[str, Exercise] = {}


def exercise(task: str, hint: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register the decorated verifier as the exercise named after it."""
    def register(verify: Callable[..., str]) -> Callable[..., str]:
        EXERCISES[verify.__name__] = Exercise(verify.__name__, task, hint, verify)
        return verify
    return register


def solutions_mode() -> bool:
    """True when MEMDEC_SOLUTIONS asks unanswered exercises to be answered by their solution."""
    return os.environ.get(SOLUTIONS_ENV, "").strip().lower() in ("1", "true", "yes")


def solution(name: str, **context: Any) -> Any:
    """The answer memdec_helpers.solutions gives to exercise `name` in this context."""
    solve = getattr(solutions, name)
    wanted = inspect.signature(solve).parameters
    return solve(**{k: v for k, v in context.items() if k in wanted})


def check(name: str, answer: Any, **context: Any) -> None:
    """Check `answer` to exercise `name` (see the module docstring); prints the verdict and
    returns nothing (a check cell shows no value)."""
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; exercises: {', '.join(sorted(EXERCISES))}")
    task = EXERCISES[name]
    message = _verify(task, answer, context)
    if message is None and solutions_mode():
        answer = solution(name, **context)
        message = _verify(task, answer, context)
        if message is None:
            raise ValueError(f"memdec_helpers.solutions.{name} gave no answer")
        message += " (the answer of memdec_helpers.solutions)"
    if message is None:
        print(f"✎ Exercise {name!r} is not answered yet: {task.task}.\n  Hint: {task.hint}.")
    else:
        print(f"✓ {message}")


def _verify(task: Exercise, answer: Any, context: dict[str, Any]) -> str | None:
    """The success message; None while unanswered; WrongAnswer (short traceback) when wrong."""
    try:
        return task.verify(answer, **context)
    except Unanswered:
        return None
    except WrongAnswer as wrong:
        raise WrongAnswer(f"{task.name}: {wrong}") from None


# --- helpers for verifiers -----------------------------------------------------------------

def _given(answer: Any) -> Any:
    """The answer, or Unanswered while it is the stub (`...` or None)."""
    if answer is Ellipsis or answer is None:
        raise Unanswered
    return answer


def _number(answer: Any, what: str) -> float:
    """The answer as one float, or WrongAnswer saying that one number is expected."""
    answer = _given(answer)
    if isinstance(answer, (torch.Tensor, np.ndarray)):
        count = answer.size if isinstance(answer, np.ndarray) else answer.numel()
        if count != 1:
            raise WrongAnswer(f"{what} should be one number, got an array of shape "
                              f"{tuple(answer.shape)}")
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.number)):
        raise WrongAnswer(f"{what} should be one number (a float), got {type(answer).__name__}")
    return float(answer)


def _near(a: float, b: float, rtol: float = 1e-5) -> bool:
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= rtol * max(1.0, abs(b)))


def _f64(values: Any) -> np.ndarray:
    """A float64 numpy copy of an array or tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()  # also bf16, which numpy lacks
    return np.asarray(values, dtype=np.float64)


# --- the exercises -------------------------------------------------------------------------

@exercise("compute the perplexity from the per-token log-probs `logprobs`",
          "perplexity = exp(minus the mean log-probability); np.mean(..., dtype=np.float64)")
def perplexity_by_hand(answer: Any, logprobs: Any) -> str:
    """Lesson 00: one number, exp(−mean log p)."""
    value = _number(answer, "the perplexity")
    lp = _f64(logprobs)
    right = perplexity(lp)
    if _near(value, right, 1e-6):
        return f"perplexity {value:.2f} = exp(−mean log-prob) over {len(lp):,} tokens"
    mean = float(lp.mean())
    with np.errstate(over="ignore"):
        summed = float(np.exp(-lp.sum()))
    wrong = {float(np.exp(mean)): "that is exp(+mean): perplexity is exp(MINUS the mean log-prob), "
                                  "always >= 1",
             -mean: "that is the mean negative log-likelihood (nats per token); exponentiate it",
             float(2.0 ** -mean): "log-probs are natural logarithms: use exp, not 2**",
             summed: "use the MEAN over tokens, not the sum"}
    for candidate, why in wrong.items():
        if _near(value, candidate, 1e-6) or (np.isinf(candidate) and np.isinf(value)):
            raise WrongAnswer(why)
    raise WrongAnswer(f"expected {right:.4f}, got {value:.4f}: perplexity = exp(−mean(logprobs))")


@exercise("the token that follows each of `positions` in the training split (what vals holds)",
          "the value of position i is the NEXT token: tokens[positions + 1]")
def datastore_values(answer: Any, vals: Any, tokens: Any, positions: Any) -> str:
    """Lesson 01: vals[i] == tokens[i + 1]."""
    mine, positions = np.asarray(_given(answer)), np.asarray(positions)
    stored = np.asarray(vals)[positions]
    if mine.shape != stored.shape:
        raise WrongAnswer(f"one token per position: shape {stored.shape}, got {mine.shape}")
    if np.array_equal(mine, stored):
        return f"all {len(positions):,} values are the tokens that follow their positions"
    if np.array_equal(mine, np.asarray(tokens)[positions]):
        raise WrongAnswer("off by one: that is the token AT position i; its value is the NEXT token")
    bad = int(np.flatnonzero(mine != stored)[0])
    raise WrongAnswer(f"{int((mine != stored).sum())} of {len(mine)} differ, e.g. position "
                      f"{positions[bad]}: you have {mine[bad]}, the datastore has {stored[bad]}")


@exercise("the key of `position`, from your own forward pre-hook on the last block's MLP",
          "run the window that scored the position (plan_windows), hook "
          "model.transformer.h[-1].mlp with register_forward_pre_hook, keep args[0][0, -1]")
def datastore_key(answer: Any, stored_key: Any, model: Any = None, tokens: Any = None,
                  position: int | None = None, context_length: int | None = None,
                  stride: int | None = None) -> str:
    """Lesson 01: the hooked MLP input at the last position of the scoring window."""
    mine, stored = _f64(_given(answer)).squeeze(), _f64(stored_key)
    if mine.shape != stored.shape:
        raise WrongAnswer(f"a key is one vector of size d = {stored.shape[-1]}, got shape "
                          f"{mine.shape}: take the hook's input at the last position, [0, -1]")
    gap = float(np.abs(mine - stored).max())
    if np.allclose(mine, stored, atol=5e-2, rtol=1e-2):  # stored keys are float16
        return f"your key equals the stored one (max |difference| {gap:.1e}, float16 rounding)"
    if model is not None:
        _diagnose_key(mine, model, tokens, position, context_length, stride)
    raise WrongAnswer(f"your key differs from the stored one by up to {gap:.2f}: check the "
                      "window start (the window that scored the position) and that you hook "
                      "the MLP's INPUT (a forward pre-hook)")


def _diagnose_key(mine: np.ndarray, model: Any, tokens: Any, position: int,
                  context_length: int, stride: int) -> None:
    """WrongAnswer naming the mistake when `mine` is another position's key or the final
    hidden state of the right window; nothing when neither."""
    plan = plan_windows(len(tokens), context_length, stride)
    start = int(plan.starts[np.searchsorted(plan.starts + plan.first_scored, position, "right") - 1])
    window = range(start, position + 1)
    ids = torch.as_tensor(np.asarray(tokens)[start:position + 1], dtype=torch.long)[None]
    with capture_keys(model, "mlp_input") as box, torch.inference_mode():
        final = model(ids.to(model.device), output_hidden_states=True).hidden_states[-1][0]
    position_keys = box["keys"][0]  # [T, d]
    for offset, key in enumerate(_f64(position_keys)):
        if offset != len(position_keys) - 1 and np.allclose(mine, key, atol=5e-2, rtol=1e-2):
            raise WrongAnswer(f"that is the key of position {window.start + offset}, not of "
                              f"{position}: take the LAST position of the window, [0, -1]")
    if np.allclose(mine, _f64(final[-1]), atol=5e-2, rtol=1e-2):
        raise WrongAnswer("that is the final hidden state (after ln_f); the key is the input of "
                          "the last block's MLP: a forward PRE-hook on transformer.h[-1].mlp")


@exercise("write knn_row(distances_row, tokens_row, temperature) -> {token: probability}",
          "weights exp(-(d - d.min()) / temperature); add the weights of equal tokens; divide "
          "by the total")
def knn_row(answer: Any, distances_row: Any, tokens_row: Any, temperature: float) -> str:
    """Lesson 02: p_kNN of one query with a plain loop; compared with knn_distribution."""
    function = _given(answer)
    if not callable(function):
        raise WrongAnswer("knn_row should be a function: "
                          "def knn_row(distances_row, tokens_row, temperature)")
    d, tokens = _f64(distances_row), np.asarray(tokens_row)
    mine = _given(function(d, tokens, temperature))
    if not isinstance(mine, dict):
        raise WrongAnswer(f"return a dict token -> probability, got {type(mine).__name__}")
    ids, probs = knn_distribution(torch.as_tensor(d)[None], torch.as_tensor(tokens)[None], temperature)
    theirs = {int(t): float(p) for t, p in zip(ids[0], probs[0]) if p > 0}
    mine = {int(t): float(p) for t, p in mine.items()}
    if set(mine) != set(theirs):
        raise WrongAnswer(f"the keys should be the neighbours' tokens: missing "
                          f"{sorted(set(theirs) - set(mine))}, extra {sorted(set(mine) - set(theirs))}")
    total = sum(mine.values())
    if not _near(total, 1.0, 1e-6):
        raise WrongAnswer(f"the probabilities sum to {total:.4f}: divide every weight by the total")
    worst = max(abs(mine[t] - theirs[t]) for t in theirs)
    if worst > 1e-5:
        raise WrongAnswer(_knn_row_mistake(mine, d, tokens, temperature, worst))
    try:
        with np.errstate(all="ignore"):
            far = _given(function(d + 1e4, tokens, temperature))  # every neighbour far away
        overflow = not all(np.isfinite(list(far.values())))
    except (ZeroDivisionError, FloatingPointError):
        overflow = True
    if overflow:
        raise WrongAnswer("with distances around 10,000, exp(-d/τ) underflows to 0 and you divide "
                          "0 by 0: subtract the smallest distance before exp")
    return f"your p_kNN matches knn_distribution ({len(theirs)} tokens from {len(tokens)} neighbours)"


def _knn_row_mistake(mine: dict, d: np.ndarray, tokens: np.ndarray, temperature: float,
                     worst: float) -> str:
    """Name the mistake: weights not added for equal tokens, the sign of d, τ multiplied."""
    def normalised(weights: np.ndarray, add: bool) -> dict:
        votes: dict[int, float] = {}
        for w, t in zip(weights, tokens):
            votes[int(t)] = votes.get(int(t), 0.0) + w if add else w
        total = sum(votes.values())
        return {t: w / total for t, w in votes.items()}

    def same(other: dict) -> bool:
        return set(other) == set(mine) and all(abs(other[t] - mine[t]) < 1e-5 for t in mine)

    if same(normalised(np.exp(-(d - d.min()) / temperature), add=False)):
        return "equal tokens must ADD their weights (yours keeps only one neighbour's weight)"
    if same(normalised(np.exp((d - d.max()) / temperature), add=True)):
        return "the weight is exp(-d/τ): NEARER neighbours (smaller d) weigh more"
    if same(normalised(np.exp(-(d - d.min()) * temperature), add=True)):
        return "divide the distance by the temperature τ, do not multiply"
    return f"probabilities differ from knn_distribution by up to {worst:.2e}"


@exercise("the KL(p_kNN ‖ p_Mem) of one position from its logits and sparse target",
          "log_q = log_softmax(logits); sum over entries with p > 0 of p * (log p - log_q[id])")
def sparse_kl_by_hand(answer: Any, logits: Any, target_ids: Any, target_probs: Any) -> str:
    """Lesson 03: the sparse KL of one position; compared with memdec.sparse_kl."""
    value = _number(answer, "the KL")
    logits = torch.as_tensor(logits).detach().double()
    ids, p = torch.as_tensor(target_ids).long(), torch.as_tensor(target_probs).detach().double()
    log_q = torch.log_softmax(logits, -1)
    right = float(sparse_kl(log_q[None, None], ids[None, None], p[None, None]))
    if _near(value, right, 1e-4):
        return f"KL = {value:.4f} nats at this position, as memdec_loss(beta=1) computes it"
    if np.isnan(value):
        raise WrongAnswer("nan: padding entries have p = 0 and 0 · log 0 is nan in floats; "
                          "sum only over entries with p > 0")
    used = p > 0
    cross = float(-(p[used] * log_q[ids[used]]).sum())
    wrong = {-right: "the sign is flipped: KL = Σ p (log p − log q) >= 0",
             cross: "that is the cross-entropy −Σ p log q; the KL also adds Σ p log p (the "
                    "entropy term)",
             float((p[used] * (p[used].log() - log_q.exp()[ids[used]])).sum()):
                 "use log q (log_softmax of the logits), not q"}
    for candidate, why in wrong.items():
        if _near(value, candidate, 1e-4):
            raise WrongAnswer(why)
    raise WrongAnswer(f"expected {right:.6f}, got {value:.6f}")


@exercise("the validation perplexity of the mixture for every α of `grid` (my_ppls), and the "
          "best α (my_alpha)",
          "log p_mix = np.logaddexp(log α + log p_Mem, log(1−α) + log p_LM); the best α has "
          "the LOWEST perplexity")
def choose_alpha(answer: Any, base_logprobs: Any, memdec_logprobs: Any, grid: Any,
                 chosen: float | None = None) -> str:
    """Lesson 04: answer = (my_ppls, my_alpha); compared with core.mixing.sweep."""
    answer = _given(answer)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise WrongAnswer("check the pair (my_ppls, my_alpha)")
    ppls, alpha = (_given(part) for part in answer)
    base, mem, grid = _f64(base_logprobs), _f64(memdec_logprobs), [float(a) for a in grid]
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


@exercise("the cost of each add-on relative to its base model: ratio[name] = cost[name] / "
          "cost[its base]",
          "for every name with ' + ', divide by cost[name.split(' + ')[0]]")
def relative_cost(answer: Any, cost: dict[str, float]) -> str:
    """Lesson 05: arithmetic on the measured costs (never a timing assertion: timings vary)."""
    ratio = _given(answer)
    if not isinstance(ratio, dict):
        raise WrongAnswer(f"ratio should be a dict name -> ratio, got {type(ratio).__name__}")
    right = {name: cost[name] / cost[name.split(" + ")[0]] for name in cost if " + " in name}
    if set(ratio) != set(right):
        raise WrongAnswer(f"one ratio per add-on: expected keys {sorted(right)}, got {sorted(ratio)}")
    for name, value in right.items():
        if _near(float(ratio[name]), 1 / value, 1e-9) and not _near(value, 1.0, 1e-9):
            raise WrongAnswer(f"{name}: divide the add-on's cost by its base model's (you "
                              "divided the other way)")
        if not _near(float(ratio[name]), value, 1e-9):
            raise WrongAnswer(f"{name}: expected {value:.3f} = {cost[name]:.3f} / "
                              f"{cost[name.split(' + ')[0]]:.3f}, got {ratio[name]}")
    seen = ", ".join(f"{name} {value:.2f}x" for name, value in right.items())
    return f"relative costs on this machine: {seen} (timings vary with the machine's load)"


@exercise("log p_kNN of the first queries from the first k columns of the big search",
          "slice BOTH distances[:n, :k] and neighbour tokens[:n, :k]; then knn_token_logprobs")
def first_k_columns(answer: Any, fresh: Any, distances: Any, tokens: Any, next_tokens: Any,
                    temperature: float, k: int) -> str:
    """Lesson 06: the first k columns of a larger search are the k-NN search."""
    mine, fresh = _f64(_given(answer)), _f64(fresh)
    if mine.shape != fresh.shape:
        raise WrongAnswer(f"one log-prob per query: shape {fresh.shape}, got {mine.shape}")
    finite = np.isfinite(fresh)
    if np.array_equal(np.isfinite(mine), finite) and np.allclose(mine[finite], fresh[finite], atol=1e-4):
        return f"the first {k} columns give the same log p_kNN as a fresh {k}-NN search"
    n = len(fresh)
    every = knn_token_logprobs(np.asarray(distances)[:n], np.asarray(tokens)[:n],
                               np.asarray(next_tokens)[:n], temperature)
    if np.array_equal(np.isfinite(mine), np.isfinite(every)) and np.allclose(
            mine[np.isfinite(every)], every[np.isfinite(every)], atol=1e-4):
        raise WrongAnswer(f"you used all {np.shape(distances)[1]} columns: keep the first k = {k}")
    raise WrongAnswer("your log-probs differ from a fresh k-NN search: slice the first k columns "
                      "of BOTH the distances and the neighbour tokens")
