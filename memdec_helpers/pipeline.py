"""The course's stages as one-line calls: each builds its artifact, or reuses it by manifest.

Every notebook can run on its own: asking for the targets builds the datastore and index first
if they are missing or stale. Models and token streams are memoised for the session.
"""
from __future__ import annotations

import dataclasses
import platform
from typing import Any

import numpy as np
import torch

from .artifacts import (atomic_path, check_stage_name, clear_stage, config_hash, stage_dir,
                        stage_is_current, write_manifest)
from .corpus import load_corpus
from .datastore import Datastore, build_datastore, check_datastore_matches, extract_keys, key_dim
from .devices import resolve_device, seed_everything
from .evaluate import cached_token_logprobs, format_table, results_table, tokens_hash
from .index import build_index, index_identity, set_nprobe
from .knn import knn_lm_logprobs
from .memdec import build_memory_decoder, check_same_vocabulary
from .models import base_model_name, count_parameters, load_base_model, model_id
from .plan import format_plan, make_plan, summary
from .profiles import (Profile, auto_choice, check_overrides, load_profile,
                       validate_profile)
from .targets import Targets, build_eval_targets, build_targets
from .train import is_finished, train_config, train_memory_decoder


def setup(profile: str | Profile = "auto", verbose: bool = True, **overrides: Any) -> Profile:
    """Load the profile (a name, a YAML path or a Profile, plus overrides), seed everything,
    and say where we run."""
    notes: list[str] = []
    if isinstance(profile, Profile):
        check_overrides(overrides, "setup() overrides")
        profile = dataclasses.replace(profile, **overrides)
        validate_profile(profile)
    else:
        if profile == "auto":
            profile, notes = auto_choice()
        profile = load_profile(profile, **overrides)
    seed_everything(profile.seed)
    if verbose:
        device = resolve_device(profile.device)
        gpu = f" ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else ""
        for note in notes:
            print(note)
        print(f"profile {profile.name!r} on {device.type}{gpu}; torch {torch.__version__}, "
              f"Python {platform.python_version()}; base models {profile.base_models}")
        print(plan_summary(profile))
    return profile


def plan_summary(profile: Profile) -> str:
    """One line: the run's estimated time and peak memory (see `plan`); a plan that cannot be
    made (an unusual model or corpus) says so instead of stopping the lesson."""
    try:
        made = make_plan(profile)
    except (ValueError, KeyError, OSError) as err:
        return f"plan: not available ({err})"
    return summary(made) if made else "plan: corpus size unknown until it is read (no caps)"


def plan(profile: Profile) -> str:
    """The run's plan as a markdown table: every stage's estimated time, memory and disk."""
    made = make_plan(profile)
    return format_plan(made, profile.budget()) if made else plan_summary(profile)


def _key(profile: Profile, *names: str) -> tuple:
    return (profile.name, profile.artifacts_dir, *(repr(getattr(profile, n)) for n in names))


_MODELS: dict[tuple, tuple[Any, Any]] = {}


def base(profile: Profile, which: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) of base model `which`, loaded once per session."""
    key = (base_model_name(profile, which), profile.device, profile.base_model_revision)
    if key not in _MODELS:
        _MODELS[key] = load_base_model(profile, which)
    return _MODELS[key]


def corpus(profile: Profile) -> dict[str, np.ndarray]:
    """train/validation/test token ids of the domain corpus."""
    return load_corpus(profile, progress=False)


def datastore(profile: Profile, progress: bool = True) -> Datastore:
    """Keys from base model 0 over the domain training split."""
    model, _ = base(profile, 0)
    store = build_datastore(profile, model, corpus(profile)["train"], model_id(model), progress)
    check_datastore_matches(store, model_id(model), key_dim(model))
    return store


INDEX_KNOBS = ("index_type", "ivf_nlist", "pq_code_bytes", "index_train_size", "seed",
               "search_device")
_INDEX: dict[tuple, Any] = {}


def index(profile: Profile, progress: bool = True) -> Any:
    """The search index over the datastore, built or read once per process: later calls (any
    lesson cell) reuse it, never a second copy. A changed config frees the previous one first."""
    store = datastore(profile, progress)
    key = (*_key(profile, *INDEX_KNOBS), store.manifest["config_hash"])
    if key not in _INDEX:
        release_index()
        _INDEX[key] = build_index(profile, store, progress)
    set_nprobe(_INDEX[key], profile.nprobe)
    return _INDEX[key]


def release_index() -> None:
    """Drop the memoised index (and its GPU copy of the keys, if any)."""
    for held in _INDEX.values():
        if hasattr(held, "release"):
            held.release()
    _INDEX.clear()


def targets(profile: Profile, progress: bool = True) -> Targets:
    """Sparse top-m kNN targets for every training position (self excluded by position)."""
    return build_targets(profile, datastore(profile, progress), index(profile, progress), progress)


_EVAL_KEYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def eval_keys(profile: Profile, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Query keys and next tokens of a held-out split (small: kept in memory, memoised)."""
    key = (*_key(profile, "context_length", "stride", "key_layer", "base_models",
                 "max_eval_tokens", "domain_corpus"), split)
    if key not in _EVAL_KEYS:
        model, _ = base(profile, 0)
        _EVAL_KEYS[key] = extract_keys(model, corpus(profile)[split], profile.context_length,
                                       profile.stride, profile.key_layer, profile.batch_size)
    return _EVAL_KEYS[key]


def validation_targets(profile: Profile) -> Targets:
    keys, _ = eval_keys(profile, "validation")
    return build_eval_targets(profile, index(profile, False), datastore(profile, False), keys,
                              "validation")


def base_logprobs(profile: Profile, split: str, which: int = 0) -> np.ndarray:
    model, _ = base(profile, which)
    return cached_token_logprobs(profile, f"base{which}", model, corpus(profile)[split], split,
                                 model_id(model), progress=False)


_KNN: dict[str, dict[float, np.ndarray]] = {}


def knn_logprobs(profile: Profile, split: str, temperatures: list[float] | None = None,
                 k: int | None = None) -> dict[float, np.ndarray]:
    """temperature -> per-token log p_kNN of a held-out split (kNN-LM), one search for all;
    cached on disk in `eval/knn-<split>` (lessons 02 and 04 share it) and in memory."""
    grid = set(profile.knn_temperature_grid) | {profile.knn_temperature}
    temps = tuple(float(t) for t in (temperatures or sorted(grid)))
    store, searcher = datastore(profile, False), index(profile, False)
    config = {"datastore": store.manifest["config_hash"], "index": index_identity(searcher),
              "split": split, "tokens": tokens_hash(corpus(profile)[split]),
              "temperatures": list(temps), "k": k or profile.k,
              **profile.subset("context_length", "stride", "key_layer", "dtype")}
    key = config_hash(config)
    if key not in _KNN:
        _KNN[key] = _cached_knn(profile, split, config, searcher, store)
    return _KNN[key]


def _cached_knn(profile: Profile, split: str, config: dict, searcher: Any,
                store: Datastore) -> dict[float, np.ndarray]:
    """kNN-LM log-probs read from their stage, or computed and saved there (atomically)."""
    check_stage_name(split, "split")
    directory = stage_dir(profile, f"eval/knn-{split}")
    if stage_is_current(directory, config):
        with np.load(directory / "logprobs.npz") as saved:
            return {t: saved[f"t{i}"] for i, t in enumerate(config["temperatures"])}
    keys, vals = eval_keys(profile, split)
    out = knn_lm_logprobs(searcher, store.vals, keys, vals, config["temperatures"], config["k"])
    clear_stage(directory)
    with atomic_path(directory / "logprobs.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"t{i}": out[t] for i, t in enumerate(config["temperatures"])})
    write_manifest(directory, config, n=len(vals))
    return out


def memdec_dir(profile: Profile, name: str = "memdec") -> Any:
    return stage_dir(profile, name)


_MEMDEC: dict[tuple, tuple[Any, dict]] = {}


def memory_decoder(profile: Profile, progress: bool = True, name: str = "memdec") -> tuple[Any, dict]:
    """Train (or reuse) the Memory Decoder; returns (model, history). Memoised per session."""
    key = (name, config_hash(profile.to_dict()))
    if key in _MEMDEC:
        return _MEMDEC[key]
    base_model, _ = base(profile, 0)
    tokens = corpus(profile)
    init_from = None
    if profile.memdec_init.startswith("base:"):
        init_from, _ = base(profile, int(profile.memdec_init.split(":")[1]))
    model = build_memory_decoder(profile, base_model=init_from or base_model)
    check_same_vocabulary(model, base_model)
    train_targets, out_dir = targets(profile, progress), memdec_dir(profile, name)
    finished = is_finished(out_dir, train_config(profile, model, tokens["train"], train_targets))
    validation = {} if finished else {  # only a run that still has to train needs these
        "val_targets": validation_targets(profile),
        "val_base_logprobs": base_logprobs(profile, "validation")}
    trained, history = train_memory_decoder(profile, model, tokens["train"], train_targets,
                                            out_dir, val_tokens=tokens["validation"],
                                            progress=progress, **validation)
    _MEMDEC[key] = trained.to(resolve_device(profile.device)).eval(), history
    return _MEMDEC[key]


def memdec_logprobs(profile: Profile, split: str, name: str = "memdec") -> np.ndarray:
    """Per-token log-probs of the trained Memory Decoder (cached by its run's config)."""
    model, history = memory_decoder(profile, progress=False, name=name)
    return cached_token_logprobs(profile, name, model, corpus(profile)[split], split,
                                 f"{name}:{config_hash(history['config'])}", progress=False)


def split_logprobs(profile: Profile, split: str, which: int = 0) -> dict[str, Any]:
    """Everything the results table needs for one split: base, kNN (per τ), MemDec."""
    return {"base": base_logprobs(profile, split, which), "knn": knn_logprobs(profile, split),
            "memdec": memdec_logprobs(profile, split)}


def results(profile: Profile, which: int = 0) -> tuple[list[dict], str]:
    """Rows and markdown of the results table on the test split (knobs chosen on validation)."""
    rows = results_table(split_logprobs(profile, "validation", which),
                         split_logprobs(profile, "test", which),
                         profile.alpha_grid, profile.knn_lambda_grid)
    return rows, format_table(rows)


def describe_model(model: Any) -> str:
    c = model.config
    return (f"{count_parameters(model) / 1e6:.2f}M parameters, {c.n_layer} layers, "
            f"width {c.n_embd}, vocabulary {c.vocab_size}")
