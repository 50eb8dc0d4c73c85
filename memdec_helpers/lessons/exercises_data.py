"""Exercises on the data side of the method (lessons 00-02): perplexity, a datastore key, the
kNN distribution of one query, and one training-target row with the query's own entry excluded
by position. Each check compares with the package (or a plain brute force) on the lesson's own
numbers, so it holds on every profile."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.knn import knn_distribution
from ..core.mixing import perplexity
from ..core.windows import plan_windows
from ..runtime.keys import capture_keys
from .exercise_kit import (WrongAnswer, as_distribution, exercise, f64, function, given, near,
                           number, returned, same_distribution, vote)


@exercise("compute the perplexity from the per-token log-probs `logprobs`",
          "perplexity = exp(minus the mean log-probability); np.mean(..., dtype=np.float64)")
def perplexity_by_hand(answer: Any, logprobs: Any) -> str:
    """Lesson 00: one number, exp(−mean log p)."""
    value = number(answer, "the perplexity")
    lp = f64(logprobs)
    right = perplexity(lp)
    if near(value, right, 1e-6):
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
        if near(value, candidate, 1e-6) or (np.isinf(candidate) and np.isinf(value)):
            raise WrongAnswer(why)
    raise WrongAnswer(f"expected {right:.4f}, got {value:.4f}: perplexity = exp(−mean(logprobs))")


@exercise("the key of `position`, from your own forward pre-hook on the last block's MLP",
          "run the window that scored the position (plan_windows), hook "
          "model.transformer.h[-1].mlp with register_forward_pre_hook, keep args[0][0, -1]")
def datastore_key(answer: Any, stored_key: Any, model: Any = None, tokens: Any = None,
                  position: int | None = None, context_length: int | None = None,
                  stride: int | None = None) -> str:
    """Lesson 01: the hooked MLP input at the last position of the scoring window."""
    mine, stored = f64(given(answer)).squeeze(), f64(stored_key)
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
    for offset, key in enumerate(f64(position_keys)):
        if offset != len(position_keys) - 1 and np.allclose(mine, key, atol=5e-2, rtol=1e-2):
            raise WrongAnswer(f"that is the key of position {window.start + offset}, not of "
                              f"{position}: take the LAST position of the window, [0, -1]")
    if np.allclose(mine, f64(final[-1]), atol=5e-2, rtol=1e-2):
        raise WrongAnswer("that is the final hidden state (after ln_f); the key is the input of "
                          "the last block's MLP: a forward PRE-hook on transformer.h[-1].mlp")


@exercise("write knn_row(distances_row, tokens_row, temperature) -> {token: probability}",
          "weights exp(-(d - d.min()) / temperature); add the weights of equal tokens; divide "
          "by the total")
def knn_row(answer: Any, distances_row: Any, tokens_row: Any, temperature: float) -> str:
    """Lesson 02: p_kNN of one query with a plain loop; compared with knn_distribution."""
    row_of = function(answer, "knn_row(distances_row, tokens_row, temperature)")
    d, tokens = f64(distances_row), np.asarray(tokens_row)
    mine = returned(row_of(d, tokens, temperature))
    if not isinstance(mine, dict):
        raise WrongAnswer(f"return a dict token -> probability, got {type(mine).__name__}")
    ids, probs = knn_distribution(torch.as_tensor(d)[None], torch.as_tensor(tokens)[None], temperature)
    theirs = {int(t): float(p) for t, p in zip(ids[0], probs[0]) if p > 0}
    mine = {int(t): float(p) for t, p in mine.items()}
    if set(mine) != set(theirs):
        raise WrongAnswer(f"the keys should be the neighbours' tokens: missing "
                          f"{sorted(set(theirs) - set(mine))}, extra {sorted(set(mine) - set(theirs))}")
    total = sum(mine.values())
    if not near(total, 1.0, 1e-6):
        raise WrongAnswer(f"the probabilities sum to {total:.4f}: divide every weight by the total")
    worst = max(abs(mine[t] - theirs[t]) for t in theirs)
    if worst > 1e-5:
        raise WrongAnswer(_knn_row_mistake(mine, d, tokens, temperature, worst))
    try:
        with np.errstate(all="ignore"):
            far = returned(row_of(d + 1e4, tokens, temperature))  # every neighbour far away
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




TARGET_ROW_SIGNATURE = "target_row(distances_row, rows_row, position, vals, temperature)"


@exercise("write " + TARGET_ROW_SIGNATURE + " -> {token: probability}: the kNN vote of the "
          "neighbours of datastore position `position` with its own entry left out",
          "the own entry is the neighbour whose ROW equals `position` (rows_row == position), "
          "wherever the search listed it; if it is not among them, leave out the farthest (last) "
          "neighbour so k remain; then the p_kNN vote of the rest (as knn_row: weights "
          "exp(-(d - d.min()) / τ), equal tokens added, divided by the total)")
def target_row(answer: Any, distances_row: Any, rows_row: Any, position: int, vals: Any,
               temperature: float) -> str:
    """Lessons 02: the target of one datastore position from a (k+1)-NN search of its own key.

    Checked on the lesson's row, then on two rows built from it: a copy of the passage tied
    with the query at distance 0 and listed first (dropping the first hit keeps the query's own
    vote), and a row where ties pushed the query's own entry out of the search."""
    row_of = function(answer, TARGET_ROW_SIGNATURE)
    vals = np.asarray(vals)
    d, rows, position = f64(distances_row).ravel(), np.asarray(rows_row).ravel(), int(position)
    if d.shape != rows.shape or len(rows) < 3:
        raise ValueError(f"distances_row {d.shape} and rows_row {rows.shape}: one (k+1)-NN "
                         "search row each, k >= 2")
    cases = {"the lesson's row": (d, rows)} | _target_row_cases(d, rows, position, vals)
    for case, (case_d, case_rows) in cases.items():
        mine = as_distribution(returned(row_of(case_d.copy(), case_rows.copy(), position, vals,
                                               temperature)), "target_row")
        right = target_row_reference(case_d, case_rows, position, vals, temperature)
        if not same_distribution(mine, right):
            raise WrongAnswer(_target_row_mistake(mine, right, case, case_d, case_rows, position,
                                                  vals, temperature))
    return (f"your target row leaves out the query's own entry by position, also when a copy of "
            f"its passage ties with it and when ties push it out of the search ({len(rows) - 1} "
            "neighbours vote)")


def target_row_reference(d: np.ndarray, rows: np.ndarray, position: int, vals: np.ndarray,
                         temperature: float) -> dict[int, float]:
    """The brute force: drop the neighbour whose row is `position` (the farthest when absent),
    then the plain-loop vote of the rest (what drop_self + knn_distribution give)."""
    keep = rows != position
    if keep.all():
        keep[-1] = False
    return vote(d[keep], vals[rows[keep]], temperature)


def _target_row_cases(d: np.ndarray, rows: np.ndarray, position: int,
                      vals: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two rows built from the lesson's: a tie where the first hit is a copy of the passage
    (with another next token, so that dropping it changes the vote), and one where the
    query's own entry was not retrieved."""
    others = [r for r in rows if r != position]
    differs = [r for r in others if vals[r] != vals[position]]
    copy = differs[0] if differs else int(np.flatnonzero(vals != vals[position])[0])
    rest = [(dist, r) for dist, r in sorted(zip(d, rows)) if r not in (position, copy)]
    rest = rest[:len(rows) - 2]
    tie_rows = np.array([copy, position] + [r for _, r in rest])
    tie_d = np.array([0.0, 0.0] + [max(dist, 1e-3) for dist, _ in rest])
    spare = next(r for r in range(len(vals)) if r not in set(tie_rows.tolist()))
    out_rows = tie_rows.copy()
    out_rows[1] = spare  # another copy at distance 0 where the query's own entry was
    return {"a row where a copy of the passage ties with the query at distance 0 and comes "
            "first": (tie_d, tie_rows),
            "a row where ties pushed the query's own entry out of the search": (tie_d, out_rows)}


def _target_row_mistake(mine: dict, right: dict, case: str, d: np.ndarray, rows: np.ndarray,
                        position: int, vals: np.ndarray, temperature: float) -> str:
    """Name the mistake behind a wrong target row."""
    own_retrieved = bool((rows == position).any())
    tokens = vals[rows]
    candidates = [
        (vote(d[1:], tokens[1:], temperature),
         f"on {case}, you dropped the FIRST hit (row {rows[0]}), not the query's own entry"
         + (f" (row {position}, listed second): its free vote for the true next token stays in. "
            "Drop the neighbour whose row equals `position`" if own_retrieved else
            ". Here the query's own row is not among the neighbours: drop the farthest one")),
        (vote(d, tokens, temperature),
         f"on {case}, nothing was left out: " + (
             "the query's own entry votes for the true next token, a leak that never happens at "
             "test time. Drop the neighbour whose row equals `position`" if own_retrieved else
             "the query's own row is not among the neighbours, so drop the farthest (last) one "
             f"to keep k = {len(rows) - 1}, as the package's drop_self does")),
        (vote(d[d > 0], tokens[d > 0], temperature),
         (f"on {case}, you dropped every neighbour at distance 0, the copy of the passage too: "
          "drop only the one whose row equals `position`")),
        (vote(d[tokens != vals[position]], tokens[tokens != vals[position]], temperature),
         ("you dropped every neighbour whose value is the query's next token: drop only the "
          "neighbour whose row equals `position`")),
    ]
    for candidate, why in candidates:
        if candidate and same_distribution(mine, candidate):
            return why
    if set(mine) != set(right):
        return (f"on {case}: the tokens should be those of the neighbours left: missing "
                f"{sorted(set(right) - set(mine))}, extra {sorted(set(mine) - set(right))}")
    total = sum(mine.values())
    if not near(total, 1.0, 1e-6):
        return f"on {case}: the probabilities sum to {total:.4f}; divide by the total weight"
    worst = max(abs(mine[t] - right[t]) for t in right)
    return (f"on {case}: probabilities differ from the brute force by up to {worst:.2e} (weights "
            "exp(-(d - d.min()) / τ), equal tokens added)")


@exercise("the perplexity of the test tokens where `mask` is True, from the per-token "
          "log-probs `logprobs`", "select with the mask first (logprobs[mask]), then "
          "exp(minus the mean)")
def fact_token_perplexity(answer: Any, logprobs: Any, mask: Any, table_value: float | None = None) -> str:
    """Lesson 07: exp(−mean log p) over the masked tokens only."""
    value = number(answer, "the perplexity")
    lp, keep = f64(logprobs), np.asarray(mask, dtype=bool)
    if not keep.any():
        raise WrongAnswer("the mask selects no token on this run: there is nothing to score")
    right = perplexity(lp[keep])
    if near(value, right, 1e-6):
        agree = "" if table_value is None else f", as in the table ({table_value:.2f})"
        return f"perplexity {value:.2f} over the {int(keep.sum()):,} masked tokens{agree}"
    wrong = {perplexity(lp): "that is the perplexity of ALL test tokens: select logprobs[mask] first",
             perplexity(lp[~keep]) if (~keep).any() else np.nan:
                 "that is the perplexity of the tokens OUTSIDE the mask (mask inverted)",
             float(-lp[keep].mean()): "that is the mean negative log-likelihood: exponentiate it",
             float(np.exp(lp[keep].mean())): "that is exp(+mean): perplexity is exp(MINUS the mean)"}
    for candidate, why in wrong.items():
        if np.isfinite(candidate) and near(value, candidate, 1e-6):
            raise WrongAnswer(why)
    raise WrongAnswer(f"expected {right:.4f}, got {value:.4f}: exp(−mean(logprobs[mask]))")
