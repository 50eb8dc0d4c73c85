"""Profiles: every knob of the course in one dataclass, loaded from a YAML file.

A profile is data, not code: `tiny` (offline, CPU, the CI profile), `cpu`, `colab` and `gpu`
live as YAML files next to this module. `load_profile("auto")` picks one for the machine.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"
PROFILE_NAMES = ("tiny", "cpu", "colab", "gpu")


@dataclass
class Profile:
    """Every knob the course uses. Defaults are the tiny world's; YAML files override them."""

    name: str = "tiny"
    # --- data -------------------------------------------------------------------------
    # "bundled:<name>[+<name>]", "files:<folder or glob>" or "hub:<data set>[:<config>[:<column>]]"
    domain_corpus: str = "bundled:kjv"
    general_corpus: str = "bundled:shakespeare"  # what the tiny base models were trained on
    validation_fraction: float = 0.05  # share of documents (by tokens) held out, per split
    test_fraction: float = 0.05
    split_seed: int = 0
    max_train_tokens: int | None = None  # cap on the datastore corpus (None: all of it)
    max_eval_tokens: int | None = None  # cap on validation and test each
    # --- models -----------------------------------------------------------------------
    tokenizer: str = "bundled:tiny-bpe"
    base_models: list[str] = field(
        default_factory=lambda: ["bundled:tiny-gpt2-small", "bundled:tiny-gpt2-medium"]
    )
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
    knn_lambda_grid: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    knn_temperature_grid: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0])
    target_top_m: int = 32
    # --- Memory Decoder ---------------------------------------------------------------
    memdec_init: str = "base:0"  # "scratch", "base:<i>" or a save_pretrained folder
    memdec_layers: int = 4
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
    alpha_grid: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    )
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


def in_colab() -> bool:
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def resolve_auto() -> str:
    """`auto`: tiny without CUDA; with CUDA the first of colab (in Colab) or gpu (elsewhere),
    then colab, whose plan fits this machine (GPU memory, host memory, free disk), else cpu."""
    return auto_choice()[0]


def auto_choice() -> tuple[str, list[str]]:
    """(the profile `auto` picks, one line per profile it passed over and why)."""
    import torch

    if not torch.cuda.is_available():
        return "tiny", []
    from .plan import misfits

    notes = []
    for name in dict.fromkeys(("colab" if in_colab() else "gpu", "colab")):
        problems = misfits(load_profile(name))
        if not problems:
            return name, notes
        notes.append(f"auto: not {name!r}: " + "; ".join(problems))
    return "cpu", notes


def check_overrides(overrides: dict[str, Any], source: str) -> None:
    unknown = sorted(set(overrides) - set(KNOBS))
    if unknown:
        raise ValueError(
            f"unknown profile knob(s) {unknown} in {source}; "
            f"allowed knobs are: {', '.join(sorted(KNOBS))}"
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"profile file {path} must hold a mapping of knob: value")
    return data


def validate_profile(p: Profile) -> None:
    def need(cond: bool, knob: str, allowed: str) -> None:
        if not cond:
            raise ValueError(f"profile knob {knob}={getattr(p, knob)!r} is invalid: {allowed}")

    need(0.0 <= p.beta <= 1.0, "beta", "must be in [0, 1]")
    need(all(0.0 <= a <= 1.0 for a in p.alpha_grid), "alpha_grid", "values must be in [0, 1]")
    need(all(0.0 <= a <= 1.0 for a in p.knn_lambda_grid), "knn_lambda_grid", "values in [0, 1]")
    need(p.knn_temperature > 0, "knn_temperature", "must be > 0")
    need(all(t > 0 for t in p.knn_temperature_grid), "knn_temperature_grid", "values > 0")
    need(p.context_length > 1, "context_length", "must be > 1")
    need(0 < p.stride <= p.context_length, "stride", "must be in (0, context_length]")
    need(p.k >= 1, "k", "must be >= 1")
    need(1 <= p.target_top_m <= p.k, "target_top_m", "must be in [1, k]")
    need(p.key_layer in ("mlp_input", "final_hidden"), "key_layer", "use mlp_input or final_hidden")
    need(p.index_type in ("flat", "ivf_flat", "ivfpq"), "index_type", "use flat, ivf_flat or ivfpq")
    need(p.device in ("auto", "cpu", "cuda"), "device", "use auto, cpu or cuda")
    need(p.search_device in ("auto", "cpu", "cuda"), "search_device", "use auto, cpu or cuda")
    need(p.micro_batch_size is None or p.micro_batch_size >= 1, "micro_batch_size",
         "must be >= 1, or null to size it to memory")
    for knob in ("domain_corpus", "general_corpus"):
        need(str(getattr(p, knob)).split(":")[0] in ("bundled", "files", "hub"), knob,
             "use bundled:<name>, files:<folder or glob> or hub:<data set>[:<config>[:<column>]]")
    need(p.dtype in ("auto", "float32", "bfloat16", "float16"), "dtype",
         "use auto, float32, bfloat16 or float16")
    need(len(p.base_models) >= 1, "base_models", "list at least one base model")
    need(p.train_steps >= 1 and p.train_batch_size >= 1, "train_steps", "must be >= 1")
    for knob, value in p.budget().items():
        need(value > 0, f"budget_{knob}", "must be > 0 (or null: no budget)")


def load_profile(name: str = "tiny", **overrides: Any) -> Profile:
    """Load a profile by name (`tiny`, `cpu`, `colab`, `gpu`, `auto`) or YAML path, then
    apply keyword overrides. Unknown names or knobs raise ValueError. A YAML file may start
    from another profile with `extends: <name or path>` (e.g. your corpus on colab's knobs)."""
    if name == "auto":
        name = resolve_auto()
    values = profile_values(name)
    check_overrides(overrides, "load_profile() overrides")
    values.update(overrides)
    profile = Profile(**values)
    validate_profile(profile)
    return profile


def profile_values(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The knob values of a named or YAML profile, its `extends` chain resolved."""
    path = Path(name)
    if name in PROFILE_NAMES:
        path = PROFILE_DIR / f"{name}.yaml"
    elif not (path.suffix in (".yaml", ".yml") and path.is_file()):
        raise ValueError(
            f"unknown profile {name!r}: use one of {', '.join(PROFILE_NAMES + ('auto',))} "
            "or the path of an existing .yaml file"
        )
    values = _read_yaml(path)
    parent = values.pop("extends", None)
    check_overrides(values, str(path))
    values.setdefault("name", path.stem)
    if parent is None:
        return values
    relative = path.parent / str(parent)
    parent = str(relative.resolve()) if relative.suffix in (".yaml", ".yml") else str(parent)
    seen = seen + (str(path.resolve()),)
    if parent in seen or (PROFILE_DIR / f"{parent}.yaml").resolve().as_posix() in seen \
            or parent == "auto":
        raise ValueError(f"extends: {parent!r} in {path} loops or is 'auto'; name a profile")
    return {**profile_values(parent, seen), **values}
