""""Predict, then run": one question per lesson, answered before the cell that measures it.

In a lesson:

    my_guess = ...  # "smaller", "larger" or "same": α for base model 1 vs base model 0
    # ... the cell that chooses both α ...
    ex.predict("alpha_for_larger_base", my_guess, alpha_base0=..., alpha_base1=...)

`predict` compares the guess with what *this run* measured, whatever the profile or the
learner's own data: it prints ✓ or ✗ with the run's numbers and why, and never raises on a
run's numbers (a run that cannot tell, e.g. a tie or an empty bin, says so). While the guess is
still `...` it prints the question and the choices, never the answer (so committed outputs hold
none); with MEMDEC_SOLUTIONS=1 an unanswered question is answered by the run itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .exercise_kit import solutions_mode


class Outcome(NamedTuple):
    """What the run says: the right choice (None when the run cannot tell), the numbers it
    comes from, and why it comes out so."""
    answer: str | float | None
    evidence: str
    why: str = ""


@dataclass(frozen=True)
class Prediction:
    """A question, its choices (None: one of the values the run tried, e.g. a β), and the
    function that reads the outcome from the run's numbers."""
    name: str
    question: str
    choices: tuple[str, ...] | None
    outcome: Callable[..., Outcome]


PREDICTIONS: dict[str, Prediction] = {}


def prediction(question: str, choices: Sequence[str] | None) -> Callable[[Callable[..., Outcome]],
                                                                          Callable[..., Outcome]]:
    """Register the decorated outcome function as the question named after it."""
    def register(outcome: Callable[..., Outcome]) -> Callable[..., Outcome]:
        PREDICTIONS[outcome.__name__] = Prediction(
            outcome.__name__, question, tuple(choices) if choices is not None else None, outcome)
        return outcome
    return register


def predict(name: str, guess: Any, **context: Any) -> None:
    """Compare the learner's `guess` with the run's own outcome and print the verdict."""
    if name not in PREDICTIONS:
        raise ValueError(f"no prediction {name!r}; predictions: {', '.join(sorted(PREDICTIONS))}")
    task = PREDICTIONS[name]
    unanswered = guess is Ellipsis or guess is None
    if unanswered and not solutions_mode():
        print(f"✎ Prediction {name!r} not made yet: {task.question} ({_choices(task)}). Write "
              "your guess in the variable before running the cell that measures it.")
        return
    outcome = task.outcome(**context)
    if unanswered:
        guess = outcome.answer
    print(_verdict(task, guess, outcome, unanswered))


def _choices(task: Prediction) -> str:
    return ("one of " + ", ".join(repr(c) for c in task.choices) if task.choices is not None
            else "a value this lesson runs")


def _normalised(task: Prediction, guess: Any) -> str | float | None:
    """The guess as one of the choices (or a float), None when it is none of them."""
    if task.choices is None:
        try:
            return float(guess)
        except (TypeError, ValueError):
            return None
    text = str(guess).strip().lower()
    return text if text in task.choices else None


def _verdict(task: Prediction, guess: Any, outcome: Outcome, by_the_run: bool) -> str:
    """One line: the verdict, the run's numbers and why."""
    why = f" {outcome.why}" if outcome.why else ""
    if outcome.answer is None:
        return f"– This run cannot tell: {outcome.evidence}.{why}"
    mine = _normalised(task, guess)
    if mine is None:
        return f"? {guess!r} is not a choice here ({_choices(task)}); the run: {outcome.evidence}."
    shown = f"{mine:g}" if isinstance(mine, float) else mine
    answer = f"{outcome.answer:g}" if isinstance(outcome.answer, float) else outcome.answer
    if by_the_run:
        return f"✓ This run says {answer}: {outcome.evidence}.{why} (answered by the run itself)"
    if (np.isclose(mine, outcome.answer) if isinstance(mine, float) else mine == outcome.answer):
        return f"✓ You predicted {shown}: right. {outcome.evidence}.{why}"
    return f"✗ You predicted {shown}; this run says {answer}: {outcome.evidence}.{why}"


def _finite(*values: float) -> bool:
    return all(np.isfinite(float(v)) for v in values)


# --- the questions, one per lesson ---------------------------------------------------------

@prediction("under base model 0, which text gets the higher perplexity: the domain's test "
            "split or held-out general text?", ("domain", "general"))
def domain_vs_general(domain_ppl: float, general_ppl: float) -> Outcome:
    """Lesson 00."""
    evidence = f"domain {domain_ppl:.1f}, general text {general_ppl:.1f}"
    if not _finite(domain_ppl, general_ppl) or np.isclose(domain_ppl, general_ppl):
        return Outcome(None, evidence)
    if domain_ppl > general_ppl:
        return Outcome("domain", evidence, "The base model never read the domain: its names, "
                                           "terms and phrasings surprise it — the gap a memory "
                                           "should close.")
    return Outcome("general", evidence, "Your domain is close to what the base model already "
                                        "knows: there is less for a memory to add.")


@prediction("for what share of validation queries does the nearest datastore key's context end "
            "with the same token as the query's context: more or less than half?",
            ("more", "less"))
def nearest_shares_last_token(share: float) -> Outcome:
    """Lesson 01."""
    evidence = f"{share:.0%} of the sampled validation queries"
    if not _finite(share) or share == 0.5:
        return Outcome(None, evidence)
    why = ("A key is the model's state after reading a context, and the last token weighs "
           "heavily in it: near keys tend to end alike.")
    return Outcome("more" if share > 0.5 else "less", evidence,
                   why if share > 0.5 else "On your data the keys match on more than the last "
                                           "token: contexts repeat less word for word.")


@prediction("as the temperature τ grows, does the mean entropy of p_kNN rise or fall?",
            ("rises", "falls"))
def entropy_vs_tau(taus: Sequence[float], entropies: Sequence[float]) -> Outcome:
    """Lesson 02."""
    order = np.argsort(np.asarray(taus, dtype=float))
    e = np.asarray(entropies, dtype=float)[order]
    t = np.asarray(taus, dtype=float)[order]
    evidence = f"{e[0]:.2f} nats at τ = {t[0]:g}, {e[-1]:.2f} at τ = {t[-1]:g}" if len(e) else "no τ"
    if len(e) < 2 or not _finite(e[0], e[-1]) or np.isclose(e[0], e[-1]):
        return Outcome(None, evidence)
    if e[-1] > e[0]:
        return Outcome("rises", evidence, "A large τ flattens the weights exp(−d/τ): every "
                                          "neighbour votes almost equally, so the vote spreads.")
    return Outcome("falls", evidence)


@prediction("after the two short runs with β = 1, which ends with the lower KL to the targets: "
            "the correct loss or the float() bug (or about the same)?", ("correct", "bug", "same"))
def float_bug_kl(correct: Sequence[float], bug: Sequence[float], last: int = 5) -> Outcome:
    """Lesson 03: the mean KL of the last `last` steps of each run."""
    good, bad = (float(np.mean(np.asarray(kl, dtype=float)[-last:])) for kl in (correct, bug))
    evidence = f"KL over the last {last} steps: correct loss {good:.3f}, float() bug {bad:.3f}"
    if not _finite(good, bad):
        return Outcome(None, evidence)
    if abs(good - bad) < 0.01:
        return Outcome("same", evidence, "In so few steps the runs have not drifted apart yet.")
    why = ("With the bug the KL term sends no gradient; with β = 1 it is the whole loss, so "
           "nothing pulls the model towards the targets.")
    return Outcome("correct" if good < bad else "bug", evidence, why if good < bad else "")


@prediction("test tokens that never occur in the training split: do they gain or lose, on "
            "average, when the Memory Decoder is mixed in?", ("gain", "lose"))
def unseen_tokens(mean_gain: float, count: int, alpha: float | None = None) -> Outcome:
    """Lesson 04: the mean of log p_mix − log p_base over the unseen tokens."""
    evidence = f"{int(count):,} unseen test tokens, mean gain {mean_gain:+.3f} nats"
    if int(count) == 0 or not _finite(mean_gain) or mean_gain == 0:
        return Outcome(None, evidence if int(count) else "no test token is unseen on this run")
    floor = f" (at most −log(1−α) = {-np.log1p(-alpha):.2f} nats)" if alpha is not None else ""
    if mean_gain < 0:
        return Outcome("lose", evidence, "No neighbour ever voted for them, so p_Mem is small and "
                                         f"the mixture keeps little more than (1−α)·p_LM{floor}.")
    return Outcome("gain", evidence, "The decoder spreads some mass beyond the tokens it saw; on "
                                     "your data that outweighs the base model's lost share.")


@prediction("will the α chosen on validation be smaller, larger or the same for base model 1 "
            "(the second, stronger base) as for base model 0?", ("smaller", "larger", "same"))
def alpha_for_larger_base(alpha_base0: float, alpha_base1: float) -> Outcome:
    """Lesson 05."""
    evidence = f"α = {alpha_base0:.2f} for base 0, {alpha_base1:.2f} for base 1"
    if not _finite(alpha_base0, alpha_base1):
        return Outcome(None, evidence)
    if np.isclose(alpha_base0, alpha_base1):
        return Outcome("same", evidence, "On the α grid the two bases lean on the memory alike.")
    if alpha_base1 < alpha_base0:
        return Outcome("smaller", evidence, "A stronger base model needs the memory less (the "
                                            "paper: 0.80 for GPT-2 small, 0.55 for xl).")
    return Outcome("larger", evidence, "On your run base 1 leans on the memory more: is it the "
                                       "stronger model on your domain (lesson 00)?")


@prediction("which β gives base 0 + MemDec the highest (worst) test perplexity?", None)
def worst_beta(ppl_by_beta: dict[float, float]) -> Outcome:
    """Lesson 06: ppl_by_beta maps each β run to its (mean) test perplexity."""
    ppl = {float(b): float(v) for b, v in ppl_by_beta.items() if _finite(v)}
    evidence = ", ".join(f"β {b:g}: {v:.2f}" for b, v in sorted(ppl.items()))
    if len(ppl) < 2:
        return Outcome(None, evidence or "fewer than two β values ran")
    worst = max(ppl, key=ppl.get)
    why = ("β = 0 is plain fine-tuning on the observed next token: the kNN targets' softer, "
           "richer signal is gone." if worst == 0.0 else "")
    return Outcome(worst, evidence, why)


PLUG_INS = ("knn-lm", "memory decoder", "mlp memory")


@prediction("mixed with the base model, which memory gives the lowest perplexity on the tokens "
            "of facts the training text states word for word?", PLUG_INS)
def best_memory_for_verbatim_facts(verbatim_fact_ppl: dict[str, float]) -> Outcome:
    """Lesson 07: verbatim_fact_ppl maps each memory mixed with the base ("kNN-LM", "Memory
    Decoder", "MLP memory") to its test perplexity on verbatim-fact tokens (None or NaN where
    the run has none)."""
    ppl = {name.lower(): float(v) for name, v in verbatim_fact_ppl.items()
           if v is not None and _finite(v)}
    evidence = ", ".join(f"{name}: {v:.2f}" for name, v in verbatim_fact_ppl.items()
                         if v is not None and _finite(v))
    if len(ppl) < 2:
        return Outcome(None, evidence or "no verbatim-fact token on this run")
    best = min(ppl, key=ppl.get)
    why = {"knn-lm": "The very sentence is in the datastore: its keys match the test context "
                     "closely and the neighbours vote for the right object, with no training.",
           "memory decoder": "The decoder learnt the sentences well enough to beat retrieval "
                             "on them here.",
           "mlp memory": "The MLP over the base's hidden state learnt the sentences best here."}[best]
    return Outcome(best, evidence, why)
