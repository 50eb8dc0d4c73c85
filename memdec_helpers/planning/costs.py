"""Rates and sizes the plan assumes, with their stated assumptions:
- exact search on the GPU: the matmul at the inference efficiency, plus the memory traffic of
  the top-k over every score and of the float32 re-rank (TOPK_BYTES, RERANK_BYTES);
- CPU-side work (kNN distributions, tokenizing, downloads, faiss) at the rates in `RATES`
  (faiss-cpu's IVF-Flat scan rate was measured on 2 threads; the others are assumptions);
- known corpora's token counts, so a hub corpus with no caps can be planned.
"""
from __future__ import annotations

from typing import Any

GB = 1e9


RATES = {
    "tokenize": 1.0e6,  # tokens/s, a fast (Rust) tokenizer on one core
    "download": 50e6,  # bytes/s from the Hugging Face hub
    "knn_neighbour": 25e-9,  # s per neighbour of the kNN distribution (README benchmark)
    "disk": 200e6,  # bytes/s reading or writing the artifacts
    "host_to_device": 5e9,  # bytes/s copying keys to the GPU
    "ivf_flat_scan": 2.3e6,  # float32 keys of size 768 compared per second (faiss, 2 threads)
    "ivfpq_scan": 30e6,  # 64-byte PQ codes compared per second (faiss, 2 threads)
}
TOPK_BYTES = 16  # memory traffic per exact-search score: written in float32, read ~3x by top-k
RERANK_BYTES = 10  # per candidate key entry re-ranked: fp16 gather, float32 copy, bmm read
HOST_FLOPS = 100e9  # float32 FLOP/s of the host's BLAS beside a GPU (a few cores)
HOST_BASELINE = 1.2 * GB  # Python, torch, transformers, faiss and the notebook kernel
DOWNLOADS = {"wikitext-103": 0.9 * GB, "wikitext-2": 0.02 * GB}  # parquet + arrow cache


KNOWN_CORPORA = {  # GPT-2 tokens of train / validation / test
    "wikitext-103": (118_000_000, 247_000, 280_000), "wikitext-2": (2_400_000, 247_000, 280_000)}


def corpus_tokens(profile: Any) -> tuple[int, int] | None:
    """(train tokens, tokens of one held-out split): the caps, else a known corpus's size."""
    known = next((v for k, v in KNOWN_CORPORA.items() if k in profile.domain_corpus), None)
    train = profile.max_train_tokens or (known[0] if known else None)
    held = profile.max_eval_tokens or (min(known[1:]) if known else None)
    return (int(train), int(held)) if train and held else None
