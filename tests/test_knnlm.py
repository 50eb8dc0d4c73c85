"""kNN-LM decoding: λ=0 is the base model; λ=1, k=1 follows the nearest neighbour's next token."""
from types import SimpleNamespace

import numpy as np
import torch

from conftest import make_gpt2
from memdec_helpers.datastore import extract_keys
from memdec_helpers.index import build_index
from memdec_helpers.knnlm import knn_lm_generate

PROMPT = torch.tensor([[5, 17, 3, 42, 8]])


def small_store(profile, model, tokens):
    keys, vals = extract_keys(model, tokens, 64, 32)
    store = SimpleNamespace(keys=keys, vals=vals, path=None,
                            manifest={"config_hash": "s", "n": len(keys), "dim": keys.shape[1]})
    return store, build_index(profile, store, progress=False)


def test_lambda_zero_is_base_greedy(profile, token_ids):
    model = make_gpt2()
    store, index = small_store(profile, model, token_ids)
    got = knn_lm_generate(model, index, store.vals, PROMPT, 6, lam=0.0, temperature=1.0, k=4)
    want = model.generate(PROMPT, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    assert torch.equal(got, want)


def test_lambda_one_k_one_follows_the_nearest_neighbour(profile, token_ids):
    model = make_gpt2()
    store, index = small_store(profile, model, token_ids)
    out = knn_lm_generate(model, index, store.vals, PROMPT, 5, lam=1.0, temperature=1.0, k=1)
    keys = store.keys.astype(np.float64)
    for t in range(5):
        prefix = out[0, : PROMPT.shape[1] + t].numpy()
        query = extract_keys(model, np.append(prefix, 0), 64, 32)[0][-1].astype(np.float64)
        nearest = np.argmin(((keys - query) ** 2).sum(1))
        assert out[0, PROMPT.shape[1] + t] == store.vals[nearest]
