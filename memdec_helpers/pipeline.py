"""The course's stages as one-line calls: each builds its artifact, or reuses it by manifest.

Every notebook can run on its own: asking for the targets builds the datastore and index first
if they are missing or stale. Models, token streams and search results are memoised for the
session, keyed on the whole profile so that no knob can be missed; one index at a time is held,
keyed on its stage's config (its GPU copy of the keys is never made twice).
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import cached_array, config_hash, stage_dir
from .corpus import load_corpus
from .datastore import Datastore, build_datastore, check_datastore_matches, extract_keys, key_dim
from .devices import resolve_device, seed_everything
from .evaluate import cached_token_logprobs
from .index import Index, build_index, index_config, index_identity, search, set_nprobe
from .knn import knn_token_logprobs
from .memdec import build_memory_decoder, check_same_vocabulary
from .models import base_model_name, count_parameters, load_base_model, model_id, weights_fingerprint
from .notebook import check_parameters
from .plan import format_plan, make_plan, summary
from .profiles import (PROFILE_NAMES, Profile, auto_choice, check_overrides, is_yaml_path,
                       load_profile, parse_memdec_init)
from .progress import progress_bar, quiet_library_bars
from .results import decoder_rows, results_table
from .targets import Targets, build_eval_targets, build_neighbours, build_targets
from .train import is_finished, train_config, train_memory_decoder
from .windows import tokens_hash

CORPORA = ("domain", "general")


def setup(profile: str | Profile = "auto", verbose: bool = True, **overrides: Any) -> Profile:
    """Load the profile (a name, a YAML path or a Profile, plus overrides), seed everything,
    and say where we run (and the run's plan: estimated time and memory). In a notebook run by
    papermill, a parameter the notebook does not declare is a ValueError (a typo would
    otherwise run the default profile)."""
    check_parameters()
    notes: list[str] = []
    renamed = _name_override(overrides)
    if isinstance(profile, Profile):
        check_overrides(overrides, "setup() overrides")
        profile = dataclasses.replace(profile, **overrides)
    else:
        if profile == "auto":
            profile, notes = auto_choice()
        profile = load_profile(profile, **overrides)
    if renamed is not None:
        profile = dataclasses.replace(profile, name=renamed)
    seed_everything(profile.seed)
    quiet_library_bars()  # in a saved notebook (MEMDEC_PROGRESS=line/off): no library bars
    if verbose:
        device = resolve_device(profile.device)
        gpu = f" ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else ""
        for note in notes:
            print(note)
        print(f"profile {profile.name!r} on {device.type}{gpu}; torch {torch.__version__}, "
              f"Python {platform.python_version()}; base models {list(profile.base_models)}")
        print(plan_summary(profile))
    return profile


def _name_override(overrides: dict[str, Any]) -> str | None:
    """The `name` knob taken out of setup's overrides (it renames the profile's artifacts
    folder); a name that is a profile to load is a ValueError that says how to load it."""
    name = overrides.pop("name", None)
    if name is not None and (name in PROFILE_NAMES + ("auto",) or is_yaml_path(Path(str(name)))):
        raise ValueError(f"setup(name={name!r}) renames the profile's artifacts folder; to load "
                         f"the profile {name!r}, pass it first: P.setup({name!r})")
    return name


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


def _key(profile: Profile, *extra: Any) -> tuple:
    """A memo key: the whole (frozen, hashable) profile, so no knob can be missed, plus the
    call's own arguments."""
    return (profile, *extra)


def _suffix(which: int) -> str:
    """Stage-name suffix of base model `which` (base 0 keeps the plain names)."""
    return "" if which == 0 else f"-base{which}"


_MODELS: dict[tuple, tuple[Any, Any]] = {}


def base(profile: Profile, which: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) of base model `which`, loaded once per session."""
    key = (base_model_name(profile, which), profile.base_model_revision, profile.device)
    if key not in _MODELS:
        _MODELS[key] = load_base_model(profile, which)
    return _MODELS[key]


def init_base(profile: Profile) -> Any:
    """The base model the Memory Decoder starts from: base model i for memdec_init "base:<i>",
    else base model 0 (whose vocabulary a from-scratch or saved decoder must share)."""
    kind, which = parse_memdec_init(profile.memdec_init)
    return base(profile, which if kind == "base" else 0)[0]


def corpus(profile: Profile, which: str = "domain") -> dict[str, np.ndarray]:
    """train/validation/test token ids of the domain corpus (or of the general corpus the base
    models were trained on; the same caps apply)."""
    if which not in CORPORA:
        raise ValueError(f"corpus which={which!r}: use one of {CORPORA}")
    return load_corpus(profile, which, progress=False)


def datastore(profile: Profile, which: int = 0, progress: bool = True) -> Datastore:
    """Keys of base model `which` over the domain training split (each base has its own)."""
    model, _ = base(profile, which)
    store = build_datastore(profile, model, corpus(profile)["train"], model_id(model), progress,
                            stage=f"datastore{_suffix(which)}")
    check_datastore_matches(store, model_id(model), key_dim(model))
    return store


_INDEX: dict[tuple, Index] = {}  # at most one: (stage folder, its config, search_device) -> index


def index(profile: Profile, which: int = 0, progress: bool = True) -> Index:
    """The search index over base model `which`'s datastore (faiss, or exact search on the
    GPU), built or read once per process and held until another index is asked for, which
    frees it first (with its GPU copy of the keys): never two copies at once. Keyed on the
    index stage's own config, the whole of what the index depends on, so any profile with the
    same index (an ablation's, a lesson's) reuses it."""
    store = datastore(profile, which, progress)
    stage = f"index{_suffix(which)}"
    key = (stage_dir(profile, stage), config_hash(index_config(profile, store)),
           profile.search_device)
    if key not in _INDEX:
        release_index()
        _INDEX[key] = build_index(profile, store, progress, stage=stage)
    set_nprobe(_INDEX[key], profile.nprobe)
    return _INDEX[key]


def release_index() -> None:
    """Drop the memoised index (and its GPU copy of the keys, if any)."""
    for held in _INDEX.values():
        held.release()
    _INDEX.clear()


def targets_label(profile: Profile) -> str:
    """The knobs that shape the kNN targets, as a stage-name suffix (each setting keeps its own
    stage, so an ablation never overwrites the main run's targets)."""
    return f"k{profile.k}-tau{profile.knn_temperature:g}-m{profile.target_top_m}"


def targets(profile: Profile, progress: bool = True) -> Targets:
    """Sparse top-m kNN targets for every training position (self excluded by position),
    from base model 0's datastore: the Memory Decoder's training signal."""
    store, idx = datastore(profile, 0, progress), index(profile, 0, progress)
    cached = profile.neighbour_cache_k
    neighbours = (build_neighbours(profile, store, idx, cached, progress)
                  if cached and cached > profile.k else None)
    return build_targets(profile, store, idx, progress, stage=f"targets-{targets_label(profile)}",
                         neighbours=neighbours)


_EVAL_KEYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def eval_keys(profile: Profile, split: str, which: int = 0,
              text: str = "domain") -> tuple[np.ndarray, np.ndarray]:
    """Query keys (base model `which`) and next tokens of a held-out split, memoised."""
    key = _key(profile, split, which, text)
    if key not in _EVAL_KEYS:
        model, _ = base(profile, which)
        _EVAL_KEYS[key] = extract_keys(model, corpus(profile, text)[split], profile.context_length,
                                       profile.stride, profile.key_layer, profile.batch_size)
    return _EVAL_KEYS[key]


def validation_targets(profile: Profile) -> Targets:
    """kNN targets of the validation positions (to measure the decoder's KL on held-out text)."""
    keys, _ = eval_keys(profile, "validation")
    return build_eval_targets(profile, index(profile, 0, False), datastore(profile, 0, False),
                              keys, f"validation-{targets_label(profile)}")


def base_logprobs(profile: Profile, split: str, which: int = 0, text: str = "domain") -> np.ndarray:
    """log p(next token) of base model `which` on a split of the domain (or general) corpus."""
    model, _ = base(profile, which)
    name = f"base{which}" + ("" if text == "domain" else f"-{text}")
    return cached_token_logprobs(profile, name, model, corpus(profile, text)[split], split,
                                 model_id(model), progress=False)


_KNN: dict[tuple, dict[tuple[int, float], np.ndarray]] = {}


def knn_logprobs(profile: Profile, split: str, which: int = 0,
                 text: str = "domain") -> dict[tuple[int, float], np.ndarray]:
    """(k, τ) -> log p_kNN(next token) of every position of a split, for the profile's k and τ
    grids, from base model `which`'s own datastore: one search with the largest k serves all.
    Saved in `eval/knn<which>[-general]-<split>/` (lessons 02, 04, 05 and the results table
    share it) and memoised."""
    key = _key(profile, split, which, text)
    if key not in _KNN:
        grid = [(k, float(t)) for k in sorted(set(profile.knn_k_grid))
                for t in profile.knn_temperature_grid]

        def search_grid() -> np.ndarray:  # [len(grid), Q]
            keys, next_tokens = eval_keys(profile, split, which, text)
            distances, rows = search(index(profile, which, False), keys, grid[-1][0])  # nearest first
            neighbours = np.asarray(datastore(profile, which, False).vals)[rows]  # [Q, K]
            return np.stack([knn_token_logprobs(distances[:, :k], neighbours[:, :k], next_tokens, t)
                             for k, t in grid])

        _KNN[key] = dict(zip(grid, _saved_knn_logprobs(profile, split, which, text, grid, search_grid)))
    return _KNN[key]


def _saved_knn_logprobs(profile: Profile, split: str, which: int, text: str,
                        grid: list[tuple[int, float]], compute: Any) -> np.ndarray:
    """`compute()` cached on disk, keyed on what it depends on: the datastore, the index, the
    base model that makes the query keys, the split's tokens, the window knobs and the grid."""
    model, _ = base(profile, which)
    config = {"datastore": datastore(profile, which, False).manifest["config_hash"],
              "index": index_identity(index(profile, which, False)), "model_id": model_id(model),
              "weights": weights_fingerprint(model), "split": split,
              "tokens": tokens_hash(corpus(profile, text)[split]), "grid": grid,
              **profile.subset("context_length", "stride", "key_layer", "dtype")}
    name = f"knn{which}" + ("" if text == "domain" else f"-{text}")
    return cached_array(stage_dir(profile, "eval", f"{name}-{split}"), config, compute,
                        "logprobs.npy", shape=lambda values: list(values.shape))


def memdec_dir(profile: Profile, name: str = "memdec") -> Any:
    return stage_dir(profile, name)


_MEMDEC: dict[tuple, tuple[Any, dict]] = {}


def memory_decoder(profile: Profile, progress: bool = True, name: str = "memdec",
                   validate: bool = True) -> tuple[Any, dict]:
    """Train (or reuse) the Memory Decoder; returns (model, history). Memoised per session.
    `validate`: evaluate on validation every `eval_every` steps (perplexities, KL)."""
    key = _key(profile, name)
    if key in _MEMDEC:
        return _MEMDEC[key]
    base_model, _ = base(profile, 0)
    tokens = corpus(profile)
    model = build_memory_decoder(profile, base_model=init_base(profile))
    check_same_vocabulary(model, base_model)
    train_targets, out_dir = targets(profile, progress), memdec_dir(profile, name)
    finished = is_finished(out_dir, train_config(profile, model, tokens["train"], train_targets))
    validation = {} if finished or not validate else {  # only a run that still trains needs these
        "val_tokens": tokens["validation"], "val_targets": validation_targets(profile),
        "val_base_logprobs": base_logprobs(profile, "validation")}
    trained, history = train_memory_decoder(profile, model, tokens["train"], train_targets,
                                            out_dir, progress=progress, **validation)
    _MEMDEC[key] = trained.to(resolve_device(profile.device)).eval(), history
    return _MEMDEC[key]


def dapt_profile(profile: Profile) -> Profile:
    """The DAPT baseline's knobs: all of base model 0 fine-tuned with cross-entropy only
    (β = 0) on the same training tokens, for the same steps as the Memory Decoder."""
    return dataclasses.replace(profile, beta=0.0, memdec_init="base:0", memdec_layers=None)


def dapt(profile: Profile, progress: bool = True) -> tuple[Any, dict]:
    """Train (or reuse) the DAPT baseline (domain-adaptive fine-tuning of base model 0)."""
    return memory_decoder(dapt_profile(profile), progress, name="dapt")


def memdec_logprobs(profile: Profile, split: str, name: str = "memdec",
                    text: str = "domain") -> np.ndarray:
    """Per-token log-probs of a trained decoder run (the Memory Decoder, DAPT, an ablation),
    cached by the run's config."""
    model, history = memory_decoder(profile, progress=False, name=name)
    cache = name + ("" if text == "domain" else f"-{text}")
    return cached_token_logprobs(profile, cache, model, corpus(profile, text)[split], split,
                                 f"{name}:{config_hash(history['config'])}", progress=False)


def dapt_logprobs(profile: Profile, split: str, text: str = "domain") -> np.ndarray:
    """Per-token log-probs of the DAPT baseline."""
    dapt(profile, progress=False)
    return memdec_logprobs(dapt_profile(profile), split, "dapt", text)


def _splits(get: Any, general: bool = True) -> dict[str, np.ndarray]:
    """validation / test (/ general-test) log-probs from `get(split, text)`."""
    out = {"validation": get("validation", "domain"), "test": get("test", "domain")}
    if general:
        out["general"] = get("test", "general")
    return out


def decoder_result(profile: Profile, name: str = "memdec", which: int = 0,
                   general: bool = True) -> list[dict[str, Any]]:
    """A decoder run scored alone and mixed with base model `which` (α chosen on validation):
    the rows "MemDec alone" and "base + MemDec" of the results table."""
    memory_decoder(profile, progress=False, name=name)
    mem = _splits(lambda split, text: memdec_logprobs(profile, split, name, text), general)
    base_lp = _splits(lambda split, text: base_logprobs(profile, split, which, text), general)
    return decoder_rows(base_lp, mem, profile.alpha_grid, which)


def ablation_profile(profile: Profile, **knobs: Any) -> Profile:
    """The profile of a short ablation run: the profile's ablation schedule plus `knobs`. A
    run on a different training corpus (max_train_tokens) gets its own artifacts folder."""
    steps = profile.ablation_steps
    schedule = dict(train_steps=steps, train_batch_size=profile.ablation_batch_size,
                    warmup_steps=max(1, steps // 8), eval_every=steps)
    changed = dataclasses.replace(profile, **{**schedule, **knobs})
    if changed.max_train_tokens != profile.max_train_tokens:
        changed = dataclasses.replace(changed, name=f"{profile.name}-train{changed.max_train_tokens}")
    return changed


def short_run(profile: Profile, **knobs: Any) -> dict[str, Any]:
    """Train (or reuse) a short ablation run with `knobs` changed; its validation/test
    perplexities alone and mixed with base 0 (α chosen on validation), and its KL to the kNN
    targets over the last training steps. Runs are named by their config, so the same setting
    asked for twice (e.g. β = 0.5 and the reference of another ablation) trains once."""
    variant = ablation_profile(profile, **knobs)
    name = short_run_name(variant)
    model, history = memory_decoder(variant, progress=False, name=name, validate=False)
    alone, mixed = decoder_result(variant, name, general=False)
    last = history["steps"][-LAST_STEPS:]
    return {"run": name, "knobs": knobs, "params": count_parameters(model),
            "steps": len(history["steps"]), "train_kl": float(np.mean([s["kl"] for s in last])),
            "alone": alone, "mixed": mixed}


LAST_STEPS = 10  # training steps averaged for a short run's final KL


def short_runs(profile: Profile, settings: dict[Any, dict[str, Any]],
               workers: int | None = None) -> dict[Any, dict[str, Any]]:
    """label -> short_run(profile, **knobs) for every setting. On a CPU, runs that still have
    to train go `workers` at a time (default: profile.ablation_workers) in separate processes of
    one thread each, which uses the cores better than one process with many small matrices;
    the results are then read back here from their artifacts."""
    workers = profile.ablation_workers if workers is None else workers
    todo = [knobs for knobs in settings.values() if not _short_run_done(profile, knobs)]
    if workers > 1 and len(todo) > 1 and resolve_device(profile.device).type == "cpu":
        _train_in_workers(profile, todo, workers)
    return {label: short_run(profile, **knobs)
            for label, knobs in progress_bar(settings.items(), desc="short runs", leave=False)}


def _short_run_done(profile: Profile, knobs: dict[str, Any]) -> bool:
    """Whether the short run of `knobs` has finished training (its manifest is there)."""
    variant = ablation_profile(profile, **knobs)
    return (stage_dir(variant, short_run_name(variant)) / "manifest.json").exists()


def short_run_name(variant: Profile) -> str:
    """`ablation-<hash of the run's knobs>` (knobs that only say how runs are scheduled left
    out, so that changing them reuses every run)."""
    knobs = {k: v for k, v in variant.to_dict().items()
             if k not in ("ablation_workers", "ablation_seeds")}
    return f"ablation-{config_hash(knobs)[:10]}"


def _one_thread() -> None:
    """Workers compute with one thread each (torch and faiss's OpenMP): two workers with two
    threads each on two cores spin-wait on each other and run many times slower."""
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def _train_in_workers(profile: Profile, todo: list[dict[str, Any]], workers: int) -> None:
    """Train and score the short runs of `todo` in a pool of single-threaded processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        jobs = [pool.submit(_short_run_job, profile, knobs) for knobs in todo]
        for job in progress_bar(jobs, desc=f"training {len(todo)} short runs, {workers} at a time",
                                leave=False):
            job.result()  # re-raises a worker's error here


def _short_run_job(profile: Profile, knobs: dict[str, Any]) -> None:
    short_run(profile, **knobs)


def results(profile: Profile) -> list[dict[str, Any]]:
    """The course's results table (both bases; every weight chosen on validation): base,
    base + kNN-LM, MemDec alone, base + MemDec, DAPT."""
    bases = {w: _splits(lambda split, text, w=w: base_logprobs(profile, split, w, text))
             for w in range(len(profile.base_models))}
    knn = {w: {split: knn_logprobs(profile, s, w, text)
               for split, (s, text) in {"validation": ("validation", "domain"),
                                         "test": ("test", "domain"),
                                         "general": ("test", "general")}.items()}
           for w in bases}
    memory_decoder(profile, progress=False)
    mem = _splits(lambda split, text: memdec_logprobs(profile, split, "memdec", text))
    dapt(profile, progress=False)
    dapt_lp = _splits(lambda split, text: dapt_logprobs(profile, split, text))
    return results_table(bases, knn, mem, dapt_lp, profile.alpha_grid, profile.knn_lambda_grid)


def describe_model(model: Any) -> str:
    c = model.config
    return (f"{count_parameters(model) / 1e6:.2f}M parameters, {c.n_layer} layers, "
            f"width {c.n_embd}, vocabulary {c.vocab_size}")
