"""The course's stages as one-line calls: each builds its artifact, or reuses it by manifest.

Every notebook can run on its own: asking for the targets builds the datastore and index first
if they are missing. Each stage is found by its recipe (stages/recipes.py): a key computed from
the profile alone, so a finished stage is recognised by one small JSON read, without loading a
model or an artifact it does not need. Models, token streams, query keys and kNN-LM scores are
memoised for the session under the same keys (a changed knob or an edited corpus file is a new
key); one index at a time is held (its GPU copy of the keys is never made twice).
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .core.mixing import perplexity
from .core.results import comparison_table, decoder_rows, mlp_memory_rows, results_table
from .core.windows import WindowSpec, window_batches
from .lessons.notebook import check_parameters
from .planning.lesson_settings import AblationSettings
from .planning.lesson_settings import ablation_settings as derive_ablation_settings
from .planning.plan import format_plan, make_plan, summary
from .profiles import (PROFILE_NAMES, Profile, auto_choice, check_overrides, is_yaml_path,
                       load_profile, parse_memdec_init)
from .progress import progress_bar, quiet_library_bars
from .runtime.decoder import build_memory_decoder, check_same_vocabulary
from .runtime.devices import resolve_device, seed_everything
from .runtime.keys import key_dim, keys_of
from .runtime.knnlm import knn_lm_grid
from .runtime.mlp_memory import build_mlp_memory, matched_width, read_hidden
from .runtime.models import count_parameters, load_base_model, model_id
from .runtime.scoring import score_tokens
from .runtime.search import search, search_device
from .runtime.timing import fastest
from .runtime.workers import run_in_workers
from .stages.corpus import load_corpus
from .stages.facts import fact_masks as _fact_masks
from .stages.facts import fact_example as _fact_example
from .stages.facts import fact_records
from .stages.datastore import Datastore, build_datastore, check_datastore_matches, load_datastore
from .stages.index import Index, build_index
from .stages.logprobs import saved_logprobs
from .stages.recipes import (Recipe, base_model_identity, corpus_recipe, datastore_recipe,
                             eval_targets_recipe, index_recipe, knn_logprobs_recipe,
                             logprobs_recipe, mlp_memory_recipe, queries_identity, run_recipe,
                             search_identity, targets_recipe)
from .stages.store import read_manifest, stage_dir, stage_is_current
from .stages.targets import Targets, build_eval_targets, build_neighbours, build_targets, load_targets
from .stages.training import is_finished, load_run, train_memory_decoder

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


def _suffix(which: int) -> str:
    """Label suffix of base model `which` (base 0 keeps the plain names)."""
    return "" if which == 0 else f"-base{which}"


def _folder(profile: Profile, recipe: Recipe) -> Any:
    """The stage folder of a recipe (created if missing)."""
    return stage_dir(profile, recipe.folder)


def _is_built(profile: Profile, recipe: Recipe, *, verify: bool = True) -> bool:
    """Whether the recipe's stage is complete (its manifest: one JSON read); with `verify`, its
    files are checked too (once per process), as the caller is about to read them."""
    return stage_is_current(_folder(profile, recipe), recipe.config(), verify=verify)


# --- models and corpora ----------------------------------------------------------------------

_MODELS: dict[tuple, tuple[Any, Any]] = {}


def base(profile: Profile, which: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer) of base model `which`, loaded once per session."""
    key = (base_model_identity(profile, which), profile.device)
    if key not in _MODELS:
        _MODELS[key] = load_base_model(profile, which)
    return _MODELS[key]


def init_base(profile: Profile) -> Any:
    """The base model the Memory Decoder starts from: base model i for memdec_init "base:<i>",
    else base model 0 (whose vocabulary a from-scratch or saved decoder must share)."""
    kind, which = parse_memdec_init(profile.memdec_init)
    return base(profile, which if kind == "base" else 0)[0]


_CORPORA: dict[str, dict[str, np.ndarray]] = {}


def corpus(profile: Profile, which: str = "domain") -> dict[str, np.ndarray]:
    """train/validation/test token ids of the domain corpus (or of the general corpus the base
    models were trained on; the same caps apply)."""
    if which not in CORPORA:
        raise ValueError(f"corpus which={which!r}: use one of {CORPORA}")
    key = corpus_recipe(profile, which).key
    if key not in _CORPORA:
        _CORPORA[key] = load_corpus(profile, which, progress=False)
    return _CORPORA[key]


# --- datastore, search, targets ----------------------------------------------------------------

_STORES: dict[str, Datastore] = {}


def datastore(profile: Profile, which: int = 0, progress: bool = True) -> Datastore:
    """Keys of base model `which` over the domain training split (each base has its own)."""
    recipe = datastore_recipe(profile, which)
    if recipe.key not in _STORES:
        if _is_built(profile, recipe):
            store = load_datastore(_folder(profile, recipe))
        else:
            model, _ = base(profile, which)
            store = build_datastore(profile, model, corpus(profile)["train"], model_id(model),
                                    progress=progress, recipe=recipe)
            check_datastore_matches(store, model_id(model), key_dim(model))
        _STORES[recipe.key] = store
    return _STORES[recipe.key]


def _datastore_shape(profile: Profile, which: int) -> tuple[int, int]:
    """(N, d) of base model `which`'s datastore, from its manifest (built first if missing)."""
    recipe = datastore_recipe(profile, which)
    manifest = read_manifest(_folder(profile, recipe)) if _is_built(profile, recipe, verify=False) else None
    manifest = manifest or datastore(profile, which, progress=False).manifest
    return int(manifest["n"]), int(manifest["dim"])


def _exact_search(profile: Profile, which: int) -> bool:
    """Whether base model `which`'s datastore is searched exactly: a flat index, or exact torch
    search on a GPU the keys fit (decided from the GPU's total memory: the same every time)."""
    if profile.index_type == "flat":
        return True
    if profile.search_device == "cpu" or not torch.cuda.is_available():
        return False
    return search_device(profile, *_datastore_shape(profile, which)) is not None


def search_id(profile: Profile, which: int = 0) -> str:
    """The identity of a search over base model `which`'s datastore, from the profile: "exact
    over the datastore" (faiss flat or torch, any device), or the IVF index's key and nprobe."""
    key = datastore_recipe(profile, which).key
    return search_identity(profile, key, _exact_search(profile, which), which)


_INDEX: dict[str, Index] = {}  # at most one: the index's identity (nprobe aside) -> index


def index(profile: Profile, which: int = 0, progress: bool = True) -> Index:
    """The search index over base model `which`'s datastore (faiss, or exact search on the
    GPU), built or read once per process and held until another index is asked for, which
    frees it first (with its GPU copy of the keys): never two copies at once. Any profile with
    the same datastore and index knobs (an ablation's, a lesson's) reuses it."""
    key = datastore_recipe(profile, which).key
    held = (f"exact:{key}" if _exact_search(profile, which)
            else index_recipe(profile, key, which).key)
    if held not in _INDEX:
        release_index()
        store = datastore(profile, which, progress)
        _INDEX[held] = build_index(profile, store, progress=progress, stage=f"index{_suffix(which)}")
    _INDEX[held].set_nprobe(profile.nprobe)
    return _INDEX[held]


def release_index() -> None:
    """Drop the memoised index (and its GPU copy of the keys, if any)."""
    for held in _INDEX.values():
        held.release()
    _INDEX.clear()


def _targets_recipe(profile: Profile) -> Recipe:
    which = profile.target_base
    return targets_recipe(profile, datastore_recipe(profile, which).key, search_id(profile, which))


def targets(profile: Profile, progress: bool = True) -> Targets:
    """Sparse top-m kNN targets for every training position (self excluded by position),
    from the datastore of base model `profile.target_base` (0 unless the profile asks for
    another teacher): the Memory Decoder's training signal. Every base model's datastore holds
    the same positions of the same training tokens, so row i is position i whichever it is."""
    recipe = _targets_recipe(profile)
    if _is_built(profile, recipe):
        return load_targets(_folder(profile, recipe))
    which = profile.target_base
    store, idx = datastore(profile, which, progress), index(profile, which, progress)
    cached = profile.neighbour_cache_k
    neighbours = (build_neighbours(profile, store, idx, cached, progress=progress,
                                   stage=f"neighbours-k{cached}{_suffix(which)}")
                  if cached and cached > profile.k else None)
    return build_targets(profile, store, idx, progress=progress, recipe=recipe,
                         neighbours=neighbours)


_EVAL_KEYS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def eval_keys(profile: Profile, split: str, which: int = 0,
              text: str = "domain") -> tuple[np.ndarray, np.ndarray]:
    """Query keys (base model `which`) and next tokens of a held-out split, memoised."""
    key = queries_identity(profile, split, which, text)
    if key not in _EVAL_KEYS:
        model, _ = base(profile, which)
        _EVAL_KEYS[key] = keys_of(model, corpus(profile, text)[split], WindowSpec.of(profile),
                                  key_layer=profile.key_layer)
    return _EVAL_KEYS[key]


def validation_targets(profile: Profile) -> Targets:
    """kNN targets of the validation positions (to measure the decoder's KL on held-out text),
    from the same base model's datastore and keys as the training targets."""
    which = profile.target_base
    recipe = eval_targets_recipe(profile, "validation",
                                 queries_identity(profile, "validation", which),
                                 datastore_recipe(profile, which).key, search_id(profile, which))
    if _is_built(profile, recipe):
        return load_targets(_folder(profile, recipe))
    keys, _ = eval_keys(profile, "validation", which)
    return build_eval_targets(profile, index(profile, which, progress=False),
                              datastore(profile, which, progress=False), keys, name="validation",
                              recipe=recipe)


# --- per-token log-probs -----------------------------------------------------------------------

def _scored(profile: Profile, recipe: Recipe, model: Callable[[], Any], tokens: Callable[[], Any]
            ) -> np.ndarray:
    """A model's per-token log-probs under `recipe`: read back, or scored (the model and the
    tokens are only fetched when they must be)."""
    return saved_logprobs(profile, recipe,
                          lambda: score_tokens(model(), tokens(), WindowSpec.of(profile)),
                          n=len, perplexity=perplexity)


def base_logprobs(profile: Profile, split: str, which: int = 0, text: str = "domain") -> np.ndarray:
    """log p(next token) of base model `which` on a split of the domain (or general) corpus."""
    recipe = logprobs_recipe(profile, f"base{which}", split, text,
                             base_model_identity(profile, which))
    return _scored(profile, recipe, lambda: base(profile, which)[0],
                   lambda: corpus(profile, text)[split])


_KNN: dict[str, dict[tuple[int, float], np.ndarray]] = {}


def knn_recipe(profile: Profile, split: str, which: int = 0, text: str = "domain") -> Recipe:
    """The recipe of kNN-LM's log-probs on a split over the profile's (k, τ) grid."""
    grid = [(k, float(t)) for k in sorted(set(profile.knn_k_grid))
            for t in profile.knn_temperature_grid]
    return knn_logprobs_recipe(profile, split, which, text, datastore_recipe(profile, which).key,
                               search_id(profile, which), grid)


def knn_logprobs(profile: Profile, split: str, which: int = 0,
                 text: str = "domain") -> dict[tuple[int, float], np.ndarray]:
    """(k, τ) -> log p_kNN(next token) of every position of a split, for the profile's k and τ
    grids, from base model `which`'s own datastore: one search with the largest k serves all.
    Saved on disk (lessons 02, 04, 05 and the results table share it) and memoised."""
    recipe = knn_recipe(profile, split, which, text)
    grid = [(int(k), float(t)) for k, t in recipe.knobs["grid"]]
    if recipe.key not in _KNN:
        def search_grid() -> np.ndarray:  # [len(grid), Q]
            keys, next_tokens = eval_keys(profile, split, which, text)
            return knn_lm_grid(index(profile, which, progress=False),
                               datastore(profile, which, progress=False).vals, keys, next_tokens,
                               grid=grid)

        _KNN[recipe.key] = dict(zip(grid, saved_logprobs(profile, recipe, search_grid)))
    return _KNN[recipe.key]


# --- training runs -----------------------------------------------------------------------------

def _run_recipe(profile: Profile, name: str) -> Recipe:
    """The recipe of a training run; its kNN targets are part of it only when β > 0."""
    return run_recipe(profile, name, _targets_recipe(profile).key if profile.beta > 0 else None)


def memdec_dir(profile: Profile, name: str = "memdec") -> Any:
    """The folder of a training run (the Memory Decoder's by default)."""
    return _folder(profile, _run_recipe(profile, name))


_MEMDEC: dict[str, tuple[Any, dict]] = {}


def memory_decoder(profile: Profile, progress: bool = True, name: str = "memdec",
                   validate: bool = True) -> tuple[Any, dict]:
    """Train (or reuse) the Memory Decoder; returns (model, history). Memoised per session.
    `validate`: evaluate on validation every `eval_every` steps (perplexities, KL)."""
    recipe = _run_recipe(profile, name)
    if recipe.key not in _MEMDEC:
        out_dir = _folder(profile, recipe)
        if is_finished(out_dir, recipe.config()):
            trained, history = load_run(out_dir)
        else:
            trained, history = _train(profile, recipe, out_dir, progress, validate)
        _MEMDEC[recipe.key] = trained.to(resolve_device(profile.device)).eval(), history
    return _MEMDEC[recipe.key]


def _train(profile: Profile, recipe: Recipe, out_dir: Any, progress: bool,
           validate: bool) -> tuple[Any, dict]:
    """Build the decoder the profile describes and train it (resuming a checkpoint)."""
    base_model, _ = base(profile, 0)
    tokens = corpus(profile)
    model = build_memory_decoder(profile, base_model=init_base(profile))
    check_same_vocabulary(model, base_model)
    validation = {} if not validate else {
        "val_tokens": tokens["validation"], "val_targets": validation_targets(profile),
        "val_base_logprobs": base_logprobs(profile, "validation")}
    return train_memory_decoder(profile, model, tokens["train"], targets(profile, progress),
                                out_dir=out_dir, progress=progress, config=recipe.config(), **validation)


def dapt_profile(profile: Profile) -> Profile:
    """The DAPT baseline's knobs: all of base model 0 fine-tuned with cross-entropy only
    (β = 0) on the same training tokens, for the same steps as the Memory Decoder."""
    return dataclasses.replace(profile, beta=0.0, memdec_init="base:0", memdec_layers=None)


def same_size_profile(profile: Profile) -> Profile:
    """A Memory Decoder of the DAPT model's size and start: all of base model 0, the profile's
    β (KL + CE), on DAPT's exact schedule (steps, batches, learning rate). Next to DAPT (β = 0)
    it isolates what the KL term buys at equal capacity (the paper's decoder for GPT-2 small is
    GPT-2 small)."""
    return dataclasses.replace(profile, memdec_init="base:0", memdec_layers=None)


def dapt_init_profile(profile: Profile) -> Profile:
    """The official recipe's start: a full-size decoder initialised from the trained DAPT model
    (the official decoder continues a WikiText-fine-tuned GPT-2 small), then trained with the
    profile's β on the same schedule. DAPT is trained first if it must be."""
    dapt(profile, progress=False)
    folder = memdec_dir(dapt_profile(profile), "dapt") / "model"
    return dataclasses.replace(profile, memdec_init=str(folder), memdec_layers=None)


def dapt(profile: Profile, progress: bool = True) -> tuple[Any, dict]:
    """Train (or reuse) the DAPT baseline (domain-adaptive fine-tuning of base model 0)."""
    return memory_decoder(dapt_profile(profile), progress, name="dapt")


def memdec_logprobs(profile: Profile, split: str, name: str = "memdec",
                    text: str = "domain") -> np.ndarray:
    """Per-token log-probs of a trained decoder run (the Memory Decoder, DAPT, an ablation),
    saved under the run's recipe (the run is trained first if it must be)."""
    run = _run_recipe(profile, name)
    recipe = logprobs_recipe(profile, name, split, text, f"run:{run.key}")
    return _scored(profile, recipe, lambda: memory_decoder(profile, progress=False, name=name)[0],
                   lambda: corpus(profile, text)[split])


def dapt_logprobs(profile: Profile, split: str, text: str = "domain") -> np.ndarray:
    """Per-token log-probs of the DAPT baseline."""
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
    mem = _splits(lambda split, text: memdec_logprobs(profile, split, name, text), general)
    base_lp = _splits(lambda split, text: base_logprobs(profile, split, which, text), general)
    return decoder_rows(base_lp, mem, profile.alpha_grid, which)


# --- the MLP memory and the comparison of memories (lesson 07) --------------------------------

def mlp_memory_width(profile: Profile) -> int:
    """The MLP memory's inner width: `mlp_memory_width`, or (None) the width whose parameter
    count is closest to the Memory Decoder's (the decoder the profile describes, built, not
    trained)."""
    if profile.mlp_memory_width is not None:
        return profile.mlp_memory_width
    base_model = base(profile, 0)[0]
    decoder = count_parameters(build_memory_decoder(profile, base_model=init_base(profile)))
    return matched_width(decoder, key_dim(base_model), base_model.get_output_embeddings().weight.shape[0],
                         profile.mlp_memory_blocks)


def _mlp_recipe(profile: Profile) -> Recipe:
    return mlp_memory_recipe(profile, _targets_recipe(profile).key if profile.beta > 0 else None)


_MLP: dict[str, tuple[Any, dict]] = {}


def mlp_memory(profile: Profile, progress: bool = True, validate: bool = True) -> tuple[Any, dict]:
    """Train (or reuse) the MLP memory over base model 0's hidden states, on the same kNN
    targets, loss, schedule and steps as the Memory Decoder; returns (model, history), the model
    attached to base 0 (called on token ids it gives `.logits`). Memoised per session."""
    recipe = _mlp_recipe(profile)
    if recipe.key not in _MLP:
        out_dir = _folder(profile, recipe)
        base_model = base(profile, 0)[0]
        if is_finished(out_dir, recipe.config()):
            trained, history = load_run(out_dir)
            trained.attach(base_model)
        else:
            model = build_mlp_memory(base_model, mlp_memory_width(profile), profile.mlp_memory_blocks,
                                     profile.mlp_memory_layer, profile.seed, profile.mlp_memory_init)
            tokens = corpus(profile)
            validation = {} if not validate else {
                "val_tokens": tokens["validation"], "val_targets": validation_targets(profile),
                "val_base_logprobs": base_logprobs(profile, "validation")}
            trained, history = train_memory_decoder(
                profile, model, tokens["train"], targets(profile, progress), out_dir=out_dir,
                progress=progress, config=recipe.config(), desc="train MLP memory", **validation)
        _MLP[recipe.key] = trained.to(resolve_device(profile.device)).eval(), history
    return _MLP[recipe.key]


def mlp_memory_logprobs(profile: Profile, split: str, text: str = "domain") -> np.ndarray:
    """Per-token log-probs of the MLP memory alone on a split of the domain (or general) corpus,
    saved under its run's recipe (trained first if it must be)."""
    run = _mlp_recipe(profile)
    recipe = logprobs_recipe(profile, "mlp-memory", split, text, f"run:{run.key}")
    return _scored(profile, recipe, lambda: mlp_memory(profile, progress=False)[0],
                   lambda: corpus(profile, text)[split])


def mlp_memory_result(profile: Profile, general: bool = True) -> list[dict[str, Any]]:
    """The rows "MLP memory alone" and "base + MLP memory" (base 0, α chosen on validation)."""
    mlp = _splits(lambda split, text: mlp_memory_logprobs(profile, split, text), general)
    base_lp = _splits(lambda split, text: base_logprobs(profile, split, 0, text), general)
    return mlp_memory_rows(base_lp, mlp, profile.alpha_grid, 0)


FACT_DOMAIN = "bundled:facts"


def fact_domain(profile: Profile, **knobs: Any) -> Profile:
    """The profile on the generated fact domain (lesson 07): its knobs with `bundled:facts` as
    the domain corpus, each cap lowered to what the fact corpus holds (tiny: all 69,653
    training tokens, 16,000 per held-out split, so the general test text is the one the
    profile scores on its own domain), and the training schedule scaled by the ratio of the
    two training splits, so the fact domain gets as many epochs as the profile's own domain
    (tiny: 209 steps instead of 240; colab: ~40 instead of 600), plus `knobs`."""
    whole = dataclasses.replace(profile, domain_corpus=FACT_DOMAIN, max_train_tokens=None,
                                max_eval_tokens=None)
    sizes = {split: len(tokens) for split, tokens in corpus(whole).items()}
    held_out = min(sizes["validation"], sizes["test"])
    caps = {"max_train_tokens": _fitted(profile.max_train_tokens, sizes["train"]),
            "max_eval_tokens": _fitted(profile.max_eval_tokens, held_out)}
    trained = min(sizes["train"], caps["max_train_tokens"] or sizes["train"])
    schedule = same_epochs(profile, trained / len(corpus(profile)["train"]))
    return dataclasses.replace(whole, **{**caps, **schedule, **knobs})


def same_epochs(profile: Profile, scale: float) -> dict[str, int]:
    """train_steps, warmup_steps and eval_every times `scale` (a training split `scale` times
    the profile's own: as many epochs), each at least 1."""
    steps = max(1, round(profile.train_steps * scale))
    return {"train_steps": steps, "warmup_steps": max(1, round(profile.warmup_steps * scale)),
            "eval_every": max(1, min(steps, round(profile.eval_every * scale)))}


def _fitted(cap: int | None, size: int) -> int | None:
    """A cap no larger than what a split holds (None stays None: no cap)."""
    return None if cap is None else min(cap, size)


def domain_name(profile: Profile) -> str:
    """A short name of the profile's domain corpus: `facts` for bundled:facts, a folder's or a
    data set's last path part."""
    spec = profile.domain_corpus.partition(":")[2]
    return spec if profile.domain_corpus.startswith("bundled:") else Path(spec.split(":")[0]).name or spec


def fact_masks(profile: Profile, split: str = "test") -> dict[str, np.ndarray]:
    """"verbatim" / "reworded" / "unseen" -> bool over a split's per-token log-probs: the tokens
    of facts the (capped) training split states, restated in its sentences or in new words, or
    does not state (a domain that marks its facts: bundled:facts)."""
    return _fact_masks(profile, split)


def fact_example(profile: Profile, kind: str) -> dict[str, str]:
    """A test sentence stating a fact of `kind` (verbatim, reworded, unseen), its object in
    [brackets], with a training sentence stating the same fact where there is one."""
    return _fact_example(profile.domain_corpus, kind)


def _marks_facts(profile: Profile) -> bool:
    """Whether the domain corpus marks its facts (its records carry fact spans)."""
    try:
        fact_records(profile.domain_corpus)
    except ValueError:
        return False
    return True


def memory_comparison(profile: Profile, validate: bool = False) -> list[dict[str, Any]]:
    """Lesson 07's table on the profile's domain, base model 0, every weight chosen on
    validation: base, base + kNN-LM, DAPT, MemDec alone, base + MemDec, MLP memory alone,
    base + MLP memory; rows carry `domain` and, on a domain that marks its facts, the test
    perplexity on the tokens of verbatim, reworded and unseen facts. Runs still to train are
    trained without validation during training unless `validate` (the same weights, sooner)."""
    memory_decoder(profile, progress=False, validate=validate)
    memory_decoder(dapt_profile(profile), progress=False, name="dapt", validate=validate)
    mlp_memory(profile, progress=False, validate=validate)
    split_of = {"validation": ("validation", "domain"), "test": ("test", "domain"),
                "general": ("test", "general")}
    knn = {split: knn_logprobs(profile, s, 0, text) for split, (s, text) in split_of.items()}
    return comparison_table(
        _splits(lambda split, text: base_logprobs(profile, split, 0, text)), knn,
        _splits(lambda split, text: memdec_logprobs(profile, split, "memdec", text)),
        _splits(lambda split, text: mlp_memory_logprobs(profile, split, text)),
        _splits(lambda split, text: dapt_logprobs(profile, split, text)),
        alpha_grid=profile.alpha_grid, lambda_grid=profile.knn_lambda_grid,
        domain=domain_name(profile),
        fact_masks=fact_masks(profile, "test") if _marks_facts(profile) else None)


def memory_comparisons(profiles: list[Profile]) -> list[dict[str, Any]]:
    """memory_comparison of every profile (e.g. one per domain), their rows in one table.
    (Training the runs two at a time in one-thread processes was measured: no faster on 2
    cores for these sizes, 121 s against 125 s.)"""
    return [row for profile in profiles for row in memory_comparison(profile)]


def storage(profile: Profile) -> dict[str, int]:
    """What each memory keeps, in bytes and parameters: the datastore (float16 keys + int32
    next tokens of base 0) and the trained Memory Decoder's and MLP memory's parameters."""
    rows, dim = _datastore_shape(profile, 0)
    decoder = count_parameters(memory_decoder(profile, progress=False)[0])
    mlp = count_parameters(mlp_memory(profile, progress=False)[0])
    return {"datastore_entries": rows, "datastore_bytes": rows * (2 * dim + 4),
            "memdec_parameters": decoder, "memdec_bytes_fp16": 2 * decoder,
            "mlp_memory_parameters": mlp, "mlp_memory_bytes_fp16": 2 * mlp}


def decoding_cost(profile: Profile, tokens: int = 2048, k: int | None = None,
                  repeats: int = 3) -> dict[str, float]:
    """Milliseconds per token to score the first `tokens` test tokens (the fastest of `repeats`)
    with base 0 alone and with each memory beside it: base + the Memory Decoder's forward pass,
    base + the MLP memory's MLP over the hidden state the base computes anyway, base + the
    kNN-LM's exact search of the datastore for `k` neighbours (default: the profile's k) per
    token (the key is the base's hidden state too). Mixing costs the same for all three."""
    ids = corpus(profile)["test"][:tokens + 1]
    spec, base_model = WindowSpec.of(profile), base(profile, 0)[0]
    mlp_model = mlp_memory(profile, progress=False)[0]
    decoder = memory_decoder(profile, progress=False)[0]
    hidden = [read_hidden(base_model, batch, mlp_model.config.layer)
              for batch, _, _ in window_batches(ids, spec.context_length, spec.stride, spec.batch_size)]
    keys, _ = keys_of(base_model, ids, spec, key_layer=profile.key_layer)
    idx = index(profile, 0, progress=False)

    def mlp_part() -> None:
        with torch.inference_mode():
            for h in hidden:
                torch.log_softmax(mlp_model.memory_logits(h), -1)

    per_token = {name: 1000 * fastest(run, repeats) / (len(ids) - 1) for name, run in {
        "base": lambda: score_tokens(base_model, ids, spec),
        "MemDec": lambda: score_tokens(decoder, ids, spec), "MLP memory": mlp_part,
        "kNN search": lambda: search(idx, keys, k or profile.k)}.items()}
    return {"base": per_token["base"],
            **{f"base + {name}": per_token["base"] + per_token[part] for name, part in
               (("MemDec", "MemDec"), ("MLP memory", "MLP memory"), ("kNN-LM", "kNN search"))}}


# --- short ablation runs -----------------------------------------------------------------------

def ablation_profile(profile: Profile, **knobs: Any) -> Profile:
    """The profile of a short ablation run: the profile's ablation schedule plus `knobs` (a run
    on another training corpus gets its own stages by their recipes)."""
    steps = profile.ablation_steps
    schedule = dict(train_steps=steps, train_batch_size=profile.ablation_batch_size,
                    warmup_steps=max(1, steps // 8), eval_every=steps)
    return dataclasses.replace(profile, **{**schedule, **knobs})


def ablation_settings(profile: Profile, **overrides: Any) -> AblationSettings:
    """Lesson 06's variants (target k's and τ's, datastore sizes, kNN-LM grid), derived from the
    profile and the sizes of its capped splits; `overrides` (None = derived) replace them."""
    tokens = corpus(profile)
    return derive_ablation_settings(profile, len(tokens["train"]), len(tokens["validation"]),
                                    **overrides)


ABLATION = "ablation"  # the label of every short run's folder: ablation-<its key>


def short_run_name(variant: Profile) -> str:
    """`ablation-<the start of the run's key>`: the folder of a short run (knobs that only say
    how runs are scheduled are not in its recipe, so changing them reuses every run)."""
    return _run_recipe(variant, ABLATION).folder


def short_run(profile: Profile, **knobs: Any) -> dict[str, Any]:
    """Train (or reuse) a short ablation run with `knobs` changed; its validation/test
    perplexities alone and mixed with base 0 (α chosen on validation), and its KL to the kNN
    targets over the last training steps. Runs are found by their recipes, so the same setting
    asked for twice (e.g. β = 0.5 and the reference of another ablation) trains once."""
    variant = ablation_profile(profile, **knobs)
    model, history = memory_decoder(variant, progress=False, name=ABLATION, validate=False)
    alone, mixed = decoder_result(variant, ABLATION, general=False)
    last = history["steps"][-LAST_STEPS:]
    return {"run": short_run_name(variant), "knobs": knobs, "params": count_parameters(model),
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
        run_in_workers(_short_run_job, [(profile, knobs) for knobs in todo], workers,
                       desc=f"training {len(todo)} short runs, {workers} at a time")
    return {label: short_run(profile, **knobs)
            for label, knobs in progress_bar(settings.items(), desc="short runs", leave=False)}


def _short_run_done(profile: Profile, knobs: dict[str, Any]) -> bool:
    """Whether the short run of `knobs` has finished training (its manifest is there)."""
    variant = ablation_profile(profile, **knobs)
    recipe = _run_recipe(variant, ABLATION)
    return is_finished(_folder(variant, recipe), recipe.config())


def _short_run_job(profile: Profile, knobs: dict[str, Any]) -> None:
    short_run(profile, **knobs)


# --- the results table -------------------------------------------------------------------------

def main_seeds(profile: Profile) -> tuple[int, ...]:
    """The training seeds of the main table's trained rows (MemDec, DAPT): `profile.seed` and
    the next `profile.main_seeds - 1` (seed `profile.seed` is lesson 03's run)."""
    return tuple(range(profile.seed, profile.seed + profile.main_seeds))


def with_seed(profile: Profile, seed: int) -> Profile:
    """The profile with another training seed (its runs get their own recipes)."""
    return profile if seed == profile.seed else dataclasses.replace(profile, seed=seed)


MAIN_RUNS = ("memdec", "dapt")


def main_runs(profile: Profile, workers: int | None = None,
              kinds: tuple[str, ...] = MAIN_RUNS) -> None:
    """Train the main table's runs that are missing: the Memory Decoder and DAPT (`kinds`: one
    or both of "memdec", "dapt") for every seed of `main_seeds`, so a lesson can train its own
    share. On a CPU they go `workers` at a time (default profile.ablation_workers) in processes
    of one thread each, as short_runs does; the seeds after the first skip the validation
    evaluations (they change no weight)."""
    unknown = sorted(set(kinds) - set(MAIN_RUNS))
    if unknown or not kinds:
        raise ValueError(f"main_runs kinds={kinds!r}: use one or more of {MAIN_RUNS}")
    workers = profile.ablation_workers if workers is None else workers
    todo = [(with_seed(profile, seed), kind, seed == profile.seed)
            for seed in main_seeds(profile) for kind in kinds
            if not _main_run_done(with_seed(profile, seed), kind)]
    if workers > 1 and len(todo) > 1 and resolve_device(profile.device).type == "cpu":
        run_in_workers(_main_run_job, todo, workers,
                       desc=f"training {len(todo)} runs of the main table, {workers} at a time")
    else:
        for job in todo:
            _main_run_job(*job)


def full_runs(variants: dict[Any, Profile], workers: int | None = None
              ) -> dict[Any, tuple[Any, dict]]:
    """label -> (model, history) of a Memory Decoder trained on each variant's full schedule
    (e.g. `same_size_profile(profile)`, or `dataclasses.replace(profile, target_base=1)`). The
    missing ones train first, `workers` at a time (default: the first variant's
    ablation_workers) in one-thread processes on a CPU, without validation evaluations."""
    if not variants:
        raise ValueError("full_runs needs at least one variant profile")
    first = next(iter(variants.values()))
    workers = first.ablation_workers if workers is None else workers
    todo = [(v, "memdec", False) for v in variants.values() if not _main_run_done(v, "memdec")]
    if workers > 1 and len(todo) > 1 and resolve_device(first.device).type == "cpu":
        run_in_workers(_main_run_job, todo, workers,
                       desc=f"training {len(todo)} full-length runs, {workers} at a time")
    else:
        for job in todo:
            _main_run_job(*job)
    return {label: memory_decoder(v, progress=False, validate=False)
            for label, v in variants.items()}


def teacher_profile(profile: Profile, which: int = 1) -> Profile:
    """The course's decoder taught by base model `which`'s datastore (its kNN targets)."""
    return dataclasses.replace(profile, target_base=which)


def full_length_runs(profile: Profile) -> dict[str, Profile]:
    """Train (or find) lesson 06's two full-schedule runs, side by side (full_runs): the
    same-size decoder and, with a second base model, the decoder taught by base 1; their
    profiles by label. Nothing when `profile.full_length_ablations` is false. Lesson 05 calls it,
    so that lesson 06 stays within its time (a run of 06 alone trains them there)."""
    if not profile.full_length_ablations:
        return {}
    runs = {"same size": same_size_profile(profile)}
    if len(profile.base_models) > 1:
        runs["taught by base 1"] = teacher_profile(profile)
    full_runs(runs)
    return runs


def full_length_comparison(profile: Profile) -> dict[str, dict[str, dict[str, Any]]]:
    """Lesson 06's full-schedule runs next to the main ones, at seed `profile.seed`: model ->
    {"alone": row, "base 0": row, "base 1": row} for "main" (the course's decoder), "same size"
    (same_size_profile), "DAPT" (alone and with base 0) and "taught by base 1"
    (teacher_profile); the two new runs train first if they must (full_length_runs). Empty when
    `profile.full_length_ablations` is false (the profile's budget has no room for them)."""
    runs = full_length_runs(profile)
    if not runs:
        return {}
    bases = range(min(2, len(profile.base_models)))
    out = {}
    for name, variant in {"main": profile, **runs}.items():
        rows = [decoder_result(variant, "memdec", which) for which in bases]
        out[name] = {"alone": rows[0][0], **{f"base {w}": r[1] for w, r in zip(bases, rows)}}
    alone, mixed = decoder_result(dapt_profile(profile), "dapt", 0)
    out["DAPT"] = {"alone": alone, "base 0": mixed}
    return out


def _main_run_profile(profile: Profile, kind: str) -> Profile:
    return dapt_profile(profile) if kind == "dapt" else profile


def _main_run_done(profile: Profile, kind: str) -> bool:
    """Whether the main table's run `kind` ("memdec" or "dapt") of this profile is trained."""
    variant = _main_run_profile(profile, kind)
    recipe = _run_recipe(variant, kind)
    return is_finished(_folder(variant, recipe), recipe.config())


def _main_run_job(profile: Profile, kind: str, validate: bool) -> None:
    memory_decoder(_main_run_profile(profile, kind), progress=False, name=kind, validate=validate)


def results(profile: Profile) -> list[dict[str, Any]]:
    """The course's results table (both bases; every weight chosen on validation): base,
    base + kNN-LM, DAPT, base + DAPT, MemDec alone, base + MemDec. The trained rows are means
    over the training seeds of `main_seeds` (one run each; missing ones are trained first,
    see main_runs), with `seeds` and the spread `test_ppl_std` (None with one seed)."""
    bases = {w: _splits(lambda split, text, w=w: base_logprobs(profile, split, w, text))
             for w in range(len(profile.base_models))}
    knn = {w: {split: knn_logprobs(profile, s, w, text)
               for split, (s, text) in {"validation": ("validation", "domain"),
                                         "test": ("test", "domain"),
                                         "general": ("test", "general")}.items()}
           for w in bases}
    seeds = main_seeds(profile)
    if len(seeds) > 1:
        main_runs(profile)
    runs = [with_seed(profile, seed) for seed in seeds]
    mem = [_splits(lambda split, text, p=p: memdec_logprobs(p, split, "memdec", text)) for p in runs]
    dapt_lp = [_splits(lambda split, text, p=p: dapt_logprobs(p, split, text)) for p in runs]
    return results_table(bases, knn, mem, dapt_lp, alpha_grid=profile.alpha_grid,
                         lambda_grid=profile.knn_lambda_grid, seeds=seeds)


def describe_model(model: Any) -> str:
    c = model.config
    return (f"{count_parameters(model) / 1e6:.2f}M parameters, {c.n_layer} layers, "
            f"width {c.n_embd}, vocabulary {c.vocab_size}")
