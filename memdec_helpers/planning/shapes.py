"""Model shapes for the plan, without loading any weights: bundled and local configs, known
GPT-2 family hub ids, the Memory Decoder the profile builds; FLOPs per token."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime.batching import ModelShape


HUB_SHAPES = {"gpt2": (12, 768), "gpt2-medium": (24, 1024), "gpt2-large": (36, 1280),
              "gpt2-xl": (48, 1600), "distilgpt2": (6, 768)}


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
    from ..runtime.models import resolve_model_path

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
