"""The plan of a course run: every stage with its estimated time, memory and disk, before any work.

Estimates follow the profile's shapes (token counts, context, model sizes, k, steps) and a
device's throughput (costs.py states the assumptions): time = FLOPs / (peak × efficiency), or
bytes / bandwidth where that is larger; memory from budget.py's per-window estimates; disk from
the artifact formats. `benchmarks/scale.py` measures the stages at reduced scale to check them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .budget import DEVICE_SHARE, ModelShape, fixed_bytes, item_bytes
from .costs import (DOWNLOADS, GB, HOST_BASELINE, HOST_FLOPS, RATES, RERANK_BYTES, TOPK_BYTES,
                    DeviceSpec, config_shape, corpus_tokens, forward_flops, lesson_parameters,
                    memdec_shape, model_shape, this_device)


# --- stages --------------------------------------------------------------------------------

@dataclass
class Stage:
    """One stage of the course: estimated seconds and peak memory, disk it leaves behind."""

    name: str
    lesson: str
    seconds: float
    gpu_bytes: float = 0.0  # peak accelerator memory (0 on a CPU-only run)
    host_bytes: float = 0.0  # peak host memory, baseline included
    disk_bytes: float = 0.0  # written and kept (downloads included)
    note: str = ""


@dataclass
class Workload:
    """The shapes and counts every stage estimate needs, gathered once."""

    profile: Any
    spec: DeviceSpec
    train: int  # datastore tokens
    held: int  # tokens of one held-out split
    bases: list[ModelShape] = field(default_factory=list)
    memdec: ModelShape | None = None
    torch_search: bool = False

    @property
    def on_gpu(self) -> bool:
        return self.spec.memory > 0

    @property
    def dim(self) -> int:
        return self.bases[0].width

    @property
    def index_bytes(self) -> float:
        """Device bytes of the exact-search keys (fp16) and their norms."""
        return self.train * (2 * self.dim + 4) if self.torch_search else 0.0

    @property
    def window_factor(self) -> float:
        """Tokens run through a model per scored token (windows overlap by L - S)."""
        return self.profile.context_length / self.profile.stride


def workload(profile: Any, spec: DeviceSpec) -> Workload | None:
    """The profile's workload on `spec` (None when the corpus size is unknown)."""
    counts = corpus_tokens(profile)
    if counts is None:
        return None
    w = Workload(profile, spec, *counts, [model_shape(b) for b in profile.base_models],
                 memdec_shape(profile))
    keys = w.train * (2 * w.dim + 4)
    w.torch_search = w.on_gpu and profile.search_device != "cpu" and keys <= 0.5 * spec.memory
    return w


def compute_seconds(flops: float, moved: float, spec: DeviceSpec, training: bool = False) -> float:
    """FLOPs at the efficient share of the peak, or bytes at the bandwidth, whichever is slower."""
    eff = spec.training_efficiency if training else spec.inference_efficiency
    return max(flops / (spec.peak_flops * eff), moved / spec.bandwidth)


def forward_stage(w: Workload, name: str, lesson: str, model: ModelShape, tokens: float,
                  head: bool = True, disk: float = 0.0, note: str = "") -> Stage:
    """Sliding-window passes of `model` over `tokens` (keys: head=False; log-probs: True)."""
    ctx = w.profile.context_length
    flops = tokens * w.window_factor * forward_flops(model, ctx, head)
    kind = "logprobs" if head else "keys"
    batch = fitted(w, model, kind, w.profile.batch_size, resident=w.index_bytes)
    memory = 4 * model.params + fixed_bytes(model, kind) + batch * item_bytes(model, ctx, kind)
    return Stage(name, lesson, compute_seconds(flops, 0, w.spec), *w_memory(w, memory),
                 disk, note or f"batch {batch}")


def fitted(w: Workload, model: ModelShape, kind: str, asked: int, resident: float = 0.0) -> int:
    """The batch budget.fit_batch would choose on this device (all of it on a CPU)."""
    if not w.on_gpu:
        return asked
    room = DEVICE_SHARE * w.spec.memory - resident - 4 * model.params - fixed_bytes(model, kind)
    return int(max(1, min(asked, room // item_bytes(model, w.profile.context_length, kind))))


def w_memory(w: Workload, device_bytes: float, host_extra: float = 0.0) -> tuple[float, float]:
    """(GPU bytes, host bytes) of a stage whose device work needs `device_bytes`: on a CPU-only
    run the host holds it."""
    host = HOST_BASELINE + 4 * (w.train + 2 * w.held) + host_extra
    return (device_bytes, host) if w.on_gpu else (0.0, host + device_bytes)


def search_stage(w: Workload, name: str, lesson: str, queries: float, k: int,
                 disk: float = 0.0, temperatures: int = 1) -> Stage:
    """`queries` k-NN searches over the datastore, then the kNN distributions on the CPU."""
    n, d, p = w.train, w.dim, w.profile
    if w.torch_search:
        candidates = k + max(32, k // 4)
        seconds = compute_seconds(2 * queries * n * d, 0, w.spec)  # candidate matmuls
        seconds += queries * n * TOPK_BYTES / w.spec.bandwidth  # their scores' top-k
        seconds += queries * candidates * d * RERANK_BYTES / w.spec.bandwidth  # re-rank
        device = w.index_bytes + 4 * w.bases[0].params + 2**25 * 10 + 2**26 * 6
    else:
        seconds = faiss_seconds(w, queries)
        device = 4 * w.bases[0].params
    seconds += queries * k * RATES["knn_neighbour"] * temperatures
    host = 8192 * (k + 1) * 8 * 6  # one chunk of neighbours and their row sorts
    if not w.torch_search and p.index_type != "ivfpq":
        host += n * d * 4  # faiss holds float32 keys in host memory
    return Stage(name, lesson, seconds, *w_memory(w, device, host), disk,
                 "exact, on the GPU" if w.torch_search else f"faiss {p.index_type}, CPU")


def faiss_seconds(w: Workload, queries: float) -> float:
    """faiss on the host: flat by BLAS; IVF lists scanned at RATES (float32 vectors of size 768
    or 64-byte PQ codes, scaled to the key size and code size)."""
    n, d, p = w.train, w.dim, w.profile
    host_flops = HOST_FLOPS if w.on_gpu else w.spec.peak_flops
    if p.index_type == "flat":
        return 2 * queries * n * d / host_flops
    scanned = queries * n * min(1.0, p.nprobe / p.ivf_nlist)
    rate = (RATES["ivf_flat_scan"] * 768 / d if p.index_type == "ivf_flat"
            else RATES["ivfpq_scan"] * 64 / p.pq_code_bytes)
    return scanned / rate + 2 * queries * p.ivf_nlist * d / host_flops


def train_stage(w: Workload, name: str, lesson: str, model: ModelShape, sequences: float,
                batch: int, evals: float, runs: int = 1) -> Stage:
    """`runs` trainings of `sequences` sequences each (micro-batches sized to memory), with
    `evals` validation passes (perplexity and KL: two forwards) each."""
    ctx = w.profile.context_length
    flops = 3 * sequences * ctx * forward_flops(model, ctx)
    seconds = compute_seconds(flops, 0, w.spec, training=True)
    seconds += evals * 2 * compute_seconds(w.held * w.window_factor * forward_flops(model, ctx),
                                           0, w.spec)
    resident = w.index_bytes + 4 * w.bases[0].params
    micro = fitted(w, model, "train", batch, resident)
    device = resident + 4 * model.params + fixed_bytes(model, "train") + micro * item_bytes(
        model, ctx, "train")
    disk = runs * 4 * model.params + 12 * model.params  # final models + one live checkpoint
    return Stage(name, lesson, runs * seconds, *w_memory(w, device), disk,
                 f"{runs} run(s), micro-batch {micro}")


def setup_stage(w: Workload) -> Stage:
    """Installing what is missing, starting seven kernels, downloading data and models."""
    p = w.profile
    data = next((v for k, v in DOWNLOADS.items() if k in p.domain_corpus), 0.0)
    models = sum(4 * b.params for name, b in zip(p.base_models, w.bases)
                 if not name.startswith("bundled:"))
    seconds = 7 * 15 + (data + models) / RATES["download"]
    largest = max(4 * b.params for b in w.bases)
    return Stage("setup: install, kernels, downloads", "00-06", seconds,
                 *w_memory(w, 0.0, largest), data + models, "7 kernels x 15 s + downloads")


def corpus_stage(w: Workload) -> Stage:
    tokens = w.train + 2 * w.held
    return Stage("tokenize the corpus (capped)", "00", tokens / RATES["tokenize"],
                 *w_memory(w, 0.0, 40e6), 4 * tokens, "stops at the caps")


def index_stage(w: Workload, loads: int = 5) -> Stage:
    """GPU: the keys copied to the device once per lesson that searches; CPU: faiss built once."""
    n, d, p = w.train, w.dim, w.profile
    if w.torch_search:
        seconds = loads * n * 2 * d * (1 / RATES["disk"] + 1 / RATES["host_to_device"])
        return Stage("search keys onto the GPU", "01-06", seconds,
                     *w_memory(w, w.index_bytes + 4 * w.bases[0].params), 0.0,
                     f"{loads} lessons x one copy")
    per_key = {"flat": 4 * d, "ivf_flat": 4 * d + 8}.get(p.index_type, p.pq_code_bytes + 8)
    train = 0 if p.index_type == "flat" else min(p.index_train_size, n) * p.ivf_nlist * d * 2 * 20
    seconds = (train + n * d * 2 * (1 if p.index_type == "flat" else p.ivf_nlist)) / HOST_FLOPS
    seconds += loads * n * per_key / RATES["disk"]
    return Stage(f"faiss {p.index_type} index", "01", seconds, *w_memory(w, 0.0, n * per_key),
                 n * per_key, "CPU")


def course_stages(w: Workload) -> list[Stage]:
    """Every stage of lessons 00-06 on the profile, in order."""
    p, n, e, base0, mem = w.profile, w.train, w.held, w.bases[0], w.memdec
    m, d, abl = p.target_top_m, w.dim, lesson_parameters("06")
    temps = len(set(p.knn_temperature_grid) | {p.knn_temperature})
    bases = [forward_stage(w, f"base {i} log-probs (val, test, general test)", "00-05", b, 3 * e)
             for i, b in enumerate(w.bases)]
    small = config_shape({"n_layer": abl["SMALL_LAYERS"], "n_embd": abl["SMALL_DIM"],
                          "vocab_size": mem.vocab, "n_positions": p.context_length})
    ablation_sequences = abl["ABLATION_STEPS"] * abl["ABLATION_BATCH"] * p.grad_accum
    sizes = [f for f in abl["FRACTIONS"] if f < 1]
    return [
        setup_stage(w), corpus_stage(w), *bases,
        forward_stage(w, "datastore keys", "01", base0, n, head=False, disk=n * (2 * d + 4)),
        forward_stage(w, "held-out keys (val, test)", "01-04", base0, 2 * e, head=False),
        index_stage(w),
        search_stage(w, "kNN targets, every datastore position", "03", n, p.k + 1,
                     disk=n * (6 * m + 2)),
        search_stage(w, "validation kNN targets", "03", e, p.k, disk=e * (6 * m + 2)),
        search_stage(w, "kNN-LM (val, test)", "02-04", 2 * e, p.k, temperatures=temps),
        train_stage(w, "train the Memory Decoder", "03", mem,
                    p.train_steps * p.train_batch_size * p.grad_accum, p.train_batch_size,
                    p.train_steps / p.eval_every + 1),
        forward_stage(w, "Memory Decoder log-probs (val, test)", "04", mem, 2 * e),
        Stage("decoding demo (base, + MemDec, + kNN-LM)", "05", 30.0, *w_memory(w, 0.0)),
        train_stage(w, "ablation trainings (beta)", "06", mem, ablation_sequences,
                    abl["ABLATION_BATCH"], 1.5, runs=len(abl["BETAS"])),
        train_stage(w, "ablation training (small, scratch)", "06", small, ablation_sequences,
                    abl["ABLATION_BATCH"], 1.5),
        search_stage(w, "ablation searches (k, tau, datastore size)", "06",
                     abl["QUERIES"] * (1 + len(sizes)), max(max(abl["K_GRID"]), p.k)),
    ]


@dataclass
class Plan:
    """A profile's stages on a device, and their totals."""

    profile: str
    device: DeviceSpec
    stages: list[Stage]

    @property
    def minutes(self) -> float:
        return sum(s.seconds for s in self.stages) / 60

    @property
    def gpu_gb(self) -> float:
        return max(s.gpu_bytes for s in self.stages) / GB

    @property
    def host_gb(self) -> float:
        return max(s.host_bytes for s in self.stages) / GB

    @property
    def disk_gb(self) -> float:
        return sum(s.disk_bytes for s in self.stages) / GB


def make_plan(profile: Any, spec: DeviceSpec | None = None) -> Plan | None:
    """The profile's plan on `spec` (default: this machine); None if the corpus size is unknown
    (a `files:` or hub corpus with no caps)."""
    spec = spec or this_device(profile)
    w = workload(profile, spec)
    return None if w is None else Plan(profile.name, spec, course_stages(w))


def format_plan(plan: Plan, budget: dict[str, float] | None = None) -> str:
    """A markdown table of the stages and the totals (with the profile's budget, if any)."""
    gpu = plan.device.memory > 0
    lines = [f"plan for profile {plan.profile!r} on {plan.device.name} (estimates; "
             "the assumptions are in memdec_helpers/costs.py)", "",
             "| stage | lesson | minutes | " + ("GPU GB | " if gpu else "") + "host GB | disk GB |",
             "|---|---|---|" + ("---|" if gpu else "") + "---|---|"]
    for s in plan.stages:
        gpu_col = f"{s.gpu_bytes / GB:.1f} | " if gpu else ""
        lines.append(f"| {s.name} ({s.note}) | {s.lesson} | {s.seconds / 60:.1f} | {gpu_col}"
                     f"{s.host_bytes / GB:.1f} | {s.disk_bytes / GB:.2f} |")
    total = (f"| **total** (peaks; disk summed) | | **{plan.minutes:.0f}** | "
             + (f"**{plan.gpu_gb:.1f}** | " if gpu else "")
             + f"**{plan.host_gb:.1f}** | **{plan.disk_gb:.1f}** |")
    lines.append(total)
    if budget:
        lines.append("| budget | | " + " | ".join(
            f"{budget[k]:g}" for k in (["minutes", "gpu_gb"] if gpu else ["minutes"])
            + ["host_gb", "disk_gb"]) + " |")
    return "\n".join(lines)


def machine_capacity(profile: Any) -> dict[str, float]:
    """What this machine offers, in GB: GPU memory, host memory, free disk under the artifacts."""
    import shutil

    import torch

    from .artifacts import artifacts_root
    from .budget import host_total_bytes

    root = artifacts_root(profile.artifacts_dir)
    while not root.exists():
        root = root.parent
    gpu = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
    return {"gpu_gb": gpu / GB, "host_gb": host_total_bytes() / GB,
            "disk_gb": shutil.disk_usage(root).free / GB}


def misfits(profile: Any) -> list[str]:
    """Why the profile's plan does not fit this machine (empty: it fits)."""
    plan = make_plan(profile)
    if plan is None:
        return []
    have = machine_capacity(profile)
    need = {"gpu_gb": plan.gpu_gb, "host_gb": plan.host_gb, "disk_gb": plan.disk_gb}
    label = {"gpu_gb": "GPU memory", "host_gb": "host memory", "disk_gb": "free disk"}
    out = [f"needs {need[k]:.1f} GB of {label[k]} but this machine has {have[k]:.1f} GB"
           for k in need if need[k] > have[k]]
    minutes = profile.budget_minutes
    if minutes is not None and plan.minutes > minutes:
        out.append(f"would take about {plan.minutes:.0f} min on {plan.device.name}, over its "
                   f"budget of {minutes:g} min")
    return out


def summary(plan: Plan) -> str:
    """One line: stages, estimated minutes and peaks."""
    gpu = f", GPU {plan.gpu_gb:.1f} GB" if plan.device.memory > 0 else ""
    return (f"plan: {len(plan.stages)} stages on {plan.device.name}, about {plan.minutes:.0f} min"
            f"{gpu}, host {plan.host_gb:.1f} GB, disk {plan.disk_gb:.1f} GB "
            "(estimates; P.plan(profile) shows every stage)")
