"""A profile's budget, measured at reduced scale and projected to full scale.

Every stage runs with the profile's real shapes (GPT-2 small and medium configs with random
weights: no hub here; context, stride, k, top-m, micro-batches as in the profile) on a corpus of
bundled texts with the token count of the reduced scale, at two scales; the stages of one scale
run in order in one fresh process, like a notebook kernel. Printed per stage: wall time, peak
host memory (anonymous RSS) and its growth during the stage, peak accelerator memory (where
there is one) and the disk it wrote, measured; the plan's estimate for the same work on this
machine (a check of the cost model); and the plan's projection of the full stage on a T4.

    python benchmarks/scale.py --profile colab                  # scales 2048 and 4096 tokens
    python benchmarks/scale.py --profile colab --scales 2048 4096 --stages keys targets
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from memdec_helpers import load_profile
from memdec_helpers.planning import devices as specs, plan as pl, shapes

STAGES = ("corpus", "keys", "held-out keys", "targets", "knn-lm", "base0 logprobs",
          "base1 logprobs", "train")
PLAN_NAMES = {"corpus": "tokenize the corpus", "keys": "datastore keys, base 0",
              "held-out keys": "held-out keys, base 0", "targets": "kNN targets",
              "knn-lm": "kNN-LM, base 0", "base0 logprobs": "base 0 log-probs",
              "base1 logprobs": "base 1 log-probs", "train": "train the Memory Decoder"}
TRAIN_STEPS = 1  # optimizer steps measured (one sequence): training cost does not grow with N

CHILD = r"""
import dataclasses, json, sys, time
from pathlib import Path
sys.path.insert(0, HERE)
from rss import PeakSampler
sampler = PeakSampler()
import torch
from memdec_helpers import pipeline as P
from memdec_helpers.runtime import search as index_mod
from memdec_helpers.runtime.models import base_model_name, load_tokenizer
from memdec_helpers.profiles import load_profile
from memdec_helpers.stages.training import train_memory_decoder
from transformers import GPT2Config, GPT2LMHeadModel

scale, root, name, stages = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(",")
cuda = torch.cuda.is_available()
profile = load_profile(name, domain_corpus="bundled:kjv-ot+kjv-nt+shakespeare", tokenizer="bundled:tiny-bpe",
                       max_train_tokens=scale, max_eval_tokens=EVAL, artifacts_dir=root,
                       device="cuda" if cuda else "cpu")
if not cuda:  # the GPU's exact-search code path, run on the CPU
    index_mod.search_device = lambda profile, n, d: torch.device("cpu")
SHAPES = [(12, 768, 12), (24, 1024, 16)]  # GPT-2 small and medium, random weights

def base(which):
    key = (base_model_name(profile, which), profile.base_model_revision, profile.device)
    if key not in P._MODELS:
        layers, width, heads = SHAPES[which]
        torch.manual_seed(which)
        model = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=heads))
        model.config._name_or_path = f"random-gpt2-{layers}x{width}"
        P._MODELS[key] = (model.to(profile.device).eval(), load_tokenizer(profile))
    return P._MODELS[key][0]

def train():
    run = dataclasses.replace(profile, train_steps=TRAIN_STEPS, train_batch_size=1, grad_accum=1,
                              eval_every=TRAIN_STEPS, warmup_steps=1)
    memdec = P.build_memory_decoder(run, base_model=base(0))
    train_memory_decoder(run, memdec, P.corpus(run)["train"], P.targets(run, progress=False),
                         out_dir=P.memdec_dir(run), progress=False)

ACTIONS = {
    "corpus": lambda: P.corpus(profile),
    "keys": lambda: P.datastore(profile, 0, False),
    "held-out keys": lambda: [P.eval_keys(profile, s) for s in ("validation", "test")],
    "targets": lambda: P.targets(profile, False),
    "knn-lm": lambda: [P.knn_logprobs(profile, s) for s in ("validation", "test")],
    "base0 logprobs": lambda: [P.base_logprobs(profile, s, 0) for s in ("validation", "test")],
    "base1 logprobs": lambda: [P.base_logprobs(profile, s, 1) for s in ("validation", "test")],
    "train": train,
}
MODELS = {"corpus": [], "base1 logprobs": [1]}
for stage in stages:
    for which in MODELS.get(stage, [0]):  # built before the stage, not measured
        base(which)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = sampler.reset()["anon"]
    start = time.perf_counter()
    ACTIONS[stage]()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    print(json.dumps({"stage": stage, "seconds": seconds, "before_mb": before,
                      "peak_mb": sampler.read()["anon"], "gpu_mb": gpu,
                      "disk_mb": sum(p.stat().st_size for p in Path(root).rglob("*")
                                     if p.is_file()) / 2**20}), flush=True)
""".replace("TRAIN_STEPS", str(TRAIN_STEPS)).replace("HERE", repr(str(Path(__file__).parent)))


def eval_tokens(scale: int) -> int:
    """Held-out tokens per split at a reduced scale: one 1024-token window (or a quarter of the
    datastore tokens, if more)."""
    return max(scale // 4, 1024)


def measure(stages: list[str], scale: int, root: Path, profile: str) -> list[dict]:
    """The stages in order, in one fresh process (as in a notebook kernel: models and held-out
    keys stay memoised); per stage its time, peak RSS and RSS before, and the disk in use."""
    child = CHILD.replace("EVAL", str(eval_tokens(scale)))
    proc = subprocess.Popen([sys.executable, "-c", child, str(scale), str(root), profile,
                             ",".join(stages)], stdout=subprocess.PIPE, text=True)
    rows, disk = [], 0.0
    for line in proc.stdout:
        r = json.loads(line)
        r["disk_mb"], disk = r["disk_mb"] - disk, r["disk_mb"]
        r["scale"] = scale
        rows.append(r)
        print(f"# {json.dumps(r)}", flush=True)
    if proc.wait():
        raise SystemExit(f"the {scale}-token run failed (exit {proc.returncode})")
    return rows


def reduced_workload(scale: int, profile_name: str, spec=None):
    """The plan's workload of the profile at a reduced scale, on `spec` (default: this CPU)."""
    profile = load_profile(profile_name, max_train_tokens=scale, max_eval_tokens=eval_tokens(scale))
    return pl.workload(profile, spec or specs.cpu_spec())


def calibrated_spec(keys_row: dict, profile_name: str):
    """This machine as the plan sees it, with the FLOP rate the keys stage reached (a shared
    machine's load moves a quick matmul benchmark too much)."""
    w = reduced_workload(keys_row["scale"], profile_name)
    flops = w.train * w.window_factor * shapes.forward_flops(w.bases[0], w.profile.context_length,
                                                             head=False)
    achieved = flops / keys_row["seconds"]
    return replace(w.spec, peak_flops=achieved / w.spec.inference_efficiency)


def model_estimate(stage: str, scale: int, profile_name: str, spec) -> float:
    """The plan's seconds for the benchmark's own work at this scale on this machine."""
    w = reduced_workload(scale, profile_name, spec)
    w.torch_search = True  # the benchmark runs the GPU's exact-search code on this machine
    profile = w.profile
    e, grid = w.held, len(set(profile.knn_k_grid)) * len(profile.knn_temperature_grid)
    work = {
        "corpus": lambda: pl.corpus_stage(w),
        "keys": lambda: pl.forward_stage(w, "", "", w.bases[0], w.train, head=False),
        "held-out keys": lambda: pl.forward_stage(w, "", "", w.bases[0], 2 * e, head=False),
        "targets": lambda: pl.search_stage(w, "", "", w.train, profile.k + 1),
        "knn-lm": lambda: pl.search_stage(w, "", "", 2 * e, max(profile.knn_k_grid),
                                          temperatures=grid),
        "base0 logprobs": lambda: pl.forward_stage(w, "", "", w.bases[0], 2 * e),
        "base1 logprobs": lambda: pl.forward_stage(w, "", "", w.bases[1], 2 * e),
        "train": lambda: pl.train_stage(w, "", "", w.memdec, TRAIN_STEPS, 1, 0),
    }
    return work[stage]().seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="colab")
    parser.add_argument("--scales", type=int, nargs=2, default=[2048, 4096])
    parser.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            root = Path(tmp) / str(scale)
            root.mkdir()
            rows += measure(args.stages, scale, root, args.profile)
    add_estimates(rows, args.profile)
    print_tables(rows, args.profile, args.scales)


def add_estimates(rows: list[dict], profile: str) -> None:
    """Each row's `estimate`: the plan's seconds for that work, at the FLOP rate the keys stage
    of the same scale reached (this CPU's quick benchmark where keys were not run)."""
    for r in rows:
        keys = next((k for k in rows if k["stage"] == "keys" and k["scale"] == r["scale"]), None)
        spec = calibrated_spec(keys, profile) if keys else specs.cpu_spec()
        r["estimate"] = model_estimate(r["stage"], r["scale"], profile, spec)


def print_tables(rows: list[dict], profile: str, scales: list[int]) -> None:

    gpu = any(r["gpu_mb"] for r in rows)
    print(f"\n## Measured at {scales[0]:,} and {scales[1]:,} datastore tokens (this machine)\n")
    print("| stage | tokens | seconds | plan's estimate (s)* | peak host MB (growth) | "
          + ("peak GPU MB | " if gpu else "") + "disk MB |")
    print("|---|---|---|---|---|" + ("---|" if gpu else "") + "---|")
    for r in rows:
        gpu_col = f"{r['gpu_mb']:.0f} | " if gpu else ""
        print(f"| {r['stage']} | {r['scale']:,} | {r['seconds']:.1f} | {r['estimate']:.1f} | "
              f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['before_mb']:.0f}) | {gpu_col}"
              f"{r['disk_mb']:.1f} |")
    print("\n*the plan's cost model for the same work, at the FLOP rate the keys stage reached "
          "on this machine")
    p = load_profile(profile)
    plan = pl.make_plan(p, specs.T4)
    print("\n## Growth between the scales, and the full stage projected on a T4\n")
    print("| stage | time x | host growth x | disk x | plan stage | T4 minutes | GPU GB | "
          "host GB | disk GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        a, b = (next(r for r in rows if r["stage"] == stage and r["scale"] == s) for s in scales)
        full = next(s for s in plan.stages if s.name.startswith(PLAN_NAMES[stage]))
        ratio = lambda key: f"{b[key] / a[key]:.2f}" if a[key] > 0.01 else "-"  # noqa: E731
        grow = [(r["peak_mb"] - r["before_mb"]) for r in (a, b)]
        print(f"| {stage} | {ratio('seconds')} | {grow[1] / max(grow[0], 1):.2f} | "
              f"{ratio('disk_mb')} | {full.name} | {full.seconds / 60:.1f} | "
              f"{full.gpu_bytes / 1e9:.1f} | {full.host_bytes / 1e9:.1f} | "
              f"{full.disk_bytes / 1e9:.2f} |")
    print(f"\n## Projected: profile {profile!r} at full scale on a T4\n")
    print(pl.format_plan(plan, p.budget()))
    print("\nAssumptions: T4 fp16 tensor-core peak 65 TFLOPS, 35% of it for inference matmuls and "
          "search, 20% for training; memory bandwidth 320 GB/s; 15 GB of GPU memory, batches sized "
          "to 90% of it; exact search adds the top-k and re-rank memory traffic; host-side rates in memdec_helpers/planning/costs.py (RATES). Disk and memory follow "
          "the artifact formats and runtime/batching.py's per-window estimates; the measured growth between "
          "the two scales checks that they grow as projected.")


if __name__ == "__main__":
    main()
