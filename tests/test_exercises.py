"""Exercises: every check accepts its solution, prints a hint for a stub (and answers it with
the solution when MEMDEC_SOLUTIONS=1), and rejects typical wrong answers saying what is wrong."""
import faiss
import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.lessons import exercises as ex
from memdec_helpers.lessons import solutions
from memdec_helpers.runtime.keys import extract_keys
from memdec_helpers.core.knn import knn_token_logprobs
from memdec_helpers.core.windows import plan_windows

RNG = np.random.default_rng(0)


def unanswered_function(distances_row, tokens_row, temperature):
    ...  # the stub of a function exercise: its body is still `...`


# Each case: (context, wrong answers as (answer, what the message must say)).

def perplexity_case():
    lp = np.log(RNG.uniform(0.01, 0.9, 500)).astype(np.float32)
    mean = lp.astype(np.float64).mean()
    with np.errstate(over="ignore"):
        summed = np.exp(-lp.astype(np.float64).sum())
    return {"logprobs": lp}, [(np.exp(mean), "MINUS"), (-mean, "exponentiate"),
                              (2.0 ** -mean, "natural"), (summed, "MEAN"),
                              (np.exp(-lp), "one number"), (12.3, "expected"), ("12", "one number")]


def values_case():
    tokens = RNG.integers(0, VOCAB, 300)
    positions = RNG.integers(0, 297, 50)
    context = {"vals": tokens[1:].astype(np.int32), "tokens": tokens, "positions": positions}
    return context, [(tokens[positions], "off by one"), (tokens[positions + 2], "differ"),
                     (tokens[:10], "shape")]


def key_case():
    model, tokens, position = make_gpt2(), RNG.integers(0, VOCAB, 300), 101
    keys, _ = extract_keys(model, tokens, 16, 8)  # the package's datastore keys, float16
    context = {"stored_key": keys[position], "model": model, "tokens": tokens, "position": position,
               "context_length": 16, "stride": 8}
    start = 88  # the window that scored 101: windows start every 8 and score their last 8 positions
    assert plan_windows(300, 16, 8).starts[11] == start
    window = torch.as_tensor(tokens[start:position + 1], dtype=torch.long)[None]
    with torch.no_grad():
        final = model(window, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
    previous = solutions.datastore_key(model, tokens[:position + 1], position - 1, 16, 8)
    short = solutions.datastore_key(model, tokens[position - 3:position + 1], 3, 16, 8)
    return context, [(final, "final hidden state"), (keys[position - 1].astype(np.float32), "position"),
                     (short, "window start"), (keys[position][:5], "size d")]


def knn_row_case():
    d = np.sort(RNG.uniform(1.0, 5.0, 16)).astype(np.float32)
    tokens = RNG.integers(0, 5, 16)  # repeated tokens

    def make(weigh, add=True, normalise=True):
        def knn_row(distances_row, tokens_row, temperature):
            votes = {}
            for w, t in zip(weigh(distances_row, temperature), tokens_row):
                votes[int(t)] = votes.get(int(t), 0.0) + float(w) if add else float(w)
            total = sum(votes.values()) if normalise else 1.0
            return {t: w / total for t, w in votes.items()}
        return knn_row

    good = lambda dd, tau: np.exp(-(dd - dd.min()) / tau)  # noqa: E731
    return {"distances_row": d, "tokens_row": tokens, "temperature": 1.5}, [
        (make(good, add=False), "ADD"), (make(lambda dd, tau: np.exp((dd - dd.max()) / tau)), "NEARER"),
        (make(lambda dd, tau: np.exp(-(dd - dd.min()) * tau)), "divide the distance"),
        (make(good, normalise=False), "sum to"), (make(lambda dd, tau: np.exp(-dd / tau)), "subtract"),
        (lambda *a: [0.5, 0.5], "dict"), (42, "function")]


def sparse_kl_case():
    g = torch.Generator().manual_seed(0)
    logits, ids = torch.randn(VOCAB, generator=g), torch.randperm(VOCAB, generator=g)[:6]
    p = torch.tensor([0.5, 0.2, 0.15, 0.15, 0.0, 0.0])  # two padding entries
    log_q = torch.log_softmax(logits.double(), -1)
    right = solutions.sparse_kl_by_hand(logits, ids, p)
    cross = float(-(p[:4].double() * log_q[ids[:4]]).sum())
    with_padding = float((p.double() * (p.double().log() - log_q[ids])).sum())  # 0 · log 0
    return {"logits": logits, "target_ids": ids, "target_probs": p}, [
        (-right, "sign"), (cross, "cross-entropy"), (with_padding, "p > 0"),
        (p.double() * log_q[ids], "one number"), (right + 0.5, "expected")]


def alpha_case():
    base, mem = np.log(RNG.uniform(0.01, 0.5, 400)), np.log(RNG.uniform(0.01, 0.9, 400))
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    ppls, best = solutions.choose_alpha(base, mem, grid)
    geometric = [float(np.exp(-np.mean(a * mem + (1 - a) * base))) for a in grid]
    swapped = solutions.choose_alpha(mem, base, grid)[0]
    worst = grid[int(np.argmax(ppls))]
    other = next(a for a in grid if a not in (best, worst))
    context = {"base_logprobs": base, "memdec_logprobs": mem, "grid": grid}
    return context, [((geometric, best), "linearly"), ((swapped, best), "weight of the Memory"),
                     ((ppls, worst), "LOWEST"), ((ppls, other), "lowest perplexity"),
                     ((ppls[:3], best), "one perplexity per"), (best, "pair")]


def cost_case():
    cost = {"base 0": 2.0, "base 0 + MemDec": 3.0, "base 0 + kNN-LM": 6.0, "base 1": 4.0,
            "base 1 + MemDec": 5.0}
    right = solutions.relative_cost(cost)
    return {"cost": cost}, [({k: 1 / v for k, v in right.items()}, "other way"),
                            ({"base 0 + MemDec": 1.5}, "one ratio per add-on"),
                            ({k: cost[k] - cost[k.split(" + ")[0]] for k in right}, "expected"),
                            ([1.5, 3.0, 1.25], "dict")]


def first_k_case():
    keys = RNG.normal(size=(500, 8)).astype(np.float32)
    queries = RNG.normal(size=(60, 8)).astype(np.float32)
    vals, next_tokens = RNG.integers(0, 6, 500), RNG.integers(0, 6, 60)
    index = faiss.IndexFlatL2(8)
    index.add(keys)
    distances, rows = index.search(queries, 32)  # the big search
    d8, r8 = index.search(queries[:40], 8)  # a fresh 8-NN search of the first 40 queries
    fresh = knn_token_logprobs(d8, vals[r8], next_tokens[:40], 2.0)
    tokens = vals[rows]
    every = knn_token_logprobs(distances[:40], tokens[:40], next_tokens[:40], 2.0)
    wrong_columns = knn_token_logprobs(distances[:40, :8], tokens[:40, 8:16], next_tokens[:40], 2.0)
    context = {"fresh": fresh, "distances": distances, "tokens": tokens, "next_tokens": next_tokens,
               "temperature": 2.0, "k": 8}
    return context, [(every, "all 32 columns"), (wrong_columns, "BOTH"), (fresh[:10], "shape")]


CASES = {"perplexity_by_hand": perplexity_case, "datastore_values": values_case,
         "datastore_key": key_case, "knn_row": knn_row_case, "sparse_kl_by_hand": sparse_kl_case,
         "choose_alpha": alpha_case, "relative_cost": cost_case, "first_k_columns": first_k_case}
STUBS = {"knn_row": unanswered_function, "choose_alpha": (..., ...)}


def test_every_exercise_is_tested_and_has_a_solution():
    assert set(CASES) == set(ex.EXERCISES)
    assert all(callable(getattr(solutions, name, None)) for name in ex.EXERCISES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_solution_passes(name, capsys, monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    context, _ = CASES[name]()
    assert ex.check(name, ex.solution(name, **context), **context) is None  # shows no value
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "memdec_helpers.solutions" not in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stub_prints_a_hint_or_runs_the_solution_in_solutions_mode(name, capsys, monkeypatch):
    context, _ = CASES[name]()
    stub = STUBS.get(name, ...)
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    ex.check(name, stub, **context)  # no failure: the lesson still runs
    out = capsys.readouterr().out
    assert "not answered yet" in out and "Hint:" in out and ex.EXERCISES[name].hint in out
    monkeypatch.setenv(ex.SOLUTIONS_ENV, "1")
    ex.check(name, stub, **context)
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "(the answer of memdec_helpers.solutions)" in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_typical_wrong_answers_are_rejected_with_a_reason(name, monkeypatch):
    monkeypatch.setenv(ex.SOLUTIONS_ENV, "1")  # solutions mode never hides a wrong answer
    context, wrongs = CASES[name]()
    for answer, reason in wrongs:
        with np.errstate(all="ignore"), pytest.raises(ex.WrongAnswer) as caught:
            ex.check(name, answer, **context)
        message = str(caught.value)
        assert message.startswith(f"{name}: ") and reason in message, (reason, message)


def test_the_results_table_alpha_is_checked_too(capsys):
    context, _ = alpha_case()
    ppls, best = solutions.choose_alpha(**context)
    ex.check("choose_alpha", (ppls, best), chosen=best, **context)
    assert "the results table uses" in capsys.readouterr().out
    with pytest.raises(ex.WrongAnswer, match="another split"):
        ex.check("choose_alpha", (ppls, best), chosen=best + 0.01, **context)


def test_unknown_exercise_is_refused():
    with pytest.raises(ValueError, match="no exercise 'nope'; exercises: choose_alpha"):
        ex.check("nope", 1)


def test_half_precision_tensors_are_accepted(capsys):
    """A GPU profile hands bf16 keys and tensors to the checks (numpy has no bf16)."""
    key = torch.linspace(-3, 3, 32)
    ex.check("datastore_key", key.numpy(), stored_key=key.bfloat16())
    assert capsys.readouterr().out.startswith("✓ ")
