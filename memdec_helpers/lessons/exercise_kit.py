"""The pieces every exercise's check is built from: the registry, the verdicts, and helpers that
turn a learner's answer into numbers or name what kind of answer it is.

A verifier is a function `verify(answer, **context) -> str` registered with `@exercise(task,
hint)`: it returns the success message, raises `Unanswered` while the answer is the stub and
`WrongAnswer` (saying what is wrong, naming the typical mistake when it recognises one)
otherwise. `memdec_helpers.lessons.exercises` runs them.
"""
from __future__ import annotations

import dis
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


SOLUTIONS_ENV = "MEMDEC_SOLUTIONS"


def solutions_mode() -> bool:
    """True when MEMDEC_SOLUTIONS asks unanswered exercises (and predictions) to be answered by
    their solution (CI's second pass)."""
    return os.environ.get(SOLUTIONS_ENV, "").strip().lower() in ("1", "true", "yes")


class WrongAnswer(AssertionError):
    """An answer that fails its check; the message says what is wrong."""


class Unanswered(Exception):
    """The answer is still the stub."""


@dataclass(frozen=True)
class Exercise:
    """A named exercise: what to do, a hint (shown only on request), and a verifier that
    raises WrongAnswer or returns the success message."""
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


def given(answer: Any) -> Any:
    """The answer, or Unanswered while it is the stub (`...`, None, or a function whose body
    is only `...`)."""
    if answer is Ellipsis or answer is None:
        raise Unanswered
    return answer


STUB_OPS = {"RESUME", "NOP", "LOAD_CONST", "RETURN_VALUE", "RETURN_CONST", "POP_TOP"}


def is_stub(fn: Any) -> bool:
    """True for a function that does nothing and returns None: a body of `...`, `pass` or a
    docstring (read from its bytecode, so it works without the source)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    return all(i.opname in STUB_OPS and (i.opname != "LOAD_CONST" or i.argval in (None, Ellipsis))
               and (i.opname != "RETURN_CONST" or i.argval is None)
               for i in dis.get_instructions(code))


def function(answer: Any, signature: str) -> Callable[..., Any]:
    """The answer as a function; Unanswered while it is the stub, WrongAnswer naming the
    signature expected when it is not a function."""
    answer = given(answer)
    if not callable(answer):
        raise WrongAnswer(f"the answer should be a function: def {signature}")
    if is_stub(answer):
        raise Unanswered
    return answer


def returned(value: Any) -> Any:
    """What a learner's function returned; WrongAnswer when it returned nothing."""
    if value is None or value is Ellipsis:
        raise WrongAnswer("your function returned nothing (None): did it forget `return`?")
    return value


def number(answer: Any, what: str) -> float:
    """The answer as one float, or WrongAnswer saying that one number is expected."""
    answer = given(answer)
    if isinstance(answer, (torch.Tensor, np.ndarray)):
        count = answer.size if isinstance(answer, np.ndarray) else answer.numel()
        if count != 1:
            raise WrongAnswer(f"{what} should be one number, got an array of shape "
                              f"{tuple(answer.shape)}")
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.number)):
        raise WrongAnswer(f"{what} should be one number (a float), got {type(answer).__name__}")
    return float(answer)


def near(a: float, b: float, rtol: float = 1e-5) -> bool:
    """|a − b| <= rtol · max(1, |b|), both finite."""
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= rtol * max(1.0, abs(b)))


def f64(values: Any) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (bf16 too, which numpy lacks)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def same_distribution(mine: dict, theirs: dict, atol: float = 1e-5) -> bool:
    """Two {token: probability} dicts with the same support and probabilities within atol."""
    return set(mine) == set(theirs) and all(abs(mine[t] - theirs[t]) <= atol for t in theirs)


def as_distribution(answer: Any, name: str) -> dict[int, float]:
    """A learner's {token: probability} as plain ints and floats; WrongAnswer if not a dict."""
    answer = given(answer)
    if not isinstance(answer, dict):
        raise WrongAnswer(f"{name} should return a dict token -> probability, got "
                          f"{type(answer).__name__}")
    return {int(t): float(p) for t, p in answer.items()}


def vote(distances: np.ndarray, tokens: np.ndarray, temperature: float) -> dict[int, float]:
    """p_kNN of one query by a plain loop (the checks' brute force): weights
    exp(−(d − d_min)/τ), equal tokens added, normalised; {} for no neighbours."""
    if len(distances) == 0:
        return {}
    weights = np.exp(-(np.asarray(distances, np.float64) - np.min(distances)) / temperature)
    votes: dict[int, float] = {}
    for w, token in zip(weights, tokens):
        votes[int(token)] = votes.get(int(token), 0.0) + float(w)
    total = sum(votes.values())
    return {token: w / total for token, w in votes.items()}
