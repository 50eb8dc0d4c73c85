"""The results table: weights chosen on validation by brute force, the contract's fields, relations."""
import itertools
import math

import numpy as np
import pytest

from memdec_helpers.core.results import find, format_table, knn_lm_row, mixed_row, relations, results_table

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
    assert methods == sorted([("base", 0), ("base + kNN-LM", 0), ("DAPT", 0), ("MemDec alone", -1),
                              ("base + MemDec", 0), ("base", 1), ("base + kNN-LM", 1),
                              ("base + MemDec", 1)])
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
