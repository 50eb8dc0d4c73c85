"""The results table: every method on both base models, every weight chosen on validation.

A row is `{method, base, weight, weight_grid, test_best_weight, val_ppl, test_ppl,
general_test_ppl}` (kNN-LM rows add the chosen `k` and `temperature`). Log-probs come in as
dicts `{"validation": [N], "test": [N], "general": [N]}` (general = the general corpus's test
split, to measure forgetting). `relations` checks the paper's findings on a table.

Rows of trained models (DAPT, base + DAPT, MemDec alone, base + MemDec) come from one run per
training seed: each seed's weight is chosen on validation for that seed's model, and the row
holds the means over seeds, with `seeds`, `per_seed` (each seed's own numbers) and the sample
standard deviations `val_ppl_std`, `test_ppl_std`, `general_test_ppl_std` (None with one seed:
a spread of one run is unknown, never NaN). With one seed the numbers are that run's, unchanged.

Lesson 07's `comparison_table` puts every memory beside base model 0 on one domain: its rows
add `domain` (tables of several domains are concatenated) and, where the domain marks its
facts, `verbatim_fact_ppl` / `reworded_fact_ppl` / `unseen_fact_ppl` (test perplexity on the
tokens of facts the training text states, restated in its sentences or in new words, and of
facts it does not state).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .mixing import mix_logprobs, perplexity, sweep

METHODS = ("base", "base + kNN-LM", "MemDec alone", "base + MemDec", "DAPT", "base + DAPT",
           "MLP memory alone", "base + MLP memory")
FACT_KINDS = ("verbatim", "reworded", "unseen")  # fact tokens: of facts the training text
# states, restated in its words or in new ones, and of facts it does not state
SPLITS = ("validation", "test", "general")
PPL_FIELDS = ("val_ppl", "test_ppl", "general_test_ppl")
SEEDED_FIELDS = ("weight", "test_best_weight") + PPL_FIELDS  # averaged over seeds
LogProbs = dict[str, np.ndarray]
ALPHA_TOLERANCE = 0.15  # relation 8: validation's α within this of the α best on test


def _row(method: str, which: int | None, val: float, test: float, general: float | None,
         weight: float | None = None, grid: Sequence[float] | None = None,
         test_best: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"method": method, "base": which, "weight": weight,
            "weight_grid": None if grid is None else [float(w) for w in grid],
            "test_best_weight": test_best, "val_ppl": val, "test_ppl": test,
            "general_test_ppl": general, **extra}


def _ppls(logprobs: dict[str, np.ndarray]) -> tuple[float, float, float | None]:
    general = logprobs.get("general")
    return (perplexity(logprobs["validation"]), perplexity(logprobs["test"]),
            None if general is None else perplexity(general))


def plain_row(method: str, logprobs: dict[str, np.ndarray], which: int | None) -> dict[str, Any]:
    """A model scored on its own (base, MemDec alone, DAPT): no weight to choose."""
    return _row(method, which, *_ppls(logprobs))


def mixed_row(method: str, base_lp: dict[str, np.ndarray], other_lp: dict[str, np.ndarray],
              grid: Sequence[float], which: int, **extra: Any) -> dict[str, Any]:
    """base mixed with another model at the weight that is best on validation; the weight that
    would be best on test is recorded for insight only."""
    chosen = sweep(base_lp["validation"], other_lp["validation"], grid)["best"]
    mixed = {s: mix_logprobs(base_lp[s], other_lp[s], chosen) for s in SPLITS if s in base_lp}
    test_best = sweep(base_lp["test"], other_lp["test"], grid)["best"]
    return _row(method, which, *_ppls(mixed), weight=chosen, grid=grid, test_best=test_best,
                **extra)


def knn_lm_row(base_lp: dict[str, np.ndarray], knn: dict[str, dict[tuple[int, float], np.ndarray]],
               lambda_grid: Sequence[float], which: int) -> dict[str, Any]:
    """base + kNN-LM with k, τ and λ chosen jointly on validation; knn[split][(k, τ)] = log p_kNN."""
    val = base_lp["validation"]
    k, tau = min(knn["validation"], key=lambda kt: sweep(val, knn["validation"][kt],
                                                         lambda_grid)["best_ppl"])
    chosen = {split: lp[(k, tau)] for split, lp in knn.items()}
    return mixed_row("base + kNN-LM", base_lp, chosen, lambda_grid, which, k=int(k),
                     temperature=float(tau))


def decoder_rows(base_lp: dict[str, np.ndarray], mem_lp: dict[str, np.ndarray],
                 alpha_grid: Sequence[float], which: int = 0) -> list[dict[str, Any]]:
    """"MemDec alone" and "base + MemDec" (α chosen on validation) for one decoder and base."""
    return [plain_row("MemDec alone", mem_lp, None),
            mixed_row("base + MemDec", base_lp, mem_lp, alpha_grid, which)]


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof 1) of per-seed numbers; None with one value."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"sample_std needs a non-empty 1-D list of numbers, got shape {values.shape}")
    return float(values.std(ddof=1)) if values.size > 1 else None


def _mean(values: list[Any]) -> Any:
    """The mean of per-seed numbers; one value is returned as it is, and a field that is None
    for a seed (no weight, no general split) is None."""
    if any(v is None for v in values):
        return None
    return values[0] if len(values) == 1 else float(np.mean(values, dtype=np.float64))


def of_seed(row: dict[str, Any], seed: int) -> dict[str, Any]:
    """A row's own numbers for one training seed (weight, perplexities): the row itself when it
    was not averaged over seeds."""
    if "per_seed" not in row:
        return row
    found = [r for r in row["per_seed"] if r["seed"] == seed]
    if not found:
        raise ValueError(f"row {row['method']!r} has seeds {row['seeds']}, not {seed}")
    return found[0]


def seeded_row(rows: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One row from the rows of the same method and base model, one per training seed: the
    mean of each perplexity and weight over seeds, the seeds, each seed's own numbers, and the
    sample standard deviation of each perplexity (None with one seed)."""
    if len(rows) != len(seeds) or not rows:
        raise ValueError(f"seeded_row needs one row per seed: {len(rows)} rows, seeds {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} must be distinct")
    kinds = {(r["method"], r["base"]) for r in rows}
    if len(kinds) != 1:
        raise ValueError(f"seeded_row averages one method on one base model, got {sorted(kinds, key=str)}")
    out = {**rows[0], **{f: _mean([r[f] for r in rows]) for f in SEEDED_FIELDS}}
    out["seeds"] = [int(s) for s in seeds]
    out["per_seed"] = [{"seed": int(s), **{f: r[f] for f in SEEDED_FIELDS}}
                       for s, r in zip(seeds, rows)]
    for f in PPL_FIELDS:
        values = [r[f] for r in rows]
        out[f"{f}_std"] = None if None in values else sample_std(values)
    return out


def _per_seed(runs: LogProbs | Sequence[LogProbs]) -> list[LogProbs]:
    """A model's log-probs per training seed (one dict is one seed)."""
    runs = [runs] if isinstance(runs, dict) else list(runs)
    if not runs:
        raise ValueError("a trained model's log-probs are needed for at least one seed")
    return runs


def _seeded(make: Any, runs: list[LogProbs], seeds: Sequence[int]) -> dict[str, Any]:
    """`make(logprobs)` for each seed's run, averaged into one row."""
    return seeded_row([make(lp) for lp in runs], seeds)


def mlp_memory_rows(base_lp: dict[str, np.ndarray], mlp_lp: dict[str, np.ndarray],
                    alpha_grid: Sequence[float], which: int = 0) -> list[dict[str, Any]]:
    """"MLP memory alone" and "base + MLP memory" (α chosen on validation); an MLP memory reads
    the hidden states of one base model, `which`, so both rows are that base's."""
    return [plain_row("MLP memory alone", mlp_lp, which),
            mixed_row("base + MLP memory", base_lp, mlp_lp, alpha_grid, which)]


def comparison_table(base_lp: dict[str, np.ndarray], knn: dict[str, dict[tuple[int, float], np.ndarray]],
                     memdec: dict[str, np.ndarray], mlp: dict[str, np.ndarray],
                     dapt: dict[str, np.ndarray], alpha_grid: Sequence[float],
                     lambda_grid: Sequence[float], domain: str,
                     fact_masks: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Every memory on base model 0 and one domain, every weight chosen on validation: base,
    base + kNN-LM, DAPT, MemDec alone, base + MemDec, MLP memory alone, base + MLP memory; each
    row names its `domain`, and with `fact_masks` (FACT_KINDS -> bool over the test log-probs)
    adds the test perplexity on those tokens (`<kind>_fact_ppl`)."""
    rows = [plain_row("base", base_lp, 0), knn_lm_row(base_lp, knn, lambda_grid, 0),
            plain_row("DAPT", dapt, 0), *decoder_rows(base_lp, memdec, alpha_grid, 0),
            *mlp_memory_rows(base_lp, mlp, alpha_grid, 0)]
    others = {"base": None, "DAPT": dapt, "MemDec alone": memdec, "base + MemDec": memdec,
              "MLP memory alone": mlp, "base + MLP memory": mlp}
    for row in rows:
        row["domain"] = domain
        if fact_masks is not None:
            knn_test = knn["test"][(row["k"], row["temperature"])] if "k" in row else None
            test = row_test_logprobs(row, base_lp["test"], others.get(row["method"]), knn_test)
            row.update(fact_ppls(test, fact_masks))
    return rows


def row_test_logprobs(row: dict[str, Any], base_test: np.ndarray,
                      other: dict[str, np.ndarray] | None,
                      knn_test: np.ndarray | None = None) -> np.ndarray:
    """The test log-probs behind a row: the model alone, or mixed with the base at the row's
    chosen weight (`knn_test`: the kNN-LM's at the row's k and τ)."""
    model_test = knn_test if knn_test is not None else (None if other is None else other["test"])
    if model_test is None:
        return base_test
    if row["weight"] is None:
        return model_test
    return mix_logprobs(base_test, model_test, row["weight"])


def fact_ppls(test: np.ndarray, fact_masks: dict[str, np.ndarray]) -> dict[str, float | None]:
    """`<kind>_fact_ppl`: the perplexity over the test tokens of each kind of fact (None when a
    kind has no token)."""
    out: dict[str, float | None] = {}
    for kind in FACT_KINDS:
        mask = np.asarray(fact_masks[kind], dtype=bool)
        if mask.shape != test.shape:
            raise ValueError(f"fact_masks[{kind!r}] has shape {mask.shape}, the test log-probs "
                             f"{test.shape}: build the masks from the same test split")
        out[f"{kind}_fact_ppl"] = perplexity(test[mask]) if mask.any() else None
    return out


def results_table(bases: dict[int, dict[str, np.ndarray]],
                  knn: dict[int, dict[str, dict[tuple[int, float], np.ndarray]]],
                  memdec: LogProbs | Sequence[LogProbs], dapt: LogProbs | Sequence[LogProbs] | None,
                  alpha_grid: Sequence[float], lambda_grid: Sequence[float],
                  seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Every method on every base model: base, base + kNN-LM (its own datastore), DAPT and
    base + DAPT (base 0), MemDec alone, base + MemDec (one decoder for all bases). `memdec` and
    `dapt` hold one log-probs dict per training seed (`seeds`, default 0, 1, ...; a single
    dict is one seed); their rows are means over seeds with the spread (see `seeded_row`)."""
    mem_runs = _per_seed(memdec)
    dapt_runs = None if dapt is None else _per_seed(dapt)
    seeds = list(range(len(mem_runs))) if seeds is None else list(seeds)
    if len(mem_runs) != len(seeds) or (dapt_runs is not None and len(dapt_runs) != len(seeds)):
        raise ValueError(f"{len(mem_runs)} MemDec runs and "
                         f"{None if dapt_runs is None else len(dapt_runs)} DAPT runs for seeds "
                         f"{seeds}: give one run per seed")
    rows = []
    for which, base_lp in bases.items():
        rows.append(plain_row("base", base_lp, which))
        rows.append(knn_lm_row(base_lp, knn[which], lambda_grid, which))
        if which == 0:
            if dapt_runs is not None:
                rows.append(_seeded(lambda lp: plain_row("DAPT", lp, 0), dapt_runs, seeds))
                rows.append(_seeded(lambda lp, b=base_lp: mixed_row("base + DAPT", b, lp,
                                                                     alpha_grid, 0),
                                    dapt_runs, seeds))
            rows.append(_seeded(lambda lp: plain_row("MemDec alone", lp, None), mem_runs, seeds))
        rows.append(_seeded(lambda lp, b=base_lp, w=which: mixed_row("base + MemDec", b, lp,
                                                                     alpha_grid, w),
                            mem_runs, seeds))
    return rows


def gap_and_spread(better: dict[str, Any], worse: dict[str, Any],
                   field: str = "test_ppl") -> tuple[float, float | None]:
    """(worse − better, the spread of that gap): the root of the sum of the two rows' squared
    seed standard deviations; a row of no training (base, kNN-LM) adds 0; None when a trained
    row has a single seed (its spread is unknown)."""
    spreads = []
    for row in (better, worse):
        if "seeds" not in row:
            spreads.append(0.0)
        elif row.get(f"{field}_std") is None:
            return worse[field] - better[field], None
        else:
            spreads.append(row[f"{field}_std"])
    return worse[field] - better[field], float(np.hypot(*spreads))


def find(rows: list[dict[str, Any]], method: str, which: int | None = None) -> dict[str, Any]:
    """The row of `method` on base model `which` (ValueError if the table has none)."""
    for row in rows:
        if row["method"] == method and row["base"] == which:
            return row
    raise ValueError(f"the results table has no row ({method!r}, base {which})")


def _name(row: dict[str, Any]) -> str:
    return row["method"].replace("base", f"base {row['base']}", 1) if row["base"] is not None \
        else row["method"]


def _ppl(row: dict[str, Any], field: str = "test_ppl") -> str:
    """A perplexity with two decimals, '± std' over seeds where the row has a spread."""
    std = row.get(f"{field}_std")
    return f"{row[field]:.2f}" + ("" if std is None else f" ± {std:.2f}")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per row, weights with two decimals; a row averaged over seeds shows
    'mean ± std' (and the number of seeds after its name); a `domain` column first and the
    fact-token perplexities last when the rows have them."""
    domains = any("domain" in r for r in rows)
    facts = any("unseen_fact_ppl" in r for r in rows)
    lines = ["| method | weight (α or λ) | chosen from | best on test | val ppl | test ppl | "
             "general test ppl |", "|---|---|---|---|---|---|---|"]
    if domains:
        lines = ["| domain " + lines[0], "|---" + lines[1]]
    if facts:
        lines = [lines[0] + "".join(f" {kind}-fact ppl |" for kind in FACT_KINDS),
                 lines[1] + "---|" * len(FACT_KINDS)]
    for r in rows:
        weight = "" if r["weight"] is None else f"{r['weight']:.2f}"
        if "k" in r:
            weight += f" (k = {r['k']}, τ = {r['temperature']:g})"
        grid = "" if r["weight_grid"] is None else f"{min(r['weight_grid']):.2f}–{max(r['weight_grid']):.2f}"
        best = "" if r["test_best_weight"] is None else f"{r['test_best_weight']:.2f}"
        general = "" if r["general_test_ppl"] is None else _ppl(r, "general_test_ppl")
        seeds = f" ({len(r['seeds'])} seeds)" if len(r.get("seeds", ())) > 1 else ""
        line = (f"| {_name(r)}{seeds} | {weight} | {grid} | {best} | {_ppl(r, 'val_ppl')} | "
                f"{_ppl(r)} | {general} |")
        if domains:
            line = f"| {r.get('domain', '')} " + line
        if facts:
            line += "".join(f" {_number(r.get(f'{kind}_fact_ppl'))} |" for kind in FACT_KINDS)
        lines.append(line)
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _inside(row: dict[str, Any]) -> bool:
    """The chosen weight lies strictly inside its grid (not at an edge)."""
    return min(row["weight_grid"]) < row["weight"] < max(row["weight_grid"])


def relations(rows: list[dict[str, Any]]) -> dict[str, tuple[bool, str]]:
    """The paper's findings, checked on test perplexities of a results table with two bases:
    name -> (holds, the numbers behind it)."""
    t = {(_name(r)): r["test_ppl"] for r in rows}
    b0, b1 = find(rows, "base", 0), find(rows, "base", 1)
    out = {"1 larger base is better": (
        b1["test_ppl"] < b0["test_ppl"] and b1["general_test_ppl"] < b0["general_test_ppl"],
        f"domain {b1['test_ppl']:.1f} vs {b0['test_ppl']:.1f}, general "
        f"{b1['general_test_ppl']:.1f} vs {b0['general_test_ppl']:.1f}")}
    gains = {w: 1 - t[f"base {w} + kNN-LM"] / t[f"base {w}"] for w in (0, 1)}
    out["2 kNN-LM at least 10% below base"] = (
        min(gains.values()) >= 0.10, ", ".join(f"base {w} −{100 * g:.1f}%" for w, g in gains.items()))
    mem0, knn0 = find(rows, "base + MemDec", 0), find(rows, "base + kNN-LM", 0)
    out["3 base 0 + MemDec below base 0 + kNN-LM"] = (
        t["base 0 + MemDec"] < t["base 0 + kNN-LM"], f"{_ppl(mem0)} vs {_ppl(knn0)}")
    mixes = {w: find(rows, "base + MemDec", w) for w in (0, 1)}
    out["4 base + MemDec below MemDec alone, α inside its grid"] = (
        all(m["test_ppl"] < t["MemDec alone"] and _inside(m) for m in mixes.values()),
        ", ".join(f"base {w}: {m['test_ppl']:.2f} vs {t['MemDec alone']:.2f} at α "
                  f"{m['weight']:.2f}" for w, m in mixes.items()))
    out["5 the decoder helps base 1 too"] = (
        t["base 1 + MemDec"] < t["base 1"], f"{t['base 1 + MemDec']:.2f} vs {t['base 1']:.2f}")
    out["8 validation's α within 0.15 of test's best"] = (
        all(abs(m["weight"] - m["test_best_weight"]) <= ALPHA_TOLERANCE + 1e-9 for m in mixes.values()),
        ", ".join(f"base {w}: {m['weight']:.2f} vs {m['test_best_weight']:.2f}"
                  for w, m in mixes.items()))
    return out
