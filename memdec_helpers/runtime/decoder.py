"""The Memory Decoder model: a small causal LM that shares the base model's tokenizer.

Built from scratch (the profile's size), as a copy of a base model's first blocks, or from a
saved folder. The loss it is trained with lives in core/loss.py.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..profiles import Profile, parse_memdec_init
from .models import backbone, position_limit, transformer_blocks


def build_memory_decoder(profile: Profile, base_model: Any = None,
                         vocab_size: int | None = None) -> Any:
    """A Memory Decoder sharing the base tokenizer: from scratch (profile size), a copy of base
    model `i` (`memdec_init="base:<i>"`, pass that model as base_model; `memdec_layers` keeps
    only its first blocks) or a saved folder."""
    kind, where = parse_memdec_init(profile.memdec_init)
    if kind == "base":
        model = _copy_of_base(profile.memdec_init, base_model, profile.memdec_layers)
    elif kind == "scratch":
        model = _from_scratch(profile, base_model, vocab_size)
    else:
        model = _from_folder(where)
    _check_built(model, profile, base_model, vocab_size)
    return model.float().train()


def _copy_of_base(init: str, base_model: Any, layers: int | None = None) -> Any:
    """A deep copy of the base model (its weights are the starting point, the base stays
    frozen), keeping its embeddings, its first `layers` blocks (None: all) and its final norm."""
    if base_model is None:
        raise ValueError(f"memdec_init={init!r} copies a base model: pass that model as base_model=")
    depth = len(transformer_blocks(base_model))
    if layers is not None and not 1 <= layers <= depth:
        raise ValueError(f"memdec_layers={layers} but {init} has {depth} blocks; a "
                         f"decoder copied from it keeps its first 1..{depth} blocks (None: all)")
    model = copy.deepcopy(base_model)
    if layers is not None and layers < depth:
        keep_first_blocks(model, layers)
    return model


def keep_first_blocks(model: Any, layers: int) -> None:
    """Drop every block after the first `layers`, in place, and record it in the config so
    save_pretrained / from_pretrained round-trip the smaller model."""
    body = backbone(model)
    name = "h" if hasattr(body, "h") else "layers"
    setattr(body, name, torch.nn.ModuleList(list(transformer_blocks(model))[:layers]))
    for key in ("n_layer", "num_hidden_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, layers)
    if getattr(model.config, "layer_types", None):  # newer Llama-style configs list every layer
        model.config.layer_types = model.config.layer_types[:layers]


def _from_folder(path: str) -> Any:
    """A Memory Decoder saved with save_pretrained (e.g. a finished training run's `model/`)."""
    from transformers import AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"memdec_init={path!r} is not 'scratch', 'base:<i>' or a save_pretrained "
                         "folder (no config.json there)")
    return AutoModelForCausalLM.from_pretrained(path)


def _from_scratch(profile: Profile, base_model: Any, vocab_size: int | None) -> Any:
    """A randomly initialised GPT-2 of the profile's size (seeded; the global RNG is untouched)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = vocab_size or (base_model.config.vocab_size if base_model is not None else None)
    if vocab is None:
        raise ValueError("a from-scratch Memory Decoder needs vocab_size= or base_model= "
                         "(it must share the base model's tokenizer)")
    positions = max(profile.context_length, position_limit(base_model) or 0)
    special = {"bos_token_id": None, "eos_token_id": None}  # GPT-2's 50256 may not exist here
    if base_model is not None:
        special = {k: getattr(base_model.config, k, None)
                   for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if profile.memdec_layers is None:
        raise ValueError("memdec_init='scratch' needs memdec_layers (blocks of the new decoder)")
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_layer=profile.memdec_layers,
                        n_embd=profile.memdec_dim, n_head=profile.memdec_heads, **special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.seed)
        return GPT2LMHeadModel(config)


def _check_built(model: Any, profile: Profile, base_model: Any, vocab_size: int | None) -> None:
    """The Memory Decoder must fit the training context and the base vocabulary."""
    limit = position_limit(model)
    if limit is not None and limit < profile.context_length:
        raise ValueError(f"the Memory Decoder ({profile.memdec_init!r}) has {limit} positions, "
                         f"fewer than context_length={profile.context_length}; use a shorter "
                         "context_length or memdec_init='scratch'")
    if vocab_size is not None and model.config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size={vocab_size} but the Memory Decoder ({profile.memdec_init!r}) "
                         f"has {model.config.vocab_size} tokens; it must share the base tokenizer")
    if base_model is not None:
        check_same_vocabulary(model, base_model)


def _output_vocab(model: Any) -> int:
    """Rows of the output layer (falls back to config.vocab_size)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def check_same_vocabulary(memdec: Any, base_model: Any, memdec_tokenizer: Any = None,
                          base_tokenizer: Any = None) -> None:
    """Plug-and-play needs one tokenizer: equal output vocabularies (and equal token -> id maps
    when both tokenizers are given), else ValueError."""
    a, b = _output_vocab(memdec), _output_vocab(base_model)
    if a != b:
        raise ValueError(
            f"the Memory Decoder's vocabulary ({a} tokens) differs from the base model's ({b}); "
            "plug-and-play needs both to use the same tokenizer: train a Memory Decoder on this "
            "base model's tokenizer"
        )
    if (memdec_tokenizer is None) != (base_tokenizer is None):
        raise ValueError("pass both memdec_tokenizer and base_tokenizer (or neither) to compare them")
    if memdec_tokenizer is not None:
        mem_vocab, base_vocab = memdec_tokenizer.get_vocab(), base_tokenizer.get_vocab()
        if mem_vocab != base_vocab:
            differ = len(set(mem_vocab.items()) ^ set(base_vocab.items()))
            raise ValueError(
                f"the tokenizers differ ({differ} token/id pairs are not shared): plug-and-play "
                "needs the Memory Decoder and the base model to use the same tokenizer"
            )
