"""Exercises: every check accepts its solution, says "not answered yet" for a stub without the
hint (answering it with the solution when MEMDEC_SOLUTIONS=1), gives the hint only on request,
and rejects a wrong answer of each typical kind with a message naming the mistake."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.lessons import exercises as ex
from memdec_helpers.lessons import solutions
from memdec_helpers.core.knn import knn_distribution
from memdec_helpers.core.targets import drop_self
from memdec_helpers.core.windows import plan_windows
from memdec_helpers.lessons.exercise_kit import vote
from memdec_helpers.lessons.exercises_data import target_row_reference
from memdec_helpers.lessons.plain_training import plain_memdec_loss
from memdec_helpers.runtime.keys import extract_keys
from memdec_helpers.runtime.training import make_batch, sequence_starts

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




# --- target_row (02) -----------------------------------------------------------------------

def target_case():
    vals = RNG.integers(0, 6, 400)
    position = 57
    rows = np.array([57, 3, 120, 8, 300, 41, 77, 210, 19])  # k + 1 = 9, the query first
    vals[3] = vals[57]  # a neighbour that shares the query's next token
    d = np.r_[0.0, np.sort(RNG.uniform(0.5, 4.0, 8))]
    context = {"distances_row": d, "rows_row": rows, "position": position, "vals": vals,
               "temperature": 1.5}

    def by_mask(choose):
        def target_row(distances_row, rows_row, position, vals, temperature):
            keep = choose(distances_row, rows_row, position, vals)
            return vote(distances_row[keep], vals[rows_row[keep]], temperature)
        return target_row

    first = by_mask(lambda d, r, pos, v: np.arange(len(r)) > 0)
    nothing = by_mask(lambda d, r, pos, v: np.ones(len(r), bool))
    zero = by_mask(lambda d, r, pos, v: d > 0)
    token = by_mask(lambda d, r, pos, v: v[r] != v[pos])
    no_farthest = by_mask(lambda d, r, pos, v: r != pos)

    def forgot_return(distances_row, rows_row, position, vals, temperature):
        vote(distances_row, vals[rows_row], temperature)

    return context, [(first, "FIRST hit"), (nothing, "nothing was left out"),
                     (zero, "distance 0"), (token, "value is the query's next token"),
                     (no_farthest, "drop the farthest"), (lambda *a: [0.5, 0.5], "dict"),
                     (forgot_return, "returned nothing"), (42, "function")]


def test_target_row_reference_is_the_packages_drop_self_and_knn_distribution():
    rng = np.random.default_rng(3)
    vals = rng.integers(0, 8, 200)
    for trial in range(20):
        rows = rng.choice(200, 9, replace=False)
        position = int(rows[trial % 9]) if trial % 4 else 199  # every 4th: not retrieved
        d = np.sort(rng.uniform(0, 3, 9))
        kept_d, kept_rows = drop_self(d[None], rows[None], np.array([position]))
        ids, probs = knn_distribution(torch.as_tensor(kept_d), torch.as_tensor(vals[kept_rows]), 1.5)
        package = {int(t): float(p) for t, p in zip(ids[0], probs[0]) if p > 0}
        mine = target_row_reference(d, rows, position, vals, 1.5)
        assert mine.keys() == package.keys()
        assert all(abs(mine[t] - package[t]) < 1e-9 for t in mine)


# --- memdec_loss_by_hand (03) --------------------------------------------------------------

def loss_case():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, VOCAB, generator=g, requires_grad=True)
    ids = torch.stack([torch.randperm(VOCAB, generator=g)[:4] for _ in range(10)]).view(2, 5, 4)
    probs = torch.rand(2, 5, 4, generator=g)
    probs = probs / probs.sum(-1, keepdim=True)  # no padding in the lesson's batch
    labels = torch.randint(0, VOCAB, (2, 5), generator=g)
    context = {"logits": logits, "target_ids": ids, "target_probs": probs, "labels": labels,
               "beta": 0.5}

    def loss(kl_of, ce_of=lambda lq, y: -lq.gather(-1, y[..., None]).mean(), weigh=None):
        def memdec_loss_by_hand(log_probs, target_ids, target_probs, labels, beta):
            kl, ce = kl_of(log_probs, target_ids, target_probs), ce_of(log_probs, labels)
            return weigh(beta, kl, ce) if weigh else beta * kl + (1 - beta) * ce
        return memdec_loss_by_hand

    def safe_log(p):
        return torch.where(p > 0, p.log(), torch.zeros_like(p))

    def right_kl(lq, i, p):
        return (p * (safe_log(p) - lq.gather(-1, i))).sum(-1).mean()

    def detached_kl(lq, i, p):  # the float() bug: the gathered log-probs as Python numbers
        at = torch.tensor(lq.gather(-1, i).tolist(), dtype=lq.dtype)
        return (p * (safe_log(p) - at)).sum(-1).mean()

    def as_float(log_probs, target_ids, target_probs, labels, beta):
        return float(loss(right_kl)(log_probs, target_ids, target_probs, labels, beta))

    wrongs = [
        (loss(lambda lq, i, p: (lq.gather(-1, i).exp() * (lq.gather(-1, i) - safe_log(p))).sum(-1).mean()),
         "reversed"),
        (loss(lambda lq, i, p: -(p * lq.gather(-1, i)).sum(-1).mean()), "soft cross-entropy"),
        (loss(lambda lq, i, p: (p * (safe_log(p) - lq.gather(-1, i).exp())).sum(-1).mean()),
         "use log-probabilities"),
        (loss(lambda lq, i, p: (p * (p.log() - lq.gather(-1, i))).sum(-1).mean()), "nan"),
        (loss(detached_kl), "float() bug"),
        (as_float, "NO gradient"),
        (loss(lambda lq, i, p: (p * (safe_log(p) - lq.gather(-1, i))).sum()), "do not sum"),
        (loss(right_kl, weigh=lambda b, kl, ce: b * ce + (1 - b) * kl), "β weighs the KL"),
        (loss(lambda lq, i, p: -right_kl(lq, i, p)), "sign"),
        (loss(right_kl, ce_of=lambda lq, y: lq.gather(-1, y[..., None]).mean()), "MINUS"),
        (lambda lq, i, p, y, b: (b * right_kl(lq, i, p), 0.0), "tuple"),
    ]
    return context, wrongs


def test_the_loss_check_accepts_the_lessons_plain_loss():
    context, _ = loss_case()

    def from_plain(log_probs, target_ids, target_probs, labels, beta):  # log_softmax is idempotent
        return plain_memdec_loss(log_probs, target_ids, target_probs, labels, beta)[0]
    ex.check("memdec_loss_by_hand", from_plain, **context)


# --- training_step (03) --------------------------------------------------------------------

STEP_PROFILE = SimpleNamespace(beta=0.5, grad_clip=1.0, learning_rate=3e-3, weight_decay=0.01,
                               warmup_steps=2, train_steps=10)


def step_case():
    tokens = np.random.default_rng(1).integers(0, VOCAB, 300)
    m = 4
    ids = np.stack([np.random.default_rng(i).choice(VOCAB, m, replace=False) for i in range(len(tokens))])
    probs = np.full((len(tokens), m), 1 / m, dtype=np.float32)
    batch = make_batch(tokens, ids, probs, sequence_starts(len(tokens), 32)[:2], 32)
    context = {"model": make_gpt2(), "batch": batch, "profile": STEP_PROFILE}

    def step(order, beta=None, kl_without_gradient=False):
        def training_step(model, batch, optimizer, schedule, b, grad_clip):
            loss = None
            for call in order:
                if call == "forward":
                    logits = model(batch["input_ids"]).logits
                    loss = plain_memdec_loss(logits, batch["target_ids"], batch["target_probs"],
                                             batch["labels"], b if beta is None else beta,
                                             kl_without_gradient)[0]
                elif call == "backward":
                    loss.backward()
                elif call == "clip":
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                elif call == "step":
                    optimizer.step()
                elif call == "schedule":
                    schedule.step()
                elif call == "zero_grad":
                    optimizer.zero_grad()
            return loss.item() if loss is not None else None
        return training_step

    full = ["forward", "backward", "clip", "step", "schedule", "zero_grad"]
    without = lambda call: [c for c in full if c != call]  # noqa: E731
    return context, [
        (step(without("zero_grad")), "zero_grad"),
        (step(without("backward")), "no loss.backward()"),
        (step(["zero_grad", "forward", "step", "backward", "clip", "schedule"]), "before loss.backward()"),
        (step(without("clip")), "clip"),
        (step(without("schedule")), "schedule.step()"),
        (step(["forward", "backward", "clip", "zero_grad", "step", "schedule"]), "gradients were gone"),
        (step(["forward", "backward", "clip", "schedule", "step", "zero_grad"]), "schedule.step() comes before"),
        (step(full, beta=1.0), "the step's loss"),
        (step(full, kl_without_gradient=True), "moved differently"),
        (step([]), "returned nothing"),
    ]


def test_the_step_check_leaves_the_lessons_model_untouched():
    context, _ = step_case()
    before = {k: v.clone() for k, v in context["model"].state_dict().items()}
    ex.check("training_step", solutions.training_step(), **context)
    after = context["model"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- mix_next_token (04) -------------------------------------------------------------------

def mix_case():
    g = torch.Generator().manual_seed(2)
    base, mem = 3 * torch.randn(VOCAB, generator=g), 3 * torch.randn(VOCAB, generator=g)
    context = {"base_logits": base, "memdec_logits": mem, "alpha": 0.3}
    ls = lambda z: torch.log_softmax(z, -1)  # noqa: E731

    def in_probability_space(b, m, a):  # float32 probabilities: e^-2000 underflows to 0
        return torch.log(a * torch.softmax(m, -1) + (1 - a) * torch.softmax(b, -1))

    return context, [
        (lambda b, m, a: a * ls(m) + (1 - a) * ls(b), "LOG-probabilities linearly"),
        (lambda b, m, a: torch.logaddexp(math.log(a) + ls(b), math.log1p(-a) + ls(m)), "swapped"),
        (lambda b, m, a: torch.logaddexp(math.log(a) + m, math.log1p(-a) + b), "log_softmax each"),
        (in_probability_space, "underflows"),
        (lambda b, m, a: a * torch.softmax(m, -1) + (1 - a) * torch.softmax(b, -1), "not probabilities"),
        (lambda b, m, a: ls(a * m + (1 - a) * b), "mixing logits"),
        (lambda b, m, a: [0.0] * VOCAB, "tensor"),
        (lambda b, m, a: ls(m)[:10], "one log-probability per"),
    ]


def test_the_mix_check_works_at_an_alpha_on_the_grids_edge(capsys):
    context, _ = mix_case()
    ex.check("mix_next_token", solutions.mix_next_token(), **(context | {"alpha": 1.0}))
    assert "α = 0.50" in capsys.readouterr().out


# --- plugs_in (05) -------------------------------------------------------------------------

def plug_case():
    from transformers import GPT2Config
    memdec = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2)
    base = GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=3, n_head=2)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    context = {"memdec_config": memdec, "base_config": base, "memdec_vocab": vocab,
               "base_vocab": dict(vocab)}
    return context, [
        (lambda mc, bc, mv, bv: mc.vocab_size == bc.vocab_size, "swap ids"),
        (lambda mc, bc, mv, bv: mv == bv, "64 more rows (padding)"),
        (lambda mc, bc, mv, bv: mv == bv and mc.n_embd == bc.n_embd, "never hidden states"),
        (lambda mc, bc, mv, bv: True, "64 more tokens"),
        (lambda mc, bc, mv, bv: "yes", "True or False"),
    ]


def fact_case():
    lp = np.log(RNG.uniform(0.01, 0.9, 400))
    mask = RNG.random(400) < 0.3
    kept = lp[mask]
    return {"logprobs": lp, "mask": mask, "table_value": float(np.exp(-kept.mean()))}, [
        (np.exp(-lp.mean()), "ALL test tokens"), (np.exp(-lp[~mask].mean()), "OUTSIDE the mask"),
        (-kept.mean(), "exponentiate"), (np.exp(kept.mean()), "MINUS"), (7.7, "expected")]


CASES = {"fact_token_perplexity": fact_case, "perplexity_by_hand": perplexity_case, "datastore_key": key_case, "knn_row": knn_row_case,
         "target_row": target_case, "memdec_loss_by_hand": loss_case, "training_step": step_case,
         "choose_alpha": alpha_case, "mix_next_token": mix_case, "plugs_in": plug_case}
STUBS = {"knn_row": unanswered_function, "target_row": unanswered_function,
         "memdec_loss_by_hand": unanswered_function, "training_step": unanswered_function,
         "mix_next_token": unanswered_function, "plugs_in": unanswered_function,
         "choose_alpha": (..., ...)}
METHOD = {"target_row", "memdec_loss_by_hand", "training_step", "mix_next_token"}  # issue 18


def test_every_exercise_is_tested_and_has_a_solution():
    assert set(CASES) == set(ex.EXERCISES)
    assert all(callable(getattr(solutions, name, None)) for name in ex.EXERCISES)
    assert METHOD <= set(ex.EXERCISES)  # the learner writes the loss, the step, a target, the mix


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_solution_passes(name, capsys, monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    context, _ = CASES[name]()
    assert ex.check(name, ex.solution(name, **context), **context) is None  # shows no value
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "lessons.solutions" not in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stub_says_how_to_get_a_hint_or_runs_the_solution_in_solutions_mode(name, capsys,
                                                                              monkeypatch):
    context, _ = CASES[name]()
    stub = STUBS.get(name, ...)
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)
    ex.check(name, stub, **context)  # no failure: the lesson still runs
    out = capsys.readouterr().out
    assert f"not answered yet — ex.hint({name!r}) for a hint" in out
    assert ex.EXERCISES[name].hint not in out and "Hint" not in out  # hints only on request
    monkeypatch.setenv(ex.SOLUTIONS_ENV, "1")
    ex.check(name, stub, **context)
    out = capsys.readouterr().out
    assert out.startswith("✓ ") and "(the answer of memdec_helpers.lessons.solutions)" in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hint_is_printed_on_request(name, capsys):
    ex.hint(name)
    assert capsys.readouterr().out == f"Hint for {name!r}: {ex.EXERCISES[name].hint}.\n"


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
    with pytest.raises(ValueError, match="no exercise 'nope'"):
        ex.hint("nope")


def test_half_precision_tensors_are_accepted(capsys):
    """A GPU profile hands bf16 keys and tensors to the checks (numpy has no bf16)."""
    key = torch.linspace(-3, 3, 32)
    ex.check("datastore_key", key.numpy(), stored_key=key.bfloat16())
    assert capsys.readouterr().out.startswith("✓ ")


def test_stub_functions_are_told_from_answers():
    from memdec_helpers.lessons.exercise_kit import is_stub

    def documented():
        """A docstring, then the stub."""
        ...

    def passes():
        pass

    assert is_stub(unanswered_function) and is_stub(documented) and is_stub(passes)
    assert not is_stub(lambda x: x) and not is_stub(solutions.knn_row()) and not is_stub(len)
