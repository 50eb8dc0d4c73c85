""""Predict, then run": every lesson's question judges a guess against the run's own numbers,
on any numbers (ties, empty bins, NaN: "cannot tell", never an exception), prints no answer
while the guess is the stub, and is answered by the run itself in CI's solutions pass."""
import math

import numpy as np
import pytest

from memdec_helpers.lessons import exercises as ex
from memdec_helpers.lessons import predictions

# name: (context, the run's answer, a wrong guess)
RUNS = {
    "domain_vs_general": ({"domain_ppl": 120.0, "general_ppl": 40.0}, "domain", "general"),
    "nearest_shares_last_token": ({"share": 0.8}, "more", "less"),
    "entropy_vs_tau": ({"taus": [10.0, 0.1, 1.0], "entropies": [3.1, 0.2, 1.5]}, "rises", "falls"),
    "float_bug_kl": ({"correct": np.linspace(4, 3, 20), "bug": np.full(20, 4.0)}, "correct", "bug"),
    "unseen_tokens": ({"mean_gain": -0.4, "count": 113, "alpha": 0.6}, "lose", "gain"),
    "alpha_for_larger_base": ({"alpha_base0": 0.8, "alpha_base1": 0.6}, "smaller", "larger"),
    "worst_beta": ({"ppl_by_beta": {0.0: 88.4, 0.5: 84.5, 1.0: 83.5}}, 0.0, 1.0),
    "best_memory_for_verbatim_facts": ({"verbatim_fact_ppl": {"kNN-LM": 3.1, "Memory Decoder": 5.2,
                                                              "MLP memory": 9.0}},
                                       "knn-lm", "memory decoder"),
}
# name: contexts where the run cannot tell
UNDECIDED = {
    "domain_vs_general": [{"domain_ppl": 50.0, "general_ppl": 50.0},
                          {"domain_ppl": math.nan, "general_ppl": 3.0}],
    "nearest_shares_last_token": [{"share": 0.5}, {"share": math.nan}],
    "entropy_vs_tau": [{"taus": [1.0], "entropies": [0.5]}, {"taus": [], "entropies": []},
                       {"taus": [1.0, 2.0], "entropies": [1.0, 1.0]}],
    "float_bug_kl": [{"correct": [math.nan], "bug": [1.0]}],
    "unseen_tokens": [{"mean_gain": 0.0, "count": 0, "alpha": 0.5},
                      {"mean_gain": math.nan, "count": 3}],
    "alpha_for_larger_base": [{"alpha_base0": math.nan, "alpha_base1": 0.5}],
    "worst_beta": [{"ppl_by_beta": {0.5: 80.0}}, {"ppl_by_beta": {}},
                   {"ppl_by_beta": {0.0: math.nan, 1.0: math.nan}}],
    "best_memory_for_verbatim_facts": [{"verbatim_fact_ppl": {"kNN-LM": None, "MLP memory": None}},
                                       {"verbatim_fact_ppl": {"kNN-LM": math.nan, "MLP memory": 3.0}}],
}


def test_every_question_is_tested():
    assert set(RUNS) == set(UNDECIDED) == set(predictions.PREDICTIONS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_guess_is_judged_by_the_runs_numbers(name, capsys, monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    context, right, wrong = RUNS[name]
    assert ex.predict(name, right, **context) is None
    out = capsys.readouterr().out
    assert out.startswith("✓ You predicted") and "right" in out
    ex.predict(name, wrong, **context)
    out = capsys.readouterr().out
    assert out.startswith("✗ You predicted") and "this run says" in out


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_stub_prints_the_question_not_the_answer(name, capsys, monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    context, _, _ = RUNS[name]
    ex.predict(name, ..., **context)
    out = capsys.readouterr().out
    assert "not made yet" in out and predictions.PREDICTIONS[name].question in out
    outcome = predictions.PREDICTIONS[name].outcome(**context)
    assert outcome.evidence not in out and (not outcome.why or outcome.why not in out)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_solutions_mode_lets_the_run_answer(name, capsys, monkeypatch):
    monkeypatch.setenv(ex.SOLUTIONS_ENV, "1")
    context, _, _ = RUNS[name]
    ex.predict(name, ..., **context)
    out = capsys.readouterr().out
    assert out.startswith("✓ This run says") and "answered by the run itself" in out


@pytest.mark.parametrize("name", sorted(UNDECIDED))
def test_a_run_that_cannot_tell_says_so_and_never_raises(name, capsys, monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    _, right, _ = RUNS[name]
    for context in UNDECIDED[name]:
        with np.errstate(all="ignore"):
            ex.predict(name, right, **context)
        assert capsys.readouterr().out.startswith("– This run cannot tell")


def test_a_guess_outside_the_choices_is_reported_not_raised(capsys):
    ex.predict("alpha_for_larger_base", "Bigger", alpha_base0=0.8, alpha_base1=0.6)
    assert capsys.readouterr().out.startswith("? 'Bigger' is not a choice here")
    ex.predict("alpha_for_larger_base", " SMALLER ", alpha_base0=0.8, alpha_base1=0.6)
    assert capsys.readouterr().out.startswith("✓")  # case and spaces do not matter
    ex.predict("worst_beta", "zero", ppl_by_beta={0.0: 2.0, 1.0: 1.0})
    assert capsys.readouterr().out.startswith("?")


def test_the_float_bug_question_has_a_same_answer(capsys):
    ex.predict("float_bug_kl", "same", correct=[3.0, 2.995], bug=[3.0, 3.0])
    assert capsys.readouterr().out.startswith("✓")


def test_unknown_question_is_refused():
    with pytest.raises(ValueError, match="no prediction 'nope'; predictions: alpha_for_larger_base"):
        ex.predict("nope", "x")
