"""The prose's claims about results, judged on the numbers of this run.

Each lesson states what its tables and figures show, then checks every statement in a claims
cell. A statement is a finding *of the world it was measured on*: the prose was written from
the shipped `tiny` profile on a CPU. There, a statement that stops holding fails the run (the
prose must be rewritten from the numbers). On any other profile, or your own data, the cell
prints a verdict table and says in plain words what differs and what that means, and the
lesson goes on.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WRITTEN_FROM = "tiny"  # the profile the prose was measured on
IGNORED_KNOBS = ("name", "device", "dtype", "artifacts_dir")  # where it runs, not what it is
MODE_VARIABLE = "MEMDEC_CLAIMS"  # strict | report: overrides the choice by profile


@dataclass(frozen=True)
class Claim:
    """One statement of the prose: whether it holds on this run (None: this run cannot tell,
    e.g. a spread over one seed), the numbers behind it, and what a difference means."""

    says: str
    holds: bool | None
    numbers: str
    otherwise: str = ""

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "differs on this run", None: "n/a on this run"}[self.holds]


def claim(says: str, holds: Any, numbers: str, otherwise: str = "") -> Claim:
    """A `Claim`; `holds` may be a numpy bool, or None when this run cannot decide it."""
    return Claim(says, None if holds is None else bool(holds), numbers, otherwise)


def spread(values: Sequence[float]) -> float | None:
    """The sample standard deviation over seeds, or None with a single seed (no NaN)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if values.size > 1 else None


def mean_spread(values: Sequence[float], digits: int = 2) -> str:
    """'mean ± std' over seeds, or 'mean (1 seed)' where the spread is unknown."""
    values = np.asarray(values, dtype=float)
    s = spread(values)
    return f"{values.mean():.{digits}f} ± {s:.{digits}f}" if s is not None \
        else f"{values.mean():.{digits}f} (1 seed)"


def num(value: float | None, digits: int = 2) -> str:
    """A number for a claim's evidence: `digits` decimals, or 'n/a' where the run has none."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def beyond_noise(gap: float, noise: float | None, times: float = 3.0) -> bool | None:
    """Whether `gap` exceeds `times` the seed spread; None when the spread is unknown."""
    return None if noise is None else bool(gap > times * noise)


def row_ppl(row: dict[str, Any], field: str = "test_ppl") -> str:
    """A results-table row's perplexity: 'mean ± std' over its seeds, or the plain number."""
    std = row.get(f"{field}_std")
    return f"{row[field]:.2f}" + ("" if std is None else f" ± {std:.2f}")


def row_gap(better: dict[str, Any], worse: dict[str, Any], field: str = "test_ppl",
            times: float = 3.0) -> tuple[float, float | None, str]:
    """(worse − better, the spread of that gap over seeds or None with one seed, the numbers
    as text) for two rows of the results table (see core.results.gap_and_spread)."""
    from ..core.results import gap_and_spread

    gap, noise = gap_and_spread(better, worse, field)
    limit = "n/a (1 seed)" if noise is None else f"{times * noise:.2f}"
    return gap, noise, (f"{row_ppl(better, field)} vs {row_ppl(worse, field)}: gap {gap:.2f}, "
                        f"{times:g} × its spread {limit}")


def beats(better: dict[str, Any], worse: dict[str, Any], field: str = "test_ppl",
          times: float = 3.0) -> tuple[bool | None, str]:
    """Whether row `better` is lower than row `worse` by more than `times` the seed spread of
    the gap (None with one seed: the spread is unknown), and the numbers."""
    gap, noise, text = row_gap(better, worse, field, times)
    return beyond_noise(gap, noise, times), text


def on_par(first: dict[str, Any], second: dict[str, Any], field: str = "test_ppl",
           times: float = 3.0) -> tuple[bool | None, str]:
    """Whether two rows are within `times` the seed spread of their gap (None with one seed)."""
    gap, noise, text = row_gap(first, second, field, times)
    return (None if noise is None else bool(abs(gap) <= times * noise)), text


def is_written_world(profile: Any) -> bool:
    """True on the world the prose was measured on: the shipped `tiny` profile's knobs,
    unchanged (where it runs aside), on a CPU. `MEMDEC_CLAIMS=strict|report` overrides it."""
    mode = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if mode in ("strict", "report"):
        return mode == "strict"
    if mode:
        raise ValueError(f"{MODE_VARIABLE}={mode!r}: use 'strict' (a differing claim fails) or "
                         "'report' (it is reported), or leave it unset")
    from ..profiles import load_profile

    shipped = load_profile(WRITTEN_FROM).to_dict()
    mine = profile.to_dict()
    same = all(mine.get(k) == v for k, v in shipped.items() if k not in IGNORED_KNOBS)
    return same and _runs_on_cpu(profile)


def _runs_on_cpu(profile: Any) -> bool:
    if profile.device == "cpu":
        return True
    import torch

    return profile.device == "auto" and not torch.cuda.is_available()


def verdict_table(claims: Sequence[Claim]) -> str:
    """A markdown table: each statement, the numbers behind it, its verdict."""
    rows = ["| statement of the prose | numbers on this run | verdict |", "|---|---|---|"]
    rows += [f"| {c.says} | {c.numbers} | {'✅' if c.holds else '❌' if c.holds is False else '–'} "
             f"{c.verdict} |" for c in claims]
    return "\n".join(rows)


def differences(claims: Sequence[Claim]) -> str:
    """What differs on this run and what it means, in the learner's words ('' if nothing)."""
    differ = [c for c in claims if c.holds is False]
    unknown = [c for c in claims if c.holds is None]
    lines = []
    if differ:
        lines.append(f"**On this run, {len(differ)} of {len(claims)} statements differ from the "
                     f"{WRITTEN_FROM} world the prose was written from.** That is a finding about "
                     "your setup, not an error:")
        lines += [f"- *{c.says}* — {c.otherwise or 'your data or settings behave differently here.'}"
                  for c in differ]
    if unknown:
        lines.append(f"{len(unknown)} statement(s) cannot be judged on this run (for example a "
                     "seed-to-seed spread with one seed): raise the profile's seeds to judge them.")
    return "\n".join(lines)


def check(profile: Any, claims: Sequence[Claim], *, display: Any = None) -> None:
    """Show the verdict table for a claims cell. On the world the prose was written from, a
    statement that differs (or cannot be judged) raises AssertionError; elsewhere the lesson
    goes on after saying what differs. (Returns nothing: a cell ending in it shows no value.)"""
    text = verdict_table(claims)
    strict = is_written_world(profile)
    note = "" if strict else differences(claims)
    _show(text + ("\n\n" + note if note else ""), display)
    failed = [c.says for c in claims if not c.holds]
    if strict and failed:
        raise AssertionError(f"on the {WRITTEN_FROM} world the prose was written from, these "
                             f"statements no longer hold: {failed}; rewrite the prose from the "
                             "numbers above (or find what changed the run)")


def _show(markdown: str, display: Any = None) -> None:
    if display is None:
        try:
            from IPython import get_ipython
            from IPython.display import Markdown
            from IPython.display import display as ipy_display
        except ImportError:
            print(markdown)
            return
        if get_ipython() is None:
            print(markdown)
            return
        ipy_display(Markdown(markdown))
        return
    display(markdown)


def at_edge(value: Any, grid: Sequence[Any]) -> str:
    """' (at the edge of its grid: ...)' when the chosen `value` is the grid's first or last
    entry (a value beyond it might do better), else ''."""
    grid = sorted(grid)
    if len(grid) > 1 and value in (grid[0], grid[-1]):
        side = "largest" if value == grid[-1] else "smallest"
        return f" (the {side} value tried: the grid's edge, one beyond it might do better)"
    return ""
