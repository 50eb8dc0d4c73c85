"""Lesson 07's pipeline on a small fact domain: the MLP memory trained beside the Memory
Decoder, matched in size, reused by a new session; the comparison table's rows and fields."""
from dataclasses import replace

import numpy as np
import pytest

from memdec_helpers import pipeline as P
from memdec_helpers.core.mixing import mix_logprobs, perplexity
from memdec_helpers.core.results import FACT_KINDS, METHODS, find, format_table
from memdec_helpers.runtime.mlp_memory import mlp_memory_parameters
from memdec_helpers.runtime.models import count_parameters

SMALL = dict(domain_corpus="bundled:facts", max_train_tokens=20000, max_eval_tokens=3000,
             context_length=64, stride=32, k=16, target_top_m=8, neighbour_cache_k=None,
             knn_k_grid=[16], knn_temperature_grid=[3.0], train_steps=6, warmup_steps=2,
             eval_every=6, train_batch_size=4, alpha_grid=[0.0, 0.25, 0.5, 0.75, 1.0],
             knn_lambda_grid=[0.0, 0.25, 0.5, 0.75, 1.0], device="cpu")


@pytest.mark.slow
def test_memory_comparison_on_the_fact_domain(profile, monkeypatch):
    profile = replace(profile, **SMALL)
    rows = P.memory_comparison(profile)
    assert [r["method"] for r in rows] == ["base", "base + kNN-LM", "DAPT", "MemDec alone",
                                           "base + MemDec", "MLP memory alone", "base + MLP memory"]
    assert {r["method"] for r in rows} <= set(METHODS)
    masks = P.fact_masks(profile, "test")
    assert any(masks[kind].any() for kind in FACT_KINDS)
    for kind in FACT_KINDS:  # a capped split may hold no token of one kind: None, not NaN
        for r in rows:
            value = r[f"{kind}_fact_ppl"]
            assert r["domain"] == "facts"
            assert (value is None) if not masks[kind].any() else value > 1, (r["method"], kind)
    mixed = find(rows, "base + MLP memory", 0)
    base_test = P.base_logprobs(profile, "test")
    mlp_test = P.mlp_memory_logprobs(profile, "test")
    want = mix_logprobs(base_test, mlp_test, mixed["weight"])
    assert mixed["test_ppl"] == pytest.approx(perplexity(want), rel=1e-9)
    for kind, row in [("reworded", mixed), ("unseen", find(rows, "base", 0))]:
        lp = want if row is mixed else base_test
        if masks[kind].any():
            assert row[f"{kind}_fact_ppl"] == pytest.approx(perplexity(lp[masks[kind]]), rel=1e-9)
    assert P.memory_comparisons([profile]) == rows  # reused, one table for several domains
    text = format_table(rows)
    assert text.startswith("| domain | method") and "| facts | MLP memory alone |" in text

    model, history = P.mlp_memory(profile)
    decoder = count_parameters(P.memory_decoder(profile)[0])
    width = P.mlp_memory_width(profile)
    step = mlp_memory_parameters(width + 1, 96, 4096, 2) - mlp_memory_parameters(width, 96, 4096, 2)
    assert abs(count_parameters(model) - decoder) <= step  # matched to the decoder's size
    assert len(history["steps"]) == 6 and model.config.layer == 2  # base 0: 3 blocks, ~70% up
    storage = P.storage(profile)
    assert storage["datastore_entries"] == len(P.corpus(profile)["train"]) - 1
    assert storage["mlp_memory_parameters"] == count_parameters(model)

    cost = P.decoding_cost(profile, tokens=200, repeats=1)
    assert list(cost) == ["base", "base + MemDec", "base + MLP memory", "base + kNN-LM"]
    assert all(cost[m] > cost["base"] > 0 for m in list(cost)[1:])

    monkeypatch.setattr(P, "_MLP", {})  # a new session: read back, not trained again
    monkeypatch.setattr(P, "train_memory_decoder", lambda *a, **k: pytest.fail("retrained"))
    again, _ = P.mlp_memory(profile)
    ids = P.corpus(profile)["test"][:20]
    np.testing.assert_allclose(P.mlp_memory_logprobs(profile, "test"), mlp_test)
    import torch
    with torch.no_grad():
        ids_t = torch.as_tensor(ids[None].astype(np.int64))
        torch.testing.assert_close(again(ids_t).logits, model(ids_t).logits)


def test_the_fact_domain_profile_fits_its_caps_to_the_fact_corpus(profile):
    facts = P.fact_domain(profile, train_steps=40)
    whole = P.corpus(replace(facts, max_train_tokens=None, max_eval_tokens=None))
    assert facts.domain_corpus == "bundled:facts" and facts.train_steps == 40
    assert facts.max_train_tokens == len(whole["train"]) < profile.max_train_tokens  # all of it
    assert facts.max_eval_tokens == profile.max_eval_tokens == 16000  # the same general test text
    assert facts.general_corpus == profile.general_corpus and facts.k == profile.k
    assert P.fact_domain(profile, max_train_tokens=5000).max_train_tokens == 5000
    uncapped = P.fact_domain(replace(profile, max_train_tokens=None, max_eval_tokens=None))
    assert (uncapped.max_train_tokens, uncapped.max_eval_tokens) == (None, None)


def test_the_domain_name_is_short(profile):
    assert P.domain_name(profile) == "kjv-ot"
    assert P.domain_name(replace(profile, domain_corpus="bundled:facts")) == "facts"
    assert P.domain_name(replace(profile, domain_corpus="files:/data/my_notes")) == "my_notes"
    assert P.domain_name(replace(profile, domain_corpus="hub:Salesforce/wikitext:wikitext-103-raw-v1")) == "wikitext"


def test_comparison_table_rows_fields_and_fact_perplexities_by_brute_force():
    from test_results import GRID, KEYS, brute_ppl, logprobs

    from memdec_helpers.core.results import comparison_table

    base, mem, mlp, dapt = logprobs(0), logprobs(1, scale=1.0), logprobs(2, scale=1.5), logprobs(3)
    knn = {s: {(8, 1.0): lp, (16, 3.0): lp * 0.9} for s, lp in logprobs(4, scale=0.7).items()}
    rng = np.random.default_rng(9)
    kind = rng.integers(0, 5, 300)
    masks = {"verbatim": kind == 0, "reworded": kind == 1, "unseen": kind == 2}
    rows = comparison_table(base, knn, mem, mlp, dapt, GRID, GRID, "facts", fact_masks=masks)
    assert all(KEYS | {"domain", "verbatim_fact_ppl", "reworded_fact_ppl", "unseen_fact_ppl"}
               <= set(r) for r in rows)
    mixed = find(rows, "base + MLP memory", 0)
    w = mixed["weight"]
    assert w == min(GRID, key=lambda a: brute_ppl(base["validation"], mlp["validation"], a))
    for kind in ("verbatim", "reworded", "unseen"):
        m = masks[kind]
        assert mixed[f"{kind}_fact_ppl"] == pytest.approx(brute_ppl(base["test"][m], mlp["test"][m], w))
        assert find(rows, "MLP memory alone", 0)[f"{kind}_fact_ppl"] == pytest.approx(
            brute_ppl(base["test"][m], mlp["test"][m], 1.0))
        assert find(rows, "base", 0)[f"{kind}_fact_ppl"] == pytest.approx(
            brute_ppl(base["test"][m], base["test"][m], 0.0))
    knn_row = find(rows, "base + kNN-LM", 0)
    chosen = knn["test"][(knn_row["k"], knn_row["temperature"])][masks["verbatim"]]
    assert knn_row["verbatim_fact_ppl"] == pytest.approx(
        brute_ppl(base["test"][masks["verbatim"]], chosen, knn_row["weight"]))
    plain = comparison_table(base, knn, mem, mlp, dapt, GRID, GRID, "kjv-ot")
    assert all("unseen_fact_ppl" not in r for r in plain)
    assert "| verbatim-fact ppl | reworded-fact ppl | unseen-fact ppl |" in format_table(rows)
    assert "| kjv-ot | base 0 + MLP memory |" in format_table(plain)
    with pytest.raises(ValueError, match="same test split"):
        comparison_table(base, knn, mem, mlp, dapt, GRID, GRID, "facts",
                         fact_masks={k: m[:10] for k, m in masks.items()})
