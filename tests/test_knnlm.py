"""kNN-LM: scoring equals brute force for every τ; decoding with λ=0 is the base model, with
λ=1, k=1 it follows the nearest neighbour's next token, and it refuses what generate refuses."""
import math
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
import torch

from conftest import make_gpt2
from memdec_helpers.runtime.keys import extract_keys
from memdec_helpers.stages.index import build_index
from memdec_helpers.runtime.knnlm import knn_lm_generate, knn_lm_logprobs
from test_knn import reference

PROMPT = torch.tensor([[5, 17, 3, 42, 8]])


def small_store(profile, model, tokens):
    keys, vals = extract_keys(model, tokens, 64, 32)
    store = SimpleNamespace(keys=keys, vals=vals, path=None,
                            manifest={"config_hash": "s", "n": len(keys), "dim": keys.shape[1]})
    return store, build_index(profile, store, progress=False)


def test_lambda_zero_is_base_greedy(profile, token_ids):
    model = make_gpt2()
    store, index = small_store(profile, model, token_ids)
    got = knn_lm_generate(model, index, store.vals, PROMPT, 6, alpha=0.0, temperature=1.0, k=4)
    want = model.generate(PROMPT, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    assert torch.equal(got, want)


def test_lambda_one_k_one_follows_the_nearest_neighbour(profile, token_ids):
    model = make_gpt2()
    store, index = small_store(profile, model, token_ids)
    out = knn_lm_generate(model, index, store.vals, PROMPT, 5, alpha=1.0, temperature=1.0, k=1)
    keys = store.keys.astype(np.float64)
    for t in range(5):
        prefix = out[0, : PROMPT.shape[1] + t].numpy()
        query = extract_keys(model, np.append(prefix, 0), 64, 32)[0][-1].astype(np.float64)
        nearest = np.argmin(((keys - query) ** 2).sum(1))
        assert out[0, PROMPT.shape[1] + t] == store.vals[nearest]


def test_decoding_refuses_what_generate_refuses(profile, token_ids):
    """Past the model's 64 positions (a raw IndexError before), or a weight outside [0, 1]."""
    model = make_gpt2()
    store, index = small_store(profile, model, token_ids)
    with pytest.raises(ValueError, match="positions of base_model"):
        knn_lm_generate(model, index, store.vals, PROMPT, 61, alpha=0.5, temperature=1.0, k=4)
    with pytest.raises(ValueError, match="alpha"):
        knn_lm_generate(model, index, store.vals, PROMPT, 3, alpha=1.5, temperature=1.0, k=4)
    knn_lm_generate(model, index, store.vals, PROMPT, 60, alpha=0.5, temperature=1.0, k=4)  # fits


def test_knn_lm_logprobs_equal_brute_force_for_every_temperature():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(400, 8)).astype(np.float32)
    vals = rng.integers(0, 10, 400).astype(np.int32)
    index = faiss.IndexFlatL2(8)
    index.add(keys)
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    targets = rng.integers(0, 12, 30)
    got = knn_lm_logprobs(index, vals, queries, targets, temperatures=[1.0, 4.0], k=16, batch_size=7)
    d = ((queries[:, None, :].astype(np.float64) - keys[None]) ** 2).sum(-1)  # [Q, N]
    order = np.argsort(d, axis=1)[:, :16]
    for t in (1.0, 4.0):
        dist = torch.as_tensor(np.take_along_axis(d, order, 1))
        for q, want in enumerate(reference(dist, torch.as_tensor(vals[order]), t)):
            expected = math.log(want[targets[q]]) if targets[q] in want else -math.inf
            assert got[t][q] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="temperatures"):
        knn_lm_logprobs(index, vals, queries, targets, temperatures=[0.0], k=4)
