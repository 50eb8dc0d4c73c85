"""The plan of a course run: every stage with its estimated time, memory and disk, before any work.

Estimates follow the profile's shapes (token counts, context, model sizes, k, steps) and a
device's throughput (costs.py and devices.py state the assumptions): time = FLOPs / (peak × efficiency), or
bytes / bandwidth where that is larger; memory from runtime/batching.py's per-window estimates; disk from
the artifact formats. `benchmarks/scale.py` measures the stages at reduced scale to check them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..runtime.batching import ModelShape, fixed_bytes, item_bytes
from ..core.search import key_bytes
from ..runtime.devices import DEVICE_SHARE
from ..runtime.search import exact_search_fits
from .costs import (DOWNLOADS, GB, HOST_BASELINE, HOST_FLOPS, RATES, RERANK_BYTES, TOPK_BYTES,
                    corpus_tokens)
from .devices import DeviceSpec, this_device
from .lesson_settings import AblationSettings, ablation_settings
from .shapes import config_shape, forward_flops, memdec_shape, model_shape


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
    scratch_bytes: float = 0.0  # written while it runs, then deleted (a training checkpoint)


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

    def key_bytes(self, which: int = 0, keys: float | None = None) -> float:
        """Bytes of base model `which`'s datastore keys (fp16) and their norms."""
        return key_bytes(self.train if keys is None else keys, self.bases[which].width)

    @property
    def index_bytes(self) -> float:
        """Device bytes of exact search's keys: one index is held at a time, the largest counts."""
        if not self.torch_search:
            return 0.0
        return max(self.key_bytes(i) for i in range(len(self.bases)))

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
    w.torch_search = (w.on_gpu and profile.search_device != "cpu"
                      and all(exact_search_fits(w.train, b.width, spec.memory) for b in w.bases))
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
                 disk: float = 0.0, temperatures: int = 1, which: int = 0,
                 keys: float | None = None, searches: int = 1) -> Stage:
    """`searches` times `queries` k-NN searches over base model `which`'s datastore (`keys`
    entries: default the profile's), then the kNN distributions on the CPU."""
    n, d, p = w.train if keys is None else keys, w.bases[which].width, w.profile
    k = int(min(k, n))
    if w.torch_search:
        candidates = k + max(32, k // 4)
        seconds = compute_seconds(2 * queries * n * d, 0, w.spec)  # candidate matmuls
        seconds += queries * n * TOPK_BYTES / w.spec.bandwidth  # their scores' top-k
        seconds += queries * candidates * d * RERANK_BYTES / w.spec.bandwidth  # re-rank
        device = w.key_bytes(which, n) + 4 * w.bases[which].params + 2**25 * 10 + 2**26 * 6
    else:
        seconds = faiss_seconds(w, queries, n, d)
        device = 4 * w.bases[which].params
    seconds += queries * k * RATES["knn_neighbour"] * temperatures
    host = 8192 * (k + 1) * 8 * 6  # one chunk of neighbours and their row sorts
    if not w.torch_search and p.index_type != "ivfpq":
        host += n * d * 4  # faiss holds float32 keys in host memory
    how = "exact, on the GPU" if w.torch_search else f"faiss {p.index_type}, CPU"
    return Stage(name, lesson, searches * seconds, *w_memory(w, device, host), searches * disk,
                 how if searches == 1 else f"{searches} searches, {how}")


def faiss_seconds(w: Workload, queries: float, n: float, d: int) -> float:
    """faiss on the host over `n` keys of size `d`: flat by BLAS; IVF lists scanned at RATES
    (float32 vectors of size 768 or 64-byte PQ codes, scaled to the key size and code size)."""
    p = w.profile
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
    return Stage(name, lesson, runs * seconds, *w_memory(w, device), runs * 4 * model.params,
                 f"{runs} run(s), micro-batch {micro}",
                 12 * model.params)  # final models kept; the live checkpoint is deleted at the end


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


def index_stage(w: Workload, which: int = 0, loads: int = 5) -> Stage:
    """Base model `which`'s index. GPU: its keys copied to the device once per lesson that
    searches; CPU: faiss built once, read by every lesson that searches."""
    n, d, p = w.train, w.bases[which].width, w.profile
    if w.torch_search:
        seconds = loads * n * 2 * d * (1 / RATES["disk"] + 1 / RATES["host_to_device"])
        return Stage(f"search keys of base {which} onto the GPU", "01-06", seconds,
                     *w_memory(w, w.key_bytes(which) + 4 * w.bases[which].params), 0.0,
                     f"{loads} lessons x one copy")
    per_key = {"flat": 4 * d, "ivf_flat": 4 * d + 8}.get(p.index_type, p.pq_code_bytes + 8)
    train = 0 if p.index_type == "flat" else min(p.index_train_size, n) * p.ivf_nlist * d * 2 * 20
    seconds = (train + n * d * 2 * (1 if p.index_type == "flat" else p.ivf_nlist)) / HOST_FLOPS
    seconds += loads * n * per_key / RATES["disk"]
    return Stage(f"faiss {p.index_type} index of base {which}", "01", seconds,
                 *w_memory(w, 0.0, n * per_key), n * per_key, "CPU")


def course_stages(w: Workload) -> list[Stage]:
    """Every stage of lessons 00-06 on the profile, in order: per base model its log-probs,
    datastore, index and kNN-LM (val, test, general test); the kNN targets of base 0; the Memory
    Decoder and the DAPT baseline trained and scored (one run per seed of main_seeds); lesson
    06's ablations."""
    p, n, e, base0, mem = w.profile, w.train, w.held, w.bases[0], w.memdec
    grid = len(set(p.knn_k_grid)) * len(p.knn_temperature_grid)
    stages = [setup_stage(w), corpus_stage(w)]
    for i, b in enumerate(w.bases):
        stages += [
            forward_stage(w, f"base {i} log-probs (val, test, general test)", "00-05", b, 3 * e),
            forward_stage(w, f"datastore keys, base {i}", "01-05", b, n, head=False,
                          disk=w.key_bytes(i)),
            forward_stage(w, f"held-out keys, base {i} (val, test, general test)", "01-05", b,
                          3 * e, head=False),
            index_stage(w, i),
            search_stage(w, f"kNN-LM, base {i} (val, test, general test)", "02-05", 3 * e,
                         max(p.knn_k_grid), temperatures=grid, which=i)]
    sequences = p.train_steps * p.train_batch_size * p.grad_accum
    evals = p.train_steps / p.eval_every + 1
    seeds = p.main_seeds  # the main table's MemDec and DAPT rows: one run per seed
    return stages + [
        *targets_stages(w, "kNN targets, every datastore position", "02-03", p.k),
        search_stage(w, "validation kNN targets", "03", e, p.k, disk=e * (6 * p.target_top_m + 2)),
        train_stage(w, "train the Memory Decoder", "03", mem, sequences, p.train_batch_size, evals),
        *([train_stage(w, "train the Memory Decoder, other seeds (main_seeds)", "03", mem,
                       sequences, p.train_batch_size, 0, runs=seeds - 1)] if seeds > 1 else []),
        forward_stage(w, "Memory Decoder log-probs (val, test, general test)", "04", mem,
                      3 * e * seeds),
        train_stage(w, "DAPT: fine-tune all of base 0 (the same steps)", "04", base0, sequences,
                    p.train_batch_size, evals / seeds, runs=seeds),
        forward_stage(w, "DAPT log-probs (val, test, general test)", "04", base0, 3 * e * seeds),
        Stage("decoding demo (base, + MemDec, + kNN-LM)", "05", 30.0, *w_memory(w, 0.0)),
        *ablation_stages(w, ablation_settings(p, w.train, e)),
    ]


def targets_stages(w: Workload, name: str, lesson: str, k: int, settings: int = 1,
                   first: bool = True, which: int = 0) -> list[Stage]:
    """The kNN targets of every datastore position (base model `which`'s datastore) for
    `settings` settings of k or τ: a search each; or, with `neighbour_cache_k` > k, the
    distributions from the cached neighbours (the `first` call searches once for them)."""
    p, n = w.profile, w.train
    disk = n * (6 * p.target_top_m + 2)  # one setting's ids and probs
    cache = p.neighbour_cache_k or 0
    if cache <= k:
        return [search_stage(w, name, lesson, n, k + 1, disk=disk, searches=settings,
                             which=which)]
    seconds = settings * n * k * RATES["knn_neighbour"]
    out = [Stage(f"{name} (from the cached neighbours)", lesson, seconds,
                 *w_memory(w, 0.0, n * cache * 8 / 16), settings * disk, "no search")]
    if first:
        out.insert(0, search_stage(w, f"neighbours of every datastore position (k = {cache})",
                                   lesson, n, cache + 1, disk=n * (cache + 1) * 8,
                                   which=which))
    return out


def ablation_stages(w: Workload, abl: AblationSettings) -> list[Stage]:
    """Lesson 06: short runs (β x seeds, target k and τ, datastore sizes, decoder shapes), each
    trained for `ablation_steps` and scored on validation and test; the targets they need; the
    kNN-LM grid over a sample of validation queries."""
    p, e, mem, base0 = w.profile, w.held, w.memdec, w.bases[0]
    sequences = p.ablation_steps * p.ablation_batch_size * p.grad_accum
    sizes = [t for t in abl.train_tokens if t < w.train]
    other_ks = [k for k in abl.target_ks if k != p.k]
    other_taus = [t for t in abl.target_taus if t != p.knn_temperature]
    runs = len(abl.betas) * p.ablation_seeds + len(other_ks) + len(other_taus) + len(sizes)
    scratch = config_shape({"n_layer": 1, "n_embd": base0.width, "vocab_size": base0.vocab,
                            "n_positions": p.context_length})
    out = [train_stage(w, "ablation trainings (short runs)", "06", mem, sequences,
                       p.ablation_batch_size, 0, runs=runs),
           forward_stage(w, f"ablation runs scored ({runs} x val, test)", "06", mem, 2 * e * runs),
           train_stage(w, "ablation decoders (all of base 0: with the KL term, and DAPT's β 0)",
                       "06", base0, sequences, p.ablation_batch_size, 0, runs=2),
           train_stage(w, "ablation decoder (one block from scratch)", "06", scratch, sequences,
                       p.ablation_batch_size, 0)]
    for k in other_ks:
        out += targets_stages(w, f"ablation targets, k = {k}", "06", k, first=False)
    if other_taus:
        out += targets_stages(w, f"ablation targets, {len(other_taus)} other tau", "06", p.k,
                              len(other_taus), first=False)
    for t in sizes:  # a smaller datastore: its corpus, keys, targets, kNN-LM and base scores
        out.append(forward_stage(w, f"ablation datastore of {t:,} tokens", "06", base0,
                                 t + 2 * e, head=False, disk=w.key_bytes(0, t)))
        out.append(search_stage(w, f"ablation targets and kNN-LM, {t:,} keys", "06",
                                t + 2 * e, p.k + 1, keys=t))
        out.append(forward_stage(w, f"ablation base 0 log-probs ({t:,}-token run)", "06", base0,
                                 2 * e))
    out.append(search_stage(w, "kNN-LM grid (k, tau) on validation queries", "06",
                            min(abl.queries, e), max(*abl.k_grid, p.k),
                            temperatures=len(abl.k_grid) * len(abl.temperature_grid)))
    return out + (full_length_stages(w) if p.full_length_ablations else [])


def full_length_stages(w: Workload) -> list[Stage]:
    """Lesson 06's full-schedule runs (seed 0 each; trained in lesson 05, scored in 06): the
    same-size decoder (all of base 0, DAPT's schedule, the KL term) and, with a second base
    model, the decoder taught by the larger base's datastore (its targets first)."""
    p, e, base0 = w.profile, w.held, w.bases[0]
    sequences = p.train_steps * p.train_batch_size * p.grad_accum
    out = [train_stage(w, "same-size decoder (all of base 0, DAPT's schedule)", "05", base0,
                       sequences, p.train_batch_size, 0),
           forward_stage(w, "same-size decoder log-probs (val, test, general test)", "06",
                         base0, 3 * e)]
    if len(w.bases) > 1:
        teacher = 1  # base model 1 (the larger one, lesson 05) makes the targets
        out += targets_stages(w, f"teacher targets from base {teacher}'s datastore", "05", p.k,
                              which=teacher)
        out += [train_stage(w, f"decoder taught by base {teacher}", "05", w.memdec, sequences,
                            p.train_batch_size, 0),
                forward_stage(w, f"base-{teacher}-taught decoder log-probs (val, test, general)",
                              "06", w.memdec, 3 * e)]
    return out


FACT_TOKENS = (69_653, 16_700)  # the bundled fact domain: training, one held-out split (tiny BPE)


def memory_stages(w: Workload) -> list[Stage]:
    """Lesson 07: an MLP memory on the course's domain, then every memory on the fact domain
    (its own datastore, targets, Memory Decoder, MLP memory and DAPT; caps fitted to it)."""
    p, mem, base0 = w.profile, w.memdec, w.bases[0]
    sequences = p.train_steps * p.train_batch_size * p.grad_accum
    train, held = (min(size, cap or size) for size, cap in
                   zip(FACT_TOKENS, (p.max_train_tokens, p.max_eval_tokens)))
    f = replace(w, train=train, held=held, bases=w.bases[:1])
    fact_sequences = sequences * train / w.train  # P.fact_domain: as many epochs as the domain
    grid = len(set(p.knn_k_grid)) * len(p.knn_temperature_grid)
    return [
        train_stage(w, "MLP memory on the domain", "07", mem, sequences, p.train_batch_size, 0),
        forward_stage(w, "MLP memory log-probs (val, test, general test)", "07", mem, 3 * w.held),
        forward_stage(f, "fact domain: base 0 log-probs and keys", "07", base0, train + 3 * held,
                      head=False, disk=f.key_bytes(0)),
        search_stage(f, "fact domain: kNN-LM (val, test, general test)", "07", 3 * held,
                     max(p.knn_k_grid), temperatures=grid),
        *targets_stages(f, "fact domain: kNN targets", "07", p.k),
        train_stage(f, "fact domain: Memory Decoder and MLP memory", "07", mem, fact_sequences,
                    p.train_batch_size, 0, runs=2),
        train_stage(f, "fact domain: DAPT", "07", base0, fact_sequences, p.train_batch_size, 0),
        forward_stage(f, "fact domain: every model's log-probs", "07", base0, 9 * held),
        Stage("decoding cost per token (2048 tokens x 3 rounds)", "07", 10.0, *w_memory(w, 0.0)),
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
        """What the run leaves on disk, plus the largest checkpoint alive meanwhile."""
        scratch = max((s.scratch_bytes for s in self.stages), default=0.0)
        return (sum(s.disk_bytes for s in self.stages) + scratch) / GB


def make_plan(profile: Any, spec: DeviceSpec | None = None) -> Plan | None:
    """The profile's plan on `spec` (default: this machine); None if the corpus size is unknown
    (a `files:` or hub corpus with no caps)."""
    spec = spec or this_device(profile)
    w = workload(profile, spec)
    return None if w is None else Plan(profile.name, spec, course_stages(w) + memory_stages(w))


def format_plan(plan: Plan, budget: dict[str, float] | None = None) -> str:
    """A markdown table of the stages and the totals (with the profile's budget, if any)."""
    gpu = plan.device.memory > 0
    lines = [f"plan for profile {plan.profile!r} on {plan.device.name} (estimates; "
             "the assumptions are in memdec_helpers/planning/)", "",
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

    from ..runtime.devices import host_total_bytes, total_device_memory
    from ..stages.store import artifacts_root

    root = artifacts_root(profile.artifacts_dir)
    while not root.exists():
        root = root.parent
    gpu = total_device_memory(torch.device("cuda", 0)) if torch.cuda.is_available() else 0
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


FAR = 2.0  # the batch runner stops when the plan needs more than FAR x the machine's disk or RAM


def far_misfits(profile: Any, capacity: dict[str, float] | None = None,
                factor: float = FAR) -> list[str]:
    """Why the profile's plan cannot run on this machine, even allowing for the estimates'
    error: its disk or host memory above `factor` x what the machine has (`capacity`: GB, as
    machine_capacity gives). GPU memory is left out: every stage lowers its batch to fit."""
    plan = make_plan(profile)
    if plan is None:
        return []
    have = capacity or machine_capacity(profile)
    need = {"disk_gb": (plan.disk_gb, "disk", "free under the artifacts folder"),
            "host_gb": (plan.host_gb, "host memory", "in all")}
    return [f"the plan needs {gb:,.1f} GB of {what} but this machine has {have[key]:,.1f} GB "
            f"{where}" for key, (gb, what, where) in need.items() if gb > factor * have[key]]


def summary(plan: Plan) -> str:
    """One line: stages, estimated minutes and peaks."""
    gpu = f", GPU {plan.gpu_gb:.1f} GB" if plan.device.memory > 0 else ""
    return (f"plan: {len(plan.stages)} stages on {plan.device.name}, about {plan.minutes:.0f} min"
            f"{gpu}, host {plan.host_gb:.1f} GB, disk {plan.disk_gb:.1f} GB "
            "(estimates; P.plan(profile) shows every stage)")
