"""Claims cells: strict on the world the prose was written from, a report everywhere else."""
import math
import warnings

import numpy as np
import pytest

from memdec_helpers.lessons import claims
from memdec_helpers.profiles import load_profile

HOLDS = claims.claim("a holds", True, "1 < 2")
DIFFERS = claims.claim("b differs", np.bool_(False), "3 > 2", "retrieval wins on repeated text")
UNKNOWN = claims.claim("c needs seeds", None, "n/a (1 seed)")


@pytest.fixture(autouse=True)
def no_mode(monkeypatch):
    monkeypatch.delenv(claims.MODE_VARIABLE, raising=False)


def shown(profile, items):
    out = []
    assert claims.check(profile, items, display=out.append) is None  # no value shown in a cell
    return {c.says: c.holds for c in items}, out[0]


def test_the_shipped_tiny_world_on_a_cpu_is_strict():
    tiny = load_profile("tiny", device="cpu", artifacts_dir="/elsewhere")  # where it runs: same world
    assert claims.is_written_world(tiny)
    with pytest.raises(AssertionError, match="b differs"):
        claims.check(tiny, [HOLDS, DIFFERS], display=lambda text: None)
    with pytest.raises(AssertionError, match="c needs seeds"):  # cannot be judged: fails there too
        claims.check(tiny, [HOLDS, UNKNOWN], display=lambda text: None)


@pytest.mark.parametrize("change", [dict(domain_corpus="files:/some/folder"), dict(k=128),
                                    dict(ablation_seeds=1), dict(train_steps=100, eval_every=50)])
def test_any_other_world_reports_and_goes_on(change):
    other = load_profile("tiny", device="cpu", **change)
    assert not claims.is_written_world(other)
    result, text = shown(other, [HOLDS, DIFFERS, UNKNOWN])
    assert result == {"a holds": True, "b differs": False, "c needs seeds": None}
    assert "differs on this run" in text and "retrieval wins on repeated text" in text
    assert "1 of 3 statements differ" in text and "cannot be judged" in text
    for other_profile in ("colab", "cpu", "gpu"):
        assert not claims.is_written_world(load_profile(other_profile))


def test_a_run_where_everything_holds_prints_no_difference_note():
    result, text = shown(load_profile("tiny", k=128), [HOLDS])
    assert result == {"a holds": True} and "holds" in text and "differ" not in text


def test_the_table_has_one_row_per_claim_with_its_numbers():
    text = claims.verdict_table([HOLDS, DIFFERS, UNKNOWN])
    rows = text.splitlines()[2:]
    assert len(rows) == 3
    assert "1 < 2" in rows[0] and "holds" in rows[0]
    assert "3 > 2" in rows[1] and "differs on this run" in rows[1]
    assert "n/a on this run" in rows[2]


def test_the_environment_variable_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv(claims.MODE_VARIABLE, "report")
    assert not claims.is_written_world(load_profile("tiny", device="cpu"))
    monkeypatch.setenv(claims.MODE_VARIABLE, "strict")
    assert claims.is_written_world(load_profile("colab"))
    monkeypatch.setenv(claims.MODE_VARIABLE, "loud")
    with pytest.raises(ValueError, match="MEMDEC_CLAIMS"):
        claims.is_written_world(load_profile("tiny"))


def test_spreads_work_with_one_seed_without_nan_or_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert claims.spread([3.0]) is None
        assert claims.mean_spread([3.0]) == "3.00 (1 seed)"
        assert claims.beyond_noise(5.0, None) is None
    values = [1.0, 2.0, 4.0]
    assert math.isclose(claims.spread(values), np.std(values, ddof=1))
    assert claims.mean_spread(values) == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
    assert claims.beyond_noise(4.0, 1.0) is True and claims.beyond_noise(2.0, 1.0) is False


def test_a_choice_at_the_edge_of_its_grid_is_said():
    assert "largest" in claims.at_edge(256, [1, 4, 16, 64, 256])
    assert "smallest" in claims.at_edge(1.0, [3.0, 1.0, 10.0])
    assert claims.at_edge(16, [1, 4, 16, 64, 256]) == ""
    assert claims.at_edge(5, [5]) == ""


def test_num_says_n_a_where_a_run_has_no_number():
    assert claims.num(12.345) == "12.35" and claims.num(12.345, 1) == "12.3"
    assert claims.num(None) == "n/a" and claims.num(float("nan")) == "n/a"


def test_beats_and_on_par_judge_rows_against_their_seed_spread():
    seeded = lambda ppl, std: {"test_ppl": ppl, "test_ppl_std": std, "seeds": [0, 1, 2]}
    plain = {"test_ppl": 69.06}  # a row of no training (kNN-LM): no spread of its own
    holds, numbers = claims.beats(seeded(67.90, 0.07), plain)
    assert holds is True and "67.90 ± 0.07 vs 69.06" in numbers and "0.21" in numbers
    assert claims.beats(seeded(62.80, 0.14), seeded(62.90, 0.11))[0] is False
    assert claims.on_par(seeded(62.80, 0.14), seeded(62.64, 0.11))[0] is True
    assert claims.on_par(seeded(60.0, 0.1), seeded(62.0, 0.1))[0] is False
    one_seed = {"test_ppl": 67.98, "test_ppl_std": None, "seeds": [0]}
    for judge in (claims.beats, claims.on_par):  # one seed: the spread is unknown, no NaN
        holds, numbers = judge(one_seed, plain)
        assert holds is None and "n/a (1 seed)" in numbers
