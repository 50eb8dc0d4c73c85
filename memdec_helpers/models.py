"""Base models and tokenizers: the tiny ones bundled in the package, or hub models by name."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device
from .hub import from_hub

MODELS_DIR = Path(__file__).parent / "data" / "models"
TOKENIZER_DIR = Path(__file__).parent / "data" / "tokenizer"


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
    clear error that suggests the `tiny` profile)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in every notebook
    name = base_model_name(profile, which)
    revision = {"revision": profile.base_model_revision} if profile.base_model_revision else {}
    model = _pretrained(AutoModelForCausalLM, name, f"base model {name!r}",
                        dtype=torch.float32, **revision)
    tokenizer = _pretrained(AutoTokenizer, name, f"tokenizer of {name!r}", **revision)
    model.config._name_or_path = name + weights_fingerprint(name)  # identity for manifests
    target = resolve_device(device or profile.device)
    return model.to(target).eval(), tokenizer


def weights_fingerprint(name: str) -> str:
    """`@<hash>` of a local model's weights file (so retrained weights invalidate caches);
    empty for hub models, whose name and revision identify them."""
    path = Path(resolve_model_path(name))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return ""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return "@" + digest.hexdigest()[:10]


def model_id(model: Any) -> str:
    """A stable identity for manifests: the name or path the model was loaded from."""
    return str(getattr(model.config, "_name_or_path", "") or model.config.model_type)


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


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
