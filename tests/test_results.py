"""The results table: weights chosen on validation by brute force, the contract's fields, relations."""
import itertools
import math

import numpy as np
import pytest

from memdec_helpers.core.results import (find, format_table, gap_and_spread, knn_lm_row, mixed_row,
                                         relations, results_table, sample_std, seeded_row)

GRID = [0.0, 0.25, 0.5, 0.75, 1.0]
KEYS = {"method", "base", "weight", "weight_grid", "test_best_weight", "val_ppl", "test_ppl",
        "general_test_ppl"}


def logprobs(seed: int, n: int = 300, scale: float = 2.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: -np.abs(rng.normal(3.0, scale, n)) for s in ("validation", "test", "general")}


def brute_ppl(base: np.ndarray, other: np.ndarray, w: float) -> float:
    """exp(-mean log(w e^other + (1-w) e^base)), one token at a time in plain Python."""
    total = 0.0
    for b, o in zip(base, other):
        p = w * math.exp(o) + (1 - w) * math.exp(b)
        total += math.log(p) if p > 0 else -math.inf
    return math.exp(-total / len(base))


def test_mixed_row_chooses_on_validation_and_reports_test():
    base, other = logprobs(0), logprobs(1, scale=1.0)
    row = mixed_row("base + MemDec", base, other, GRID, 0)
    val = {w: brute_ppl(base["validation"], other["validation"], w) for w in GRID}
    test = {w: brute_ppl(base["test"], other["test"], w) for w in GRID}
    chosen = min(val, key=val.get)
    assert row["weight"] == chosen and row["test_best_weight"] == min(test, key=test.get)
    assert row["val_ppl"] == pytest.approx(val[chosen], rel=1e-9)
    assert row["test_ppl"] == pytest.approx(test[chosen], rel=1e-9)
    assert row["general_test_ppl"] == pytest.approx(
        brute_ppl(base["general"], other["general"], chosen), rel=1e-9)
    assert row["weight_grid"] == GRID and set(row) == KEYS


def test_knn_lm_row_chooses_k_tau_and_lambda_jointly():
    base = logprobs(0)
    knn = {split: {} for split in ("validation", "test", "general")}
    for i, kt in enumerate(itertools.product([4, 16], [1.0, 3.0])):
        for split, lp in logprobs(10 + i, scale=0.5 + i).items():
            knn[split][kt] = lp
    row = knn_lm_row(base, knn, GRID, 1)
    scores = {(kt, w): brute_ppl(base["validation"], knn["validation"][kt], w)
              for kt in knn["validation"] for w in GRID}
    (kt, w) = min(scores, key=scores.get)
    assert (row["k"], row["temperature"], row["weight"]) == (kt[0], kt[1], w)
    assert row["test_ppl"] == pytest.approx(brute_ppl(base["test"], knn["test"][kt], w), rel=1e-9)
    assert row["base"] == 1 and row["method"] == "base + kNN-LM"


def test_results_table_covers_both_bases_with_the_contract_fields():
    bases = {0: logprobs(0), 1: logprobs(1)}
    knn = {w: {s: {(8, 1.0): lp} for s, lp in logprobs(5 + w).items()} for w in bases}
    rows = results_table(bases, knn, logprobs(3), logprobs(4), GRID, GRID)
    methods = sorted((r["method"], -1 if r["base"] is None else r["base"]) for r in rows)
    assert methods == sorted([("base", 0), ("base + kNN-LM", 0), ("DAPT", 0), ("base + DAPT", 0),
                              ("MemDec alone", -1), ("base + MemDec", 0), ("base", 1),
                              ("base + kNN-LM", 1), ("base + MemDec", 1)])
    assert all(KEYS <= set(r) for r in rows)
    assert find(rows, "base", 1)["test_ppl"] == pytest.approx(
        math.exp(-bases[1]["test"].mean()), rel=1e-12)
    with pytest.raises(ValueError, match="no row"):
        find(rows, "DAPT", 1)


def _table(**test_ppl) -> list[dict]:
    """A hand-made table: test perplexities by short name, weights inside or at edges."""
    def row(method, which, test, general=None, weight=None, best=None):
        return {"method": method, "base": which, "weight": weight, "test_best_weight": best,
                "weight_grid": GRID if weight is not None else None, "val_ppl": test,
                "test_ppl": test, "general_test_ppl": general}
    return [row("base", 0, test_ppl["b0"], 80.0), row("base", 1, test_ppl["b1"], 60.0),
            row("base + kNN-LM", 0, test_ppl["k0"], weight=0.5, best=0.5),
            row("base + kNN-LM", 1, test_ppl["k1"], weight=0.5, best=0.5),
            row("MemDec alone", None, test_ppl["m"]),
            row("base + MemDec", 0, test_ppl["bm0"], weight=test_ppl.get("a0", 0.75), best=0.75),
            row("base + MemDec", 1, test_ppl["bm1"], weight=0.5, best=0.6)]


def test_relations_hold_and_fail_on_the_numbers():
    good = dict(b0=100.0, b1=90.0, k0=80.0, k1=75.0, m=85.0, bm0=70.0, bm1=68.0)
    assert all(ok for ok, _ in relations(_table(**good)).values())
    bad = relations(_table(**{**good, "k1": 85.0, "bm0": 86.0, "a0": 1.0}))
    assert not bad["2 kNN-LM at least 10% below base"][0]  # 85 vs 90: only 5.6%
    assert not bad["3 base 0 + MemDec below base 0 + kNN-LM"][0]
    assert not bad["4 base + MemDec below MemDec alone, α inside its grid"][0]
    assert not bad["8 validation's α within 0.15 of test's best"][0]  # 1.0 vs 0.75
    assert "−5.6%" in bad["2 kNN-LM at least 10% below base"][1]


def test_format_table_prints_weights_with_two_decimals():
    text = format_table(_table(b0=100.0, b1=90.0, k0=80.0, k1=75.0, m=85.0, bm0=70.0, bm1=68.0))
    assert "| base 0 + MemDec | 0.75 | 0.00–1.00 | 0.75 | 70.00 | 70.00 |  |" in text
    assert text.count("\n") == 8


SEEDS = [0, 1, 2]


def _seeded_table() -> tuple[dict, list, list, list[dict]]:
    """bases, MemDec runs and DAPT runs of three seeds (all different), and their table."""
    bases = {0: logprobs(0), 1: logprobs(1)}
    knn = {w: {s: {(8, 1.0): lp} for s, lp in logprobs(5 + w).items()} for w in bases}
    mem = [logprobs(20 + i, scale=1.0 + 0.3 * i) for i in range(3)]
    dapt = [logprobs(30 + i, scale=0.8 + 0.2 * i) for i in range(3)]
    return bases, mem, dapt, results_table(bases, knn, mem, dapt, GRID, GRID, seeds=SEEDS)


def _brute_mixed(base: dict, other: dict) -> dict[str, float]:
    """One seed's mixed row by brute force: weight chosen on validation, then test/general."""
    val = {w: brute_ppl(base["validation"], other["validation"], w) for w in GRID}
    w = min(val, key=val.get)
    return {"weight": w, "val_ppl": val[w], "test_ppl": brute_ppl(base["test"], other["test"], w),
            "general_test_ppl": brute_ppl(base["general"], other["general"], w)}


def _brute_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.parametrize(("method", "which", "runs"), [
    ("base + MemDec", 0, "mem"), ("base + MemDec", 1, "mem"), ("base + DAPT", 0, "dapt")])
def test_seeded_mixed_rows_are_means_over_each_seeds_own_run(method, which, runs):
    bases, mem, dapt, rows = _seeded_table()
    row = find(rows, method, which)
    per_seed = [_brute_mixed(bases[which], run) for run in {"mem": mem, "dapt": dapt}[runs]]
    assert row["seeds"] == SEEDS and [s["seed"] for s in row["per_seed"]] == SEEDS
    for field in ("weight", "val_ppl", "test_ppl", "general_test_ppl"):
        values = [seed[field] for seed in per_seed]
        assert [s[field] for s in row["per_seed"]] == pytest.approx(values, rel=1e-9)
        assert row[field] == pytest.approx(sum(values) / 3, rel=1e-9)
        if field != "weight":
            assert row[f"{field}_std"] == pytest.approx(_brute_std(values), rel=1e-9)


@pytest.mark.parametrize(("method", "runs"), [("MemDec alone", "mem"), ("DAPT", "dapt")])
def test_seeded_plain_rows_average_the_right_runs(method, runs):
    _, mem, dapt, rows = _seeded_table()
    row = find(rows, method, None if method == "MemDec alone" else 0)
    tests = [math.exp(-run["test"].mean()) for run in {"mem": mem, "dapt": dapt}[runs]]
    assert row["test_ppl"] == pytest.approx(sum(tests) / 3, rel=1e-9)
    assert row["test_ppl_std"] == pytest.approx(_brute_std(tests), rel=1e-9)
    assert row["weight"] is None and row["seeds"] == SEEDS


def test_untrained_rows_carry_no_seeds_and_the_table_is_strict_json():
    import json

    _, _, _, rows = _seeded_table()
    assert "seeds" not in find(rows, "base", 0) and "seeds" not in find(rows, "base + kNN-LM", 1)
    json.dumps(rows, allow_nan=False)  # no NaN anywhere


def test_one_seed_gives_the_runs_own_numbers_and_no_spread():
    import json

    bases = {0: logprobs(0), 1: logprobs(1)}
    knn = {w: {s: {(8, 1.0): lp} for s, lp in logprobs(5 + w).items()} for w in bases}
    single = results_table(bases, knn, logprobs(3), logprobs(4), GRID, GRID)
    listed = results_table(bases, knn, [logprobs(3)], [logprobs(4)], GRID, GRID, seeds=[7])
    for a, b in zip(single, listed):
        assert {k: a[k] for k in KEYS} == {k: b[k] for k in KEYS}  # bit-identical numbers
    mem0 = find(listed, "base + MemDec", 0)
    assert mem0["seeds"] == [7] and mem0["test_ppl_std"] is None and mem0["val_ppl_std"] is None
    assert mem0["test_ppl"] == mixed_row("base + MemDec", bases[0], logprobs(3), GRID, 0)["test_ppl"]
    json.dumps(listed, allow_nan=False)
    assert sample_std([3.0]) is None


def test_seeded_rows_refuse_mismatched_runs():
    bases = {0: logprobs(0)}
    knn = {0: {s: {(8, 1.0): lp} for s, lp in logprobs(5).items()}}
    with pytest.raises(ValueError, match="one run per seed"):
        results_table(bases, knn, [logprobs(3)] * 2, [logprobs(4)] * 3, GRID, GRID, seeds=[0, 1])
    row = mixed_row("base + MemDec", bases[0], logprobs(3), GRID, 0)
    with pytest.raises(ValueError, match="distinct"):
        seeded_row([row, row], [1, 1])
    with pytest.raises(ValueError, match="one method"):
        seeded_row([row, {**row, "method": "base + DAPT"}], [0, 1])
    with pytest.raises(ValueError, match="non-empty"):
        sample_std([])


def test_gap_and_spread_combine_the_seed_spreads():
    _, _, _, rows = _seeded_table()
    mem0, knn0, dapt = find(rows, "base + MemDec", 0), find(rows, "base + kNN-LM", 0), find(rows, "DAPT", 0)
    gap, spread = gap_and_spread(mem0, knn0)
    assert gap == pytest.approx(knn0["test_ppl"] - mem0["test_ppl"])
    assert spread == pytest.approx(mem0["test_ppl_std"])  # kNN-LM is not trained: no spread
    assert gap_and_spread(dapt, mem0)[1] == pytest.approx(
        math.hypot(dapt["test_ppl_std"], mem0["test_ppl_std"]))
    one = {**mem0, "test_ppl_std": None}
    assert gap_and_spread(one, knn0)[1] is None  # one seed: the spread is unknown


def test_format_table_shows_mean_and_spread_over_seeds():
    _, _, _, rows = _seeded_table()
    mem0 = find(rows, "base + MemDec", 0)
    text = format_table(rows)
    assert f"| base 0 + MemDec (3 seeds) | {mem0['weight']:.2f} |" in text
    assert f"{mem0['test_ppl']:.2f} ± {mem0['test_ppl_std']:.2f}" in text
    assert "| base 0 | " in text and "base 0 (3 seeds)" not in text


def test_of_seed_gives_one_seeds_own_numbers():
    from memdec_helpers.core.results import of_seed, seeded_row
    rows = [{"method": "base + MemDec", "base": 0, "weight": w, "test_best_weight": w, "val_ppl": v,
             "test_ppl": v, "general_test_ppl": v} for w, v in [(0.8, 68.0), (0.85, 67.0)]]
    row = seeded_row(rows, [0, 1])
    assert row["weight"] == pytest.approx(0.825)  # the mean is no seed's choice
    assert of_seed(row, 1)["weight"] == 0.85 and of_seed(row, 0)["test_ppl"] == 68.0
    assert of_seed(rows[0], 0) is rows[0]  # a row of one run
    with pytest.raises(ValueError, match="not 2"):
        of_seed(row, 2)
