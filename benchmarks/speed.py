"""Throughput of each stage on `tiny`, side by side with naive baselines that follow the original
demo notebook, measured in one run. Prints a markdown table (figures, not pass/fail).

    python benchmarks/speed.py            # uses/builds artifacts/tiny
"""
from __future__ import annotations

import resource
import time
from collections import defaultdict

import numpy as np
import torch

from memdec_helpers import pipeline as P
from memdec_helpers.runtime.keys import extract_keys
from memdec_helpers.core.mixing import mix_logprobs
from memdec_helpers.runtime.scoring import token_logprobs
from memdec_helpers.runtime.generate import generate
from memdec_helpers.runtime.search import search
from memdec_helpers.core.knn import knn_distribution
from memdec_helpers.runtime.knnlm import knn_lm_generate, knn_lm_logprobs
from memdec_helpers.core.loss import memdec_loss
from memdec_helpers.runtime.training import make_batch, sequence_starts


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` runs after a warm-up, in seconds: the minimum is the least disturbed by
    other work on the machine (as `timeit` recommends)."""
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def dict_loop_knn(distances: np.ndarray, tokens: np.ndarray, temperature: float) -> list[dict]:
    """The demo's approach: a Python dict per row."""
    rows = []
    for d_row, t_row in zip(distances, tokens):
        w = np.exp(-(d_row - d_row.min()) / temperature)
        w /= w.sum()
        probs: dict[int, float] = defaultdict(float)
        for wi, ti in zip(w, t_row):
            probs[int(ti)] += float(wi)
        rows.append(probs)
    return rows


def dict_loop_knn_torch(distances: torch.Tensor, tokens: torch.Tensor, temperature: float) -> list[dict]:
    """The same loop reading torch tensors element by element (as a demo on torch outputs does)."""
    rows = []
    weights = torch.softmax(-distances / temperature, dim=1)
    for i in range(len(tokens)):
        probs: dict[int, float] = defaultdict(float)
        for j in range(tokens.shape[1]):
            probs[int(tokens[i, j])] += float(weights[i, j])
        rows.append(probs)
    return rows


def bench_knn(profile, store, index) -> dict:
    queries = np.asarray(store.keys[:2048], dtype=np.float32)
    distances, rows = search(index, queries, profile.k)
    tokens = np.asarray(store.vals)[rows]
    d_t, tok_t = torch.from_numpy(distances), torch.from_numpy(tokens)
    fast = timed(lambda: knn_distribution(d_t, tok_t, profile.knn_temperature), 20)
    slow = timed(lambda: dict_loop_knn(distances, tokens, profile.knn_temperature), 3)
    slower = timed(lambda: dict_loop_knn_torch(d_t[:256], tok_t[:256], profile.knn_temperature), 3)
    return {"stage": "kNN distributions (rows/s)", "ours": len(queries) / fast,
            "baseline": len(queries) / slow, "baseline_name": "dict loop per row over numpy rows",
            "extra": ("dict loop per row over torch elements", 256 / slower)}


def bench_training(profile, model, tokens, targets, steps: int = 3) -> dict:
    """Supervised positions per second: every position of a [B, L] batch vs one per forward."""
    model = model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    starts = sequence_starts(len(tokens), profile.context_length)[: profile.train_batch_size]
    batch = make_batch(tokens, targets.ids, targets.probs, starts, profile.context_length)

    def full_step():
        logits = model(batch["input_ids"]).logits
        loss = memdec_loss(logits, batch["target_ids"], batch["target_probs"], batch["labels"], 0.5)[0]
        opt.zero_grad(); loss.backward(); opt.step()

    def one_position_step():  # a naive first version: one supervised (last) position per 128-token forward
        logits = model(batch["input_ids"][:1]).logits[:, -1:]
        loss = memdec_loss(logits, batch["target_ids"][:1, -1:], batch["target_probs"][:1, -1:],
                           batch["labels"][:1, -1:], 0.5)[0]
        opt.zero_grad(); loss.backward(); opt.step()

    fast = timed(full_step, steps)
    slow = timed(one_position_step, steps)
    return {"stage": "training (supervised positions/s)", "ours": batch["labels"].numel() / fast,
            "baseline": 1 / slow, "baseline_name": "one position per forward pass"}


def bench_inference(profile, base_model, memdec, store, index, batch: int = 1,
                    new_tokens: int = 48, copies: int = 1) -> dict:
    """Greedy decoding of `batch` test prompts: base + MemDec vs base + kNN-LM vs base alone.
    copies > 1 searches a datastore made of that many copies of the keys: kNN-LM pays for
    every key on every token, the Memory Decoder for none."""
    vals = np.tile(np.asarray(store.vals), copies)
    if copies > 1:
        import faiss  # here, after torch: importing faiss first halves kNN-LM's speed (OpenMP)

        index = faiss.IndexFlatL2(index.d)
        index.add(np.tile(np.asarray(store.keys, dtype=np.float32), (copies, 1)))
    test = P.corpus(profile)["test"]
    prompt = torch.as_tensor(test[: 32 * batch].astype(np.int64)).view(batch, 32)
    mem = timed(lambda: generate(base_model, memdec, prompt, new_tokens, alpha=0.5), 5)
    knn = timed(lambda: knn_lm_generate(base_model, index, vals, prompt, new_tokens,
                                        alpha=0.25, temperature=profile.knn_temperature, k=profile.k), 5)
    base = timed(lambda: generate(base_model, None, prompt, new_tokens, alpha=None), 5)
    tokens = batch * new_tokens
    size = f", datastore x{copies} ({len(vals) // 1000}k keys)" if copies > 1 else ""
    return {"stage": f"decoding, batch {batch}{size} (tokens/s)", "ours": tokens / mem,
            "baseline": tokens / knn, "baseline_name": "base + kNN-LM (exact search per token)",
            "base_alone": tokens / base}


def bench_scoring(profile, base_model, memdec, store, index, n_tokens: int = 4096) -> dict:
    """Teacher-forced scoring of test tokens (perplexity): base + MemDec is two batched forward
    passes; base + kNN-LM is the base pass plus a search per token. The kNN-LM side gets its
    query keys for free (as if captured during the base pass)."""
    tokens = P.corpus(profile)["test"][:n_tokens]
    window = profile.context_length, profile.stride
    keys, next_tokens = extract_keys(base_model, tokens, *window, profile.key_layer)
    t = profile.knn_temperature

    def with_memdec():
        mix_logprobs(token_logprobs(base_model, tokens, *window),
                     token_logprobs(memdec, tokens, *window), 0.5)

    def with_knn():
        knn = knn_lm_logprobs(index, store.vals, keys, next_tokens, temperatures=[t],
                              k=profile.k)[t]
        mix_logprobs(token_logprobs(base_model, tokens, *window), knn, 0.25)

    mem, knn = timed(with_memdec, 3), timed(with_knn, 3)
    return {"stage": "scoring test tokens (tokens/s)", "ours": (len(tokens) - 1) / mem,
            "baseline": (len(tokens) - 1) / knn,
            "baseline_name": "base + kNN-LM (batched exact search per token)"}


def main() -> None:
    torch.manual_seed(0)
    profile = P.setup("tiny")
    base_model, _ = P.base(profile, 0)
    store, index, targets = P.datastore(profile, False), P.index(profile, False), P.targets(profile, False)
    memdec, _ = P.memory_decoder(profile, progress=False)
    rows = [bench_knn(profile, store, index),
            bench_training(profile, P.memory_decoder(profile, progress=False)[0],
                           P.corpus(profile)["train"], targets),
            bench_inference(profile, base_model, memdec, store, index, batch=1),
            bench_inference(profile, base_model, memdec, store, index, batch=8),
            bench_inference(profile, base_model, memdec, store, index, batch=1, copies=4),
            bench_scoring(profile, base_model, memdec, store, index)]
    print(f"\ntiny profile: datastore {store.keys.shape}, k={profile.k}, exact index, "
          f"{torch.get_num_threads()} threads\n")
    print("| stage | ours | naive baseline | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['ours']:,.0f} | {r['baseline']:,.0f} ({r['baseline_name']}) "
              f"| {r['ours'] / r['baseline']:.1f}x |")
        if "extra" in r:
            name, value = r["extra"]
            print(f"| {r['stage']} | {r['ours']:,.0f} | {value:,.0f} ({name}) "
                  f"| {r['ours'] / value:.1f}x |")
    print(f"\nbase model alone decodes {rows[2]['base_alone']:,.0f} tokens/s at batch 1, "
          f"{rows[3]['base_alone']:,.0f} at batch 8; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
