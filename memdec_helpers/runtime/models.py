"""Base models and tokenizers: the tiny ones bundled in the package, or hub models by name."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import no_transformers_bars
from .devices import resolve_device
from .hub import from_hub

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "data" / "tokenizer"


def resolve_model_path(name: str) -> str:
    """`bundled:<name>` -> the folder inside the package; anything else is a hub id or path."""
    if name.startswith("bundled:"):
        short = name.split(":", 1)[1]
        path = TOKENIZER_DIR if short == "tiny-bpe" else MODELS_DIR / short
        if not path.exists():
            known = sorted(p.name for p in MODELS_DIR.iterdir()) if MODELS_DIR.exists() else []
            raise ValueError(
                f"bundled model {short!r} is not in the package (it has {known}); "
                "run `python scripts/build_tiny_world.py` to build the tiny world"
            )
        return str(path)
    return name


def _pretrained(cls: Any, name: str, what: str, **kwargs: Any) -> Any:
    path = resolve_model_path(name)
    if Path(path).exists():
        return cls.from_pretrained(path, **kwargs)
    return from_hub(what, cls.from_pretrained, path, **kwargs)


def load_tokenizer(profile: Any) -> Any:
    """The profile's tokenizer (the bundled byte-level BPE for tiny, GPT-2's for the others)."""
    from transformers import AutoTokenizer

    return _pretrained(AutoTokenizer, profile.tokenizer, f"tokenizer {profile.tokenizer!r}")


def base_model_name(profile: Any, which: int = 0) -> str:
    if not 0 <= which < len(profile.base_models):
        raise ValueError(
            f"which={which} is out of range: profile {profile.name!r} has "
            f"{len(profile.base_models)} base models {profile.base_models}"
        )
    return profile.base_models[which]


def load_base_model(profile: Any, which: int = 0, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for the profile's base model `which`, in eval mode, float32 weights.

    Tiny models come from the package; hub names go through `from_pretrained` (offline: one
    clear error that suggests the `tiny` profile). The model's id (`model_id`) names it, its
    revision and its weights, so a new revision or retrained weights never reuse a cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = base_model_name(profile, which)
    revision = {"revision": profile.base_model_revision} if profile.base_model_revision else {}
    with no_transformers_bars():  # no "Loading weights" bar in every notebook
        model = _pretrained(AutoModelForCausalLM, name, f"base model {name!r}",
                            dtype=torch.float32, **revision)
    tokenizer = _pretrained(AutoTokenizer, name, f"tokenizer of {name!r}", **revision)
    tag = f"@{profile.base_model_revision}" if profile.base_model_revision else ""
    model.config._name_or_path = f"{name}{tag}@{weights_fingerprint(model)}"  # see model_id
    target = resolve_device(device or profile.device)
    return model.to(target).eval(), tokenizer


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (names, shapes and a strided sample of every tensor's
    values): cheap even for GPT-2 xl, and different for any retrained or re-initialised model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)].float().cpu().numpy()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def model_id(model: Any) -> str:
    """The model's identity for manifests and messages: `<name>[@<revision>]@<weights hash>` for
    a base model from load_base_model, else the name it was loaded from, else its class name."""
    return getattr(model.config, "_name_or_path", "") or type(model).__name__


def position_limit(model: Any) -> int | None:
    """How many positions the model can attend over (GPT-2 or Llama-style config; None if unknown
    or no model)."""
    if model is None:
        return None
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def backbone(model: Any) -> Any:
    """The transformer without its LM head (GPT-2 `transformer`, Llama-style `model`)."""
    for name in ("transformer", "model"):
        body = getattr(model, name, None)
        if body is not None:
            return body
    return model


def transformer_blocks(model: Any) -> torch.nn.ModuleList:
    """The list of transformer blocks (GPT-2 `transformer.h`, Llama-style `model.layers`)."""
    body = backbone(model)
    blocks = getattr(body, "h", None)
    blocks = blocks if blocks is not None else getattr(body, "layers", None)
    if blocks is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} "
                         "(GPT-2 style transformer.h or Llama/Qwen style model.layers)")
    return blocks


def check_context_fits(model: Any, context_length: int) -> None:
    """ValueError if the windows are longer than the model's position embeddings."""
    limit = position_limit(model)
    if limit is not None and context_length > limit:
        raise ValueError(
            f"context_length={context_length} exceeds the {limit} positions of model "
            f"{model_id(model)}; use context_length <= {limit}"
        )


def check_token_range(model: Any, tokens: np.ndarray) -> None:
    """ValueError if a token id is outside the model's vocabulary (another tokenizer's ids)."""
    vocab = getattr(model.config, "vocab_size", None)
    if tokens.size and (tokens.min() < 0 or (vocab is not None and tokens.max() >= vocab)):
        raise ValueError(
            f"token_ids span [{tokens.min()}, {tokens.max()}] but model {model_id(model)} has "
            f"a vocabulary of {vocab}; tokenize the text with the model's own tokenizer"
        )


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """ValueError if `tensor` holds NaN or inf (broken weights or an fp16 overflow)."""
    if not torch.isfinite(tensor).all():
        raise ValueError(
            f"{what} contain NaN or inf; the model weights or its precision are broken "
            "(try dtype='float32' or reload the model)"
        )


def run_device(model: Any, device: str | torch.device | None) -> torch.device:
    """`device` if given (the model is moved there), else the device the model is on."""
    if device is None:
        return next(model.parameters()).device
    device = resolve_device(device)
    model.to(device)
    return device


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
