"""Profiles: every knob of the course in one frozen, validated dataclass, loaded from a YAML file.

A profile is data, not code: `tiny` (offline, CPU, the CI profile), `cpu`, `colab` and `gpu`
live as YAML files next to this module. `load_profile("auto")` picks one for the machine.

A `Profile` is checked when it is made (`load_profile`, `Profile(...)` or
`dataclasses.replace(profile, **knobs)`): every knob gets its declared type (YAML strings such as
`1e-3` become numbers, lists become tuples) and its allowed range, so a bad knob fails at once,
by name, before any stage runs. Frozen and hashable, a profile can key a cache whole.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml


PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILE_NAMES = ("tiny", "cpu", "colab", "gpu")
KEY_LAYERS = ("mlp_input", "final_hidden")
INDEX_TYPES = ("flat", "ivf_flat", "ivfpq")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SOURCE_KINDS = ("bundled", "files", "hub")  # corpus sources: <kind>:<spec> (sources.py)


@dataclass(frozen=True)
class Profile:
    """Every knob the course uses. Defaults are the tiny world's; YAML files override them."""

    name: str = "tiny"
    # --- data -------------------------------------------------------------------------
    # "bundled:<name>[+<name>]", "files:<folder or glob>" or "hub:<data set>[:<config>[:<column>]]"
    domain_corpus: str = "bundled:kjv-ot"
    general_corpus: str = "bundled:shakespeare+kjv-nt"  # what the tiny base models were trained on
    validation_fraction: float = 0.05  # share of documents (by tokens) held out, per split
    test_fraction: float = 0.05
    split_seed: int = 0
    max_train_tokens: int | None = None  # cap on the datastore corpus (None: all of it)
    max_eval_tokens: int | None = None  # cap on validation and test each
    # --- models -----------------------------------------------------------------------
    tokenizer: str = "bundled:tiny-bpe"
    base_models: tuple[str, ...] = ("bundled:tiny-gpt2-small", "bundled:tiny-gpt2-medium")
    base_model_revision: str | None = None
    # --- windows ----------------------------------------------------------------------
    context_length: int = 128
    stride: int = 64
    batch_size: int = 32  # forward passes (keys, log-probs)
    # --- datastore and search ---------------------------------------------------------
    key_layer: str = "mlp_input"  # "mlp_input" (paper) or "final_hidden"
    index_type: str = "flat"  # "flat" | "ivf_flat" | "ivfpq"
    ivf_nlist: int = 256
    pq_code_bytes: int = 64
    nprobe: int = 32
    index_train_size: int = 100_000
    search_device: str = "auto"  # "auto": exact torch search on a GPU the keys fit; "cpu": faiss
    k: int = 64
    knn_temperature: float = 10.0
    knn_lambda_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    knn_k_grid: tuple[int, ...] = (16, 64, 256)  # kNN-LM's k, chosen on validation with λ and τ
    knn_temperature_grid: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    # both grids always hold the profile's own k and knn_temperature (added where missing, sorted,
    # each value once): the lessons read kNN-LM at them, besides the best (k, τ) on validation
    target_top_m: int = 32
    target_base: int = 0  # the base model whose datastore makes the decoder's kNN targets
    neighbour_cache_k: int | None = None  # search every position once for this many neighbours;
    # the targets of every smaller k and every τ then need no search (None: search each time)
    # --- Memory Decoder ---------------------------------------------------------------
    memdec_init: str = "base:0"  # "scratch", "base:<i>" or a save_pretrained folder
    memdec_layers: int | None = None  # blocks; with base:<i> the first ones of it (None: all)
    memdec_dim: int = 128
    memdec_heads: int = 4
    beta: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    train_steps: int = 400
    train_batch_size: int = 16
    micro_batch_size: int | None = None  # sequences per forward pass (None: what memory allows)
    grad_accum: int = 1
    grad_clip: float = 1.0
    eval_every: int = 100
    main_seeds: int = 1  # seeds of the main table's decoder and DAPT rows (mean ± std)
    ablation_steps: int = 60  # optimizer steps of each short ablation run (lesson 06)
    ablation_batch_size: int = 16
    ablation_seeds: int = 3  # seeds per setting where an ablation reports mean ± std
    ablation_workers: int = 1  # short runs trained at once in one-thread processes (CPU only)
    full_length_ablations: bool = True  # lesson 06 trains the same-size decoder and the decoder
    # taught by base 1 on the main schedule (false where the budget has no room for them)
    alpha_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    # --- MLP memory (lesson 07): an MLP over base 0's hidden state, trained like the decoder --
    mlp_memory_layer: int | None = None  # the block whose MLP input it reads (None: ~70% up)
    mlp_memory_blocks: int = 2  # residual MLP blocks
    mlp_memory_width: int | None = None  # inner width (None: the decoder's parameter count, matched)
    mlp_memory_init: str = "base"  # "base": output layer copied from base 0; "scratch": random
    # --- run --------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16" (autocast on CUDA)
    artifacts_dir: str = "artifacts"
    # --- budget: what the profile promises (the plan is checked against it) --------------
    budget_minutes: float | None = None
    budget_gpu_gb: float | None = None
    budget_host_gb: float | None = None
    budget_disk_gb: float | None = None

    def __post_init__(self) -> None:
        """Coerce every knob to its declared type, check ranges (ValueError naming it), then
        put k and knn_temperature into their grids."""
        for knob in dataclasses.fields(self):
            object.__setattr__(self, knob.name, coerce(knob.name, getattr(self, knob.name),
                                                      str(knob.type)))
        validate_profile(self)
        for grid, value in (("knn_k_grid", self.k), ("knn_temperature_grid", self.knn_temperature)):
            object.__setattr__(self, grid, with_value(getattr(self, grid), value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def budget(self) -> dict[str, float]:
        """The profile's budget: minutes, gpu_gb, host_gb, disk_gb (those it sets)."""
        return {k: getattr(self, f"budget_{k}") for k in ("minutes", "gpu_gb", "host_gb", "disk_gb")
                if getattr(self, f"budget_{k}") is not None}

    def subset(self, *names: str) -> dict[str, Any]:
        """The knobs `names` as a dict: what a stage's manifest hashes."""
        return {n: getattr(self, n) for n in names}


KNOBS = {f.name: f for f in dataclasses.fields(Profile)}


def with_value(grid: tuple, value: Any) -> tuple:
    """`grid` with `value` in it, sorted, each value once: the grid of a (k, τ) search that the
    lessons also read at the profile's own k and τ (colab's k 1024 was outside its grid)."""
    return tuple(sorted({*grid, value}))


def is_plain_name(name: Any) -> bool:
    """A non-empty folder name with no path separator and no leading dot (so not '.' or '..')."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".")
            and not any(c in name for c in "/\\\0"))


# ----------------------------------------------------------------------------- types
def _bad(knob: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"profile knob {knob}={value!r} is invalid: {allowed}")


def _number(knob: str, value: Any, kind: type) -> int | float:
    """`value` as an int or a finite float; numeric strings (YAML reads `1e-3` as one) accepted."""
    what = "an integer" if kind is int else "a number"
    parsed = _parse_number(value) if isinstance(value, str) else value
    if isinstance(parsed, bool) or not isinstance(parsed, (int, float)):
        raise _bad(knob, value, f"must be {what}")
    if not math.isfinite(parsed):
        raise _bad(knob, value, f"must be {what}, finite (not NaN or inf)")
    if kind is int:
        if parsed != int(parsed):
            raise _bad(knob, value, "must be a whole number")
        return int(parsed)
    return float(parsed)


def _parse_number(text: str) -> int | float | str:
    """An int or float read from `text`; `text` itself when it is not a number."""
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return text


def _text(knob: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(knob, value, "must be a non-empty string")
    return value


def _sequence(knob: str, value: Any, item: Callable[[str, Any], Any]) -> tuple:
    """A list or tuple (YAML list, override) as a non-empty tuple of checked items."""
    if not isinstance(value, (list, tuple)) or not value:
        raise _bad(knob, value, "must be a non-empty list, e.g. [a, b]")
    return tuple(item(f"{knob}[{i}]", v) for i, v in enumerate(value))


def _flag(knob: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(knob, value, "must be true or false")
    return value


SCALARS: dict[str, Callable[[str, Any], Any]] = {
    "bool": _flag,
    "int": lambda knob, v: _number(knob, v, int),
    "float": lambda knob, v: _number(knob, v, float),
    "str": _text,
}


def coerce(knob: str, value: Any, annotation: str) -> Any:
    """`value` converted to the knob's annotated type: int, float, str, `X | None` or
    `tuple[X, ...]`; anything else is a ValueError naming the knob."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None:
        if optional:
            return None
        raise _bad(knob, value, f"must not be empty (a {base})")
    tuple_of = re.fullmatch(r"tuple\[(\w+), \.\.\.\]", base)
    if tuple_of:
        return _sequence(knob, value, SCALARS[tuple_of.group(1)])
    return SCALARS[base](knob, value)


def _check_annotations() -> None:
    """Every knob must be annotated with a type coerce() knows (a new knob fails at import)."""
    for knob in KNOBS.values():
        kind = re.sub(r"^tuple\[(\w+), \.\.\.\]$", r"\1", str(knob.type).removesuffix(" | None"))
        if kind not in SCALARS:
            raise TypeError(f"Profile.{knob.name}: unsupported annotation {knob.type}; use "
                            "int, float, str, bool, `X | None` or `tuple[X, ...]` (a list knob "
                            "is a tuple, so that a frozen profile stays hashable)")


_check_annotations()


# ----------------------------------------------------------------------------- ranges
def parse_memdec_init(value: str) -> tuple[str, int | str | None]:
    """("scratch", None), ("base", i) or ("folder", path): the one reading of memdec_init."""
    if value == "scratch":
        return "scratch", None
    if value.startswith("base:"):
        index = value.split(":", 1)[1]
        if not index.isdigit():
            raise _bad("memdec_init", value, "use 'base:<i>' with i an integer index into "
                       "base_models, 'scratch' or a save_pretrained folder")
        return "base", int(index)
    return "folder", value


Rule = tuple[Callable[[Any], bool], str]  # (is the value allowed?, what is allowed)
AT_LEAST_1: Rule = (lambda v: v >= 1, "must be >= 1")
POSITIVE: Rule = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "must be >= 0")
UNIT: Rule = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
SEED: Rule = (lambda v: 0 <= v < 2**31, "must be in [0, 2**31) (numpy and torch seeds; a run "
              "adds small offsets to it)")
CAP: Rule = (lambda v: v >= 1, "must be >= 1, or null for no cap")
FRACTION: Rule = (lambda v: 0 < v < 1, "must be in (0, 1)")


def each(rule: Rule) -> Rule:
    """The rule applied to every value of a tuple knob."""
    ok, allowed = rule
    return (lambda values: all(ok(v) for v in values), f"every value {allowed}")


def one_of(options: tuple[str, ...]) -> Rule:
    return (lambda v: v in options, f"use one of {options}")


RANGES: dict[str, Rule] = {
    "name": (is_plain_name, "must be a plain folder name (no '/', '\\' or leading dot), e.g. 'tiny'"),
    **dict.fromkeys(("validation_fraction", "test_fraction"), FRACTION),
    **dict.fromkeys(("max_train_tokens", "max_eval_tokens"), CAP),
    **dict.fromkeys(("weight_decay", "warmup_steps", "target_base", "mlp_memory_layer"),
                    NON_NEGATIVE),
    **dict.fromkeys(("split_seed", "seed"), SEED),
    **dict.fromkeys(("stride", "batch_size", "ivf_nlist", "pq_code_bytes", "nprobe",
                     "index_train_size", "k", "target_top_m", "memdec_layers", "memdec_dim",
                     "memdec_heads", "train_steps", "train_batch_size", "grad_accum",
                     "eval_every", "ablation_steps", "ablation_batch_size", "ablation_seeds",
                     "main_seeds", "ablation_workers", "neighbour_cache_k", "micro_batch_size",
                     "mlp_memory_blocks", "mlp_memory_width"),
                    AT_LEAST_1),
    **dict.fromkeys(("knn_temperature", "learning_rate", "grad_clip", "budget_minutes",
                     "budget_gpu_gb", "budget_host_gb", "budget_disk_gb"), POSITIVE),
    **dict.fromkeys(("domain_corpus", "general_corpus"), (
        lambda v: v.partition(":")[0] in SOURCE_KINDS and bool(v.partition(":")[2].strip()),
        "use bundled:<name>[+<name>], files:<folder or glob> or "
        "hub:<data set>[:<config>[:<column>]]")),
    **dict.fromkeys(("knn_lambda_grid", "alpha_grid"), each(UNIT)),
    "context_length": (lambda v: v >= 2, "must be >= 2"),
    "knn_temperature_grid": each(POSITIVE),
    "knn_k_grid": each(AT_LEAST_1),
    "beta": UNIT,
    "full_length_ablations": (lambda v: isinstance(v, bool), "must be true or false"),
    "mlp_memory_init": one_of(("base", "scratch")),
    "key_layer": one_of(KEY_LAYERS),
    "index_type": one_of(INDEX_TYPES),
    "device": one_of(DEVICES),
    "search_device": one_of(DEVICES),
    "dtype": one_of(DTYPES),
}


def validate_profile(p: Profile) -> None:
    """Each knob's range (None, where a knob may be None, is always allowed), then the rules
    that tie knobs together (ValueError naming the knob)."""
    for knob, (ok, allowed) in RANGES.items():
        value = getattr(p, knob)
        if value is not None and not ok(value):
            raise _bad(knob, value, allowed)
    related = {
        "stride": (p.stride <= p.context_length, f"must be in [1, context_length={p.context_length}]"),
        "target_top_m": (p.target_top_m <= p.k, f"must be in [1, k={p.k}]"),
        "test_fraction": (p.validation_fraction + p.test_fraction < 1,
                          "validation_fraction + test_fraction must be < 1"),
        "memdec_heads": (p.memdec_dim % p.memdec_heads == 0,
                         f"must divide memdec_dim={p.memdec_dim}"),
        "target_base": (p.target_base < len(p.base_models),
                        f"must be < {len(p.base_models)} (an index into base_models)"),
        "warmup_steps": (p.warmup_steps <= p.train_steps,
                         f"must be <= train_steps={p.train_steps} (the warmup is part of training)"),
    }
    for knob, (ok, allowed) in related.items():
        if not ok:
            raise _bad(knob, getattr(p, knob), allowed)
    kind, index = parse_memdec_init(p.memdec_init)
    if kind == "base" and index >= len(p.base_models):
        raise _bad("memdec_init", p.memdec_init,
                   f"base model index must be < {len(p.base_models)} (the number of base_models)")
    check_neighbours_fit(p)
    check_pq_training(p)


def neighbour_searches(p: Profile) -> dict[str, tuple[Any, str, int]]:
    """knob -> (its value, the search it sets, neighbours that search asks of the datastore):
    the kNN targets search k + 1 (the position itself is dropped), kNN-LM the largest k of its
    grid, the neighbour cache neighbour_cache_k + 1."""
    top = max(p.knn_k_grid)
    searches = {"k": (p.k, f"the kNN targets ask for k + 1 = {p.k + 1}", p.k + 1),
                "knn_k_grid": (p.knn_k_grid, f"kNN-LM at k = {top} asks for {top}", top)}
    if p.neighbour_cache_k is not None:
        cache = p.neighbour_cache_k
        searches["neighbour_cache_k"] = (cache, f"the neighbour cache asks for {cache + 1}",
                                         cache + 1)
    return searches


def check_neighbours_fit(p: Profile) -> None:
    """Every search must find its neighbours: with a cap, the datastore holds at most
    max_train_tokens - 1 keys (one per position with a next token). ValueError naming the
    knob that asks for the most, before any stage runs (else lesson 02 stops on it)."""
    if p.max_train_tokens is None:
        return
    keys = p.max_train_tokens - 1
    knob, (value, search, wanted) = max(neighbour_searches(p).items(), key=lambda kv: kv[1][2])
    if wanted > keys:
        fix = {"k": "lower k (and target_top_m)", "knn_k_grid": f"drop k > {keys} from knn_k_grid",
               "neighbour_cache_k": "lower neighbour_cache_k (or set it to null)"}[knob]
        raise _bad(knob, value, f"{search} neighbours of each position but a datastore of "
                   f"max_train_tokens={p.max_train_tokens} holds at most {keys} keys; {fix}, or "
                   f"raise max_train_tokens to >= {wanted + 1}")


PQ_CENTROIDS = 256  # ivfpq's 8-bit codebooks: 256 codewords each (runtime/search.py checks it too)


def check_pq_training(p: Profile) -> None:
    """ivfpq trains 256 codewords per sub-quantizer: it needs that many training keys."""
    if p.index_type != "ivfpq":
        return
    for knob, value in (("index_train_size", p.index_train_size),
                        ("max_train_tokens", p.max_train_tokens)):
        if value is not None and value < PQ_CENTROIDS + (knob == "max_train_tokens"):
            raise _bad(knob, value, f"index_type ivfpq trains on >= {PQ_CENTROIDS} keys (its 8-bit "
                       f"codebooks); raise {knob}, or use index_type flat or ivf_flat")


# ----------------------------------------------------------------------------- loading






AutoChoice = Callable[[], tuple[str, list[str]]]
_AUTO_CHOICE: list[AutoChoice] = []  # planning.auto registers the rule (it needs the planner)


def register_auto_choice(choose: AutoChoice) -> None:
    """Set the rule `auto` follows: () -> (profile name, notes on the profiles passed over).
    The planner owns it, since it needs every profile's plan; profiles stays a leaf."""
    _AUTO_CHOICE[:] = [choose]


def auto_choice() -> tuple[str, list[str]]:
    """(the profile `auto` picks on this machine, one line per profile it passed over and why)."""
    if not _AUTO_CHOICE:
        raise ValueError("profile 'auto' needs memdec_helpers.planning.auto (import memdec_helpers)")
    return _AUTO_CHOICE[0]()


def resolve_auto() -> str:
    """The profile name `auto` stands for on this machine."""
    return auto_choice()[0]


def check_overrides(overrides: dict[str, Any], source: str) -> None:
    unknown = sorted(set(overrides) - set(KNOBS))
    if unknown:
        raise ValueError(
            f"unknown profile knob(s) {unknown} in {source}; "
            f"allowed knobs are: {', '.join(sorted(KNOBS))}"
        )


class _DuplicateKey(ValueError):
    """A mapping that names a key twice (PyYAML would keep the last one, silently)."""


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no tags run code) that refuses a key given twice in one mapping."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if isinstance(key, (str, int, float, bool)) and key in lines:
            raise _DuplicateKey(f"names {key!r} twice (lines {lines[key]} and {line}); keep one")
        lines.setdefault(key, line) if isinstance(key, (str, int, float, bool)) else None
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(path: Path) -> dict[str, Any]:
    """A profile file's mapping: UTF-8, valid YAML, no key twice (ValueError naming the file)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read the profile file {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ValueError(f"profile file {path} is not UTF-8 text (line {line}, byte {err.start}: "
                         f"{raw[err.start:err.start + 1]!r}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as err:
        raise ValueError(f"profile file {path} {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"profile file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path} must hold a mapping of knob: value")
    return data


PATH_KNOBS = ("domain_corpus", "general_corpus", "memdec_init")  # may hold a relative path


def resolve_paths(values: dict[str, Any], folder: Path | str) -> dict[str, Any]:
    """`values` with every relative path (a `files:` source, a memdec_init folder) made
    absolute from `folder`: a YAML's own folder for what it says, the current folder for what
    Python or the command line says. Absolute, `~` and non-path values are kept as they are."""
    out = dict(values)
    for knob in PATH_KNOBS:
        value = out.get(knob)
        if not isinstance(value, str):
            continue
        prefix, path = ("files:", value[6:]) if value.startswith("files:") else ("", value)
        if knob == "memdec_init" and (value == "scratch" or value.startswith("base:")):
            continue
        if knob != "memdec_init" and not prefix:
            continue
        if path.strip() and not os.path.isabs(path) and not path.startswith("~"):
            out[knob] = prefix + os.path.normpath(os.path.join(os.path.abspath(folder), path))
    return out


def is_yaml_path(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def load_profile(name: str = "tiny", **overrides: Any) -> Profile:
    """Load a profile by name (`tiny`, `cpu`, `colab`, `gpu`, `auto`) or YAML path, then
    apply keyword overrides. Unknown names or knobs, and bad values, raise ValueError. A YAML
    file starts from another profile with `extends: <name or path>` (e.g. your corpus on
    colab's knobs). Relative paths are made absolute once: from the YAML's folder inside a YAML,
    from the current folder in `overrides`."""
    if name == "auto":
        name = resolve_auto()
    values = profile_values(name)
    check_overrides(overrides, "load_profile() overrides")
    values.update(resolve_paths(overrides, Path.cwd()))
    return Profile(**values)


def profile_values(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The knob values of a named or YAML profile, its `extends` chain resolved. A YAML of
    yours must say what it extends (else it would silently start from the bare dataclass
    defaults: no caps, a decoder that copies the whole base)."""
    path = Path(name)
    if name in PROFILE_NAMES:
        path = PROFILE_DIR / f"{name}.yaml"
    elif not (is_yaml_path(path) and path.is_file()):
        raise ValueError(
            f"unknown profile {name!r}: use one of {', '.join(PROFILE_NAMES + ('auto',))} "
            "or the path of an existing .yaml file"
        )
    values = _read_yaml(path)
    parent = values.pop("extends", None)
    check_overrides(values, str(path))
    values = resolve_paths(values, path.parent)
    values.setdefault("name", path.stem)
    if parent is None:
        if path.resolve().parent != PROFILE_DIR.resolve():
            raise ValueError(
                f"profile file {path} has no 'extends:': say which profile it starts from, e.g. "
                f"a first line `extends: tiny` (or cpu, colab, gpu, another YAML); its knobs "
                "then override that profile's")
        return values
    relative = path.parent / str(parent)
    parent = str(relative.resolve()) if is_yaml_path(relative) else str(parent)
    seen = seen + (str(path.resolve()),)
    if parent in seen or (PROFILE_DIR / f"{parent}.yaml").resolve().as_posix() in seen \
            or parent == "auto":
        raise ValueError(f"extends: {parent!r} in {path} loops or is 'auto'; name a profile")
    return {**profile_values(parent, seen), **values}
