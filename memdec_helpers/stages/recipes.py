"""Recipes: what a stage's bytes depend on, known before anything is loaded or run.

A stage's key is a hash of its own knobs and the keys of the stages (or inputs) it reads, so it
is computed from the profile alone: no artifact is opened, no model loaded. The key names the
stage's folder (`<label>-<first 8 hex digits>`), so two recipes never share, or delete, a folder;
and it is what the folder's manifest records, so a finished stage is recognised by one small
JSON read.

Inputs that are not stages have identities of their own: a bundled corpus, tokenizer or model
by the hash of its files in the package; a folder of your texts by its files' names, sizes and
modification times; a hub model or data set by its name and revision.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..core.hashing import config_hash
from ..profiles import Profile, parse_memdec_init
from ..runtime.models import base_model_name, resolve_model_path
from .sources import bundled_corpus_path, files_fingerprint

CONTENT_HASH_LIMIT = 64 * 2**20  # files up to this size are identified by content, larger ones
# by name, size and modification time (hashing GBs of weights to name them is not cheap)
_FILE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> hash, per process


@dataclass(frozen=True)
class Recipe:
    """A stage's identity: its kind, its own knobs and the keys of what it reads."""

    stage: str  # the kind of stage: "corpus", "datastore", "targets", ...
    label: str  # a readable folder name, e.g. "datastore-base1"
    knobs: dict[str, Any] = field(default_factory=dict)  # JSON-able values
    upstream: dict[str, str] = field(default_factory=dict)  # name -> key of a stage or input

    def config(self) -> dict[str, Any]:
        """What the stage's manifest records (its hash is the key), as JSON reads it back."""
        return json.loads(json.dumps({"stage": self.stage, "knobs": self.knobs,
                                      "upstream": self.upstream}, sort_keys=True))

    @cached_property
    def key(self) -> str:
        return config_hash(self.config())

    @property
    def folder(self) -> str:
        """The stage's folder name: its label and the start of its key."""
        return f"{self.label}-{self.key[:8]}"


def file_identity(path: Path) -> str:
    """A file's identity: its content hash up to CONTENT_HASH_LIMIT bytes, else its name, size
    and modification time; memoised per process for an unchanged file."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha256()
        if stat.st_size <= CONTENT_HASH_LIMIT:
            digest.update(path.read_bytes())
        else:
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        _FILE_HASHES[memo] = digest.hexdigest()[:16]
    return _FILE_HASHES[memo]


def folder_identity(folder: Path, suffixes: tuple[str, ...] = (".json", ".safetensors", ".bin",
                                                               ".model", ".txt", ".gguf")) -> str:
    """The identity of a model or tokenizer folder: its files' identities, in name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes)
    return config_hash({p.name: file_identity(p) for p in files})


# --- inputs that are not stages ------------------------------------------------------------

def source_identity(source: str) -> str:
    """A corpus source's identity: the bundled files' hashes, your files' names, sizes and
    times (an edited, added or removed file changes it), or a hub data set's spec."""
    kind, _, spec = source.partition(":")
    if kind == "bundled":
        return config_hash({name: file_identity(bundled_corpus_path(name.strip()))
                            for name in spec.split("+")})
    if kind == "files":
        return files_fingerprint(source)
    return source


def pretrained_identity(name: str, revision: str | None = None) -> str:
    """A model's or tokenizer's identity: a bundled or local folder by its files, a hub id by its
    name and revision."""
    path = Path(resolve_model_path(name))
    if path.is_dir():
        return f"{name}@{folder_identity(path)}"
    return f"{name}@{revision or 'main'}"


def base_model_identity(profile: Profile, which: int = 0) -> str:
    """The identity of the profile's base model `which`."""
    return pretrained_identity(base_model_name(profile, which), profile.base_model_revision)


def window_knobs(profile: Profile) -> dict[str, Any]:
    """The knobs every forward pass's numbers depend on (not the batch size: it changes no
    number, only how many windows run at once)."""
    return profile.subset("context_length", "stride", "dtype")


def _suffix(which: int) -> str:
    """Label suffix of base model `which` (base 0 keeps the plain names)."""
    return "" if which == 0 else f"-base{which}"


# --- the stages ----------------------------------------------------------------------------

def corpus_recipe(profile: Profile, which: str = "domain") -> Recipe:
    """train/validation/test token streams of the domain (or general) corpus."""
    source = profile.domain_corpus if which == "domain" else profile.general_corpus
    knobs = {"source": source, "format": 3,
             **profile.subset("validation_fraction", "test_fraction", "split_seed",
                              "max_train_tokens", "max_eval_tokens")}
    return Recipe("corpus", f"corpus-{which}", knobs,
                  {"content": source_identity(source),
                   "tokenizer": pretrained_identity(profile.tokenizer)})


def datastore_recipe(profile: Profile, which: int = 0) -> Recipe:
    """Base model `which`'s keys over the domain training split."""
    return Recipe("datastore", f"datastore{_suffix(which)}",
                  {**profile.subset("key_layer"), **window_knobs(profile)},
                  {"corpus": corpus_recipe(profile).key, "model": base_model_identity(profile, which)})


def queries_identity(profile: Profile, split: str, which: int = 0, text: str = "domain") -> str:
    """The identity of a held-out split's query keys (base model `which`, in memory only)."""
    return config_hash({"corpus": corpus_recipe(profile, text).key, "split": split,
                        "model": base_model_identity(profile, which),
                        **profile.subset("key_layer"), **window_knobs(profile)})


def index_recipe(profile: Profile, datastore_key: str, which: int = 0) -> Recipe:
    """The faiss index file over a datastore (approximate search: IVF, IVF-PQ)."""
    knobs: dict[str, Any] = {"index_type": profile.index_type}
    if profile.index_type != "flat":
        knobs.update(profile.subset("ivf_nlist", "index_train_size", "seed"))
    if profile.index_type == "ivfpq":
        knobs.update(profile.subset("pq_code_bytes"))
    return Recipe("index", f"index{_suffix(which)}", knobs, {"datastore": datastore_key})


def search_identity(profile: Profile, datastore_key: str, exact: bool, which: int = 0) -> str:
    """What a search's results depend on: exact search (faiss flat or torch, on any device) is
    "exact over the datastore"; an approximate index is its recipe key plus nprobe."""
    if exact:
        return f"exact:{datastore_key}"
    return f"{index_recipe(profile, datastore_key, which).key}:nprobe={profile.nprobe}"


def targets_label(profile: Profile) -> str:
    """The knobs that shape the kNN targets, as a readable label (`-base<i>` when another base
    model than 0 makes them; the datastore's key in the recipe is what tells them apart)."""
    return (f"k{profile.k}-tau{profile.knn_temperature:g}-m{profile.target_top_m}"
            f"{_suffix(profile.target_base)}")


def targets_recipe(profile: Profile, datastore_key: str, search_id: str) -> Recipe:
    """Sparse top-m kNN targets of every datastore position (self excluded by position)."""
    return Recipe("targets", f"targets-{targets_label(profile)}",
                  profile.subset("k", "knn_temperature", "target_top_m"),
                  {"datastore": datastore_key, "search": search_id})


def neighbours_recipe(datastore_key: str, search_id: str, k: int) -> Recipe:
    """The k nearest rows of every datastore position (self included), searched once."""
    return Recipe("neighbours", f"neighbours-k{k}", {"k": int(k)},
                  {"datastore": datastore_key, "search": search_id})


def eval_targets_recipe(profile: Profile, split: str, queries_id: str, datastore_key: str,
                        search_id: str) -> Recipe:
    """kNN targets of a held-out split's positions (no self-exclusion: not datastore rows)."""
    return Recipe("targets", f"targets-{split}-{targets_label(profile)}",
                  profile.subset("k", "knn_temperature", "target_top_m"),
                  {"datastore": datastore_key, "search": search_id, "queries": queries_id})


def logprobs_recipe(profile: Profile, name: str, split: str, text: str, model_id: str) -> Recipe:
    """A model's per-token log-probs on a split of the domain (or general) corpus."""
    label = name + ("" if text == "domain" else f"-{text}") + f"-{split}"
    return Recipe("logprobs", label, {"split": split, **window_knobs(profile)},
                  {"corpus": corpus_recipe(profile, text).key, "model": model_id})


def knn_logprobs_recipe(profile: Profile, split: str, which: int, text: str, datastore_key: str,
                        search_id: str, grid: list[tuple[int, float]]) -> Recipe:
    """kNN-LM's log p_kNN(next token) on a split, for every (k, tau) of the grid."""
    label = f"knn{which}" + ("" if text == "domain" else f"-{text}") + f"-{split}"
    return Recipe("knn-logprobs", label, {"grid": [[int(k), float(t)] for k, t in grid]},
                  {"datastore": datastore_key, "search": search_id,
                   "queries": queries_identity(profile, split, which, text)})


TRAIN_KNOBS = ("beta", "learning_rate", "weight_decay", "warmup_steps", "train_steps",
               "train_batch_size", "grad_accum", "grad_clip", "eval_every", "seed")


def init_identity(profile: Profile) -> str:
    """The identity of the decoder a run starts from (memdec_init and the knobs that shape it)."""
    kind, where = parse_memdec_init(profile.memdec_init)
    if kind == "base":
        return config_hash({"base": base_model_identity(profile, where),
                            "layers": profile.memdec_layers})
    if kind == "scratch":
        return config_hash({"scratch": profile.subset("memdec_layers", "memdec_dim", "memdec_heads",
                                                      "seed", "context_length"),
                            "vocabulary": base_model_identity(profile, 0)})
    return f"folder@{folder_identity(Path(where))}"


def run_recipe(profile: Profile, name: str, targets_key: str | None) -> Recipe:
    """A training run (the Memory Decoder, DAPT, an ablation): its knobs, its training tokens,
    the decoder it starts from and, when the KL term has weight (beta > 0), its kNN targets."""
    upstream = {"corpus": corpus_recipe(profile).key, "init": init_identity(profile)}
    if profile.beta > 0:
        if targets_key is None:
            raise ValueError(f"run {name!r} has beta={profile.beta} > 0: it needs its kNN targets")
        upstream["targets"] = targets_key
    return Recipe("run", name, {**profile.subset(*TRAIN_KNOBS), **window_knobs(profile)}, upstream)


MLP_MEMORY_KNOBS = ("mlp_memory_layer", "mlp_memory_blocks", "mlp_memory_width", "mlp_memory_init")


def mlp_memory_recipe(profile: Profile, targets_key: str | None) -> Recipe:
    """A trained MLP memory over base model 0: its shape, the training knobs, its training
    tokens, the base whose hidden states it reads, the decoder whose parameter count it matches
    (when its width is not given) and, when the KL term has weight, its kNN targets."""
    upstream = {"corpus": corpus_recipe(profile).key, "base": base_model_identity(profile, 0)}
    if profile.mlp_memory_width is None:
        upstream["matched_to"] = init_identity(profile)
    if profile.beta > 0:
        if targets_key is None:
            raise ValueError(f"the MLP memory has beta={profile.beta} > 0: it needs its kNN targets")
        upstream["targets"] = targets_key
    return Recipe("run", "mlp-memory",
                  {**profile.subset(*MLP_MEMORY_KNOBS, *TRAIN_KNOBS), **window_knobs(profile)},
                  upstream)
