"""Exercises the learner solves: an answer in place of a `...` stub, and a check that explains.

In a lesson:

    def memdec_loss_by_hand(log_probs, target_ids, target_probs, labels, beta):
        ...  # your answer
    ex.check("memdec_loss_by_hand", memdec_loss_by_hand, logits=logits, ...)

`check` says the exercise is not answered yet while the answer is still `...` (or a function
whose body is `...`) and how to ask for a hint (`ex.hint(name)`: hints are printed only on
request), prints a ✓ line when it is right, and raises `WrongAnswer` saying what is wrong
otherwise — naming the typical mistake when it recognises one. Solutions live apart, in
`memdec_helpers.lessons.solutions`. CI runs each lesson twice: as shipped (every check says
"not answered yet", the lesson still runs) and with MEMDEC_SOLUTIONS=1, where a check answers an
unanswered exercise with its solution and checks that; unit tests feed them typical wrong
answers. Checks compare with what the package (or a brute force) computes from the same inputs,
so they hold on every profile.

"Predict, then run" questions (`ex.predict`) live in `predictions`: the learner writes a guess
before a cell runs; afterwards the guess is compared with the run's own numbers.

The exercises by lesson: 00 perplexity_by_hand; 01 datastore_key; 02 knn_row, target_row;
03 memdec_loss_by_hand, training_step; 04 choose_alpha, mix_next_token; 05 plugs_in.
"""
from __future__ import annotations

import inspect
from typing import Any

from . import exercises_data, exercises_inference, exercises_training, solutions  # noqa: F401  (register)
from .exercise_kit import SOLUTIONS_ENV, EXERCISES, Exercise, Unanswered, WrongAnswer, solutions_mode
from .predictions import PREDICTIONS, predict

__all__ = ["EXERCISES", "PREDICTIONS", "SOLUTIONS_ENV", "Exercise", "WrongAnswer", "check", "hint",
           "predict", "solution", "solutions_mode"]

def _exercise(name: str) -> Exercise:
    """The exercise `name`, or ValueError listing them all."""
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; exercises: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[name]


def solution(name: str, **context: Any) -> Any:
    """The answer memdec_helpers.lessons.solutions gives to exercise `name` in this context."""
    solve = getattr(solutions, name)
    wanted = inspect.signature(solve).parameters
    return solve(**{k: v for k, v in context.items() if k in wanted})


def hint(name: str) -> None:
    """Print the hint of exercise `name` (hints are shown only when asked for)."""
    task = _exercise(name)
    print(f"Hint for {name!r}: {task.hint}.")


def check(name: str, answer: Any, **context: Any) -> None:
    """Check `answer` to exercise `name` (see the module docstring); prints the verdict and
    returns nothing (a check cell shows no value)."""
    task = _exercise(name)
    message = _verify(task, answer, context)
    if message is None and solutions_mode():
        answer = solution(name, **context)
        message = _verify(task, answer, context)
        if message is None:
            raise ValueError(f"memdec_helpers.lessons.solutions.{name} gave no answer")
        message += " (the answer of memdec_helpers.lessons.solutions)"
    if message is None:
        print(f"✎ Exercise {name!r} is not answered yet — ex.hint({name!r}) for a hint.\n"
              f"  Task: {task.task}.")
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
