"""Costs of the course's work: device throughput, model shapes, FLOPs and token counts.

The numbers plan.py turns into per-stage estimates, with their stated assumptions:
- a GPU's dense fp16 tensor-core peak and memory bandwidth (GPUS); the share of the peak reached
  is set per device spec: 35% for inference matmuls and search, 20% for training (optimizer,
  softmax and elementwise work are memory-bound; a T4 in Colab also throttles below its boost
  clock);
- exact search on the GPU: the matmul at the inference efficiency, plus the memory traffic of
  the top-k over every score and of the float32 re-rank (TOPK_BYTES, RERANK_BYTES);
- CPU-side work (kNN distributions, tokenizing, downloads, faiss) at the rates in `RATES`
  (faiss-cpu's IVF-Flat scan rate was measured on 2 threads; the others are assumptions);
- model shapes from their configs (known GPT-2 family hub ids without a download).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .budget import ModelShape

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
HUB_SHAPES = {"gpt2": (12, 768), "gpt2-medium": (24, 1024), "gpt2-large": (36, 1280),
              "gpt2-xl": (48, 1600), "distilgpt2": (6, 768)}
ABLATIONS = {"BETAS": [0.0, 0.25, 0.5, 0.75, 1.0], "TARGET_KS": [16, 64, 256],
             "TARGET_TAUS": [1.0, 3.0, 10.0], "TRAIN_TOKENS": [20_000, 40_000, 80_000],
             "K_GRID": [1, 4, 16, 64, 256], "TEMPERATURE_GRID": [1.0, 3.0, 10.0, 30.0, 100.0],
             "QUERIES": 4000}  # lesson 06's parameters (read from it if present)


@dataclass(frozen=True)
class DeviceSpec:
    """What the time and memory estimates assume about a device."""

    name: str
    peak_flops: float  # dense fp16 tensor-core FLOP/s (GPU) or measured float32 (CPU)
    bandwidth: float  # memory bytes/s
    memory: float  # accelerator bytes (0: the CPU, where the host holds everything)
    inference_efficiency: float = 0.35
    training_efficiency: float = 0.2


GPUS = {  # name fragment -> (peak fp16 dense FLOP/s, memory bandwidth, memory)
    "T4": (65e12, 320e9, 15.0e9), "L4": (121e12, 300e9, 22.5e9), "A10": (125e12, 600e9, 22.5e9),
    "V100": (125e12, 900e9, 16e9), "A100": (312e12, 1555e9, 40e9), "H100": (989e12, 3350e9, 80e9),
    "H200": (989e12, 4800e9, 141e9)}
T4 = DeviceSpec("Tesla T4", *GPUS["T4"])


def gpu_spec(name: str, memory: float) -> DeviceSpec:
    """The spec of a GPU by name (unknown ones get T4 throughput: a conservative plan)."""
    for fragment, (flops, bandwidth, _) in GPUS.items():
        if fragment in name:
            return DeviceSpec(name, flops, bandwidth, memory)
    return DeviceSpec(name, T4.peak_flops, T4.bandwidth, memory)


def cpu_spec() -> DeviceSpec:
    """This machine's CPU: float32 matmul throughput, the best of a few 1024² products (~0.1 s);
    models reach 70% of it in inference, 30% in training (benchmarks/scale.py measured these
    shares for GPT-2 small on 2 cores)."""
    import time

    import torch

    a = torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        torch.mm(a, a)
        best = min(best, time.perf_counter() - start)
    return DeviceSpec("CPU", 2 * 1024**3 / best, 10e9, 0.0, 0.7, 0.3)


def this_device(profile: Any) -> DeviceSpec:
    """The spec of the device the profile will run on."""
    from .devices import resolve_device

    import torch

    device = resolve_device(profile.device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return gpu_spec(props.name, float(props.total_memory))
    return cpu_spec()


# --- shapes --------------------------------------------------------------------------------

def hub_shape(name: str, vocab: int = 50257, positions: int = 1024) -> ModelShape | None:
    """The shape of a known GPT-2 family hub id (`openai-community/gpt2-medium`, `gpt2`...)."""
    short = name.split("/")[-1]
    if short not in HUB_SHAPES:
        return None
    layers, width = HUB_SHAPES[short]
    return config_shape({"n_layer": layers, "n_embd": width, "vocab_size": vocab,
                         "n_positions": positions})


def config_shape(config: dict[str, Any]) -> ModelShape:
    """A GPT-2 style config -> shape, with its parameter count (12·layers·width² + embeddings)."""
    layers = config.get("n_layer") or config["num_hidden_layers"]
    width = config.get("n_embd") or config["hidden_size"]
    vocab, positions = config["vocab_size"], config.get("n_positions", 0)
    return ModelShape(layers, width, vocab, 12 * layers * width**2 + (vocab + positions) * width)


def model_shape(name: str) -> ModelShape:
    """The shape of a bundled model, a local folder or a known hub id (GPT-2 small if unknown)."""
    from .models import resolve_model_path

    path = Path(resolve_model_path(name)) / "config.json"
    if path.is_file():
        return config_shape(json.loads(path.read_text()))
    return hub_shape(name) or hub_shape("gpt2")


def memdec_shape(profile: Any) -> ModelShape:
    """The Memory Decoder's shape: a copy of base model i (its first `memdec_layers` blocks), a
    from-scratch decoder of the profile's size, or a saved one."""
    init, layers = str(profile.memdec_init), profile.memdec_layers
    if init.startswith("base:"):
        base = model_shape(profile.base_models[int(init.split(":")[1])])
        if layers is None or layers >= base.layers:
            return base
        body = 12 * base.width**2  # per block
        return ModelShape(layers, base.width, base.vocab, base.params - (base.layers - layers) * body)
    if init == "scratch":
        base = model_shape(profile.base_models[0])
        return config_shape({"n_layer": layers or 1, "n_embd": profile.memdec_dim,
                             "vocab_size": base.vocab, "n_positions": profile.context_length})
    return model_shape(init)


def forward_flops(shape: ModelShape, context: int, head: bool = True) -> float:
    """FLOPs per token of a forward pass: matmuls, attention over `context`, the LM head."""
    body = 2 * (12 * shape.layers * shape.width**2) + 2 * shape.layers * context * shape.width
    return body + (2 * shape.width * shape.vocab if head else 0)


# --- token counts --------------------------------------------------------------------------

def corpus_tokens(profile: Any) -> tuple[int, int] | None:
    """(train tokens, tokens of one held-out split): the caps, else a known corpus's size."""
    known = next((v for k, v in KNOWN_CORPORA.items() if k in profile.domain_corpus), None)
    train = profile.max_train_tokens or (known[0] if known else None)
    held = profile.max_eval_tokens or (min(known[1:]) if known else None)
    return (int(train), int(held)) if train and held else None


def lesson_parameters(lesson: str = "06", defaults: dict = ABLATIONS) -> dict[str, Any]:
    """A lesson's `parameters` cell values (literals only), over `defaults`."""
    import ast

    from .artifacts import project_root

    root = project_root()
    found = sorted((root / "notebooks").glob(f"{lesson}_*.ipynb")) if root else []
    values = dict(defaults)
    for cell in json.loads(found[0].read_text())["cells"] if found else []:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse("".join(cell["source"])).body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return values
