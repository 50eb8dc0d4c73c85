"""Device specs: what the time and memory estimates assume about a GPU (peak fp16 FLOP/s,
bandwidth, memory; the share of the peak reached: 35% for inference matmuls and search, 20% for
training, where optimizer, softmax and elementwise work are memory-bound and a Colab T4 throttles)
or this machine's CPU (a short matmul benchmark)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceSpec:
    """What the time and memory estimates assume about a device."""

    name: str
    peak_flops: float  # dense fp16 tensor-core FLOP/s (GPU) or measured float32 (CPU)
    bandwidth: float  # memory bytes/s
    memory: float  # accelerator bytes (0: the CPU, where the host holds everything)
    inference_efficiency: float = 0.35
    training_efficiency: float = 0.2


GPUS = {  # name fragment -> (peak fp16 dense FLOP/s, memory bandwidth, memory)
    "T4": (65e12, 320e9, 15.0e9), "L4": (121e12, 300e9, 22.5e9), "A10": (125e12, 600e9, 22.5e9),
    "V100": (125e12, 900e9, 16e9), "A100": (312e12, 1555e9, 40e9), "H100": (989e12, 3350e9, 80e9),
    "H200": (989e12, 4800e9, 141e9)}


T4 = DeviceSpec("Tesla T4", *GPUS["T4"])


def gpu_spec(name: str, memory: float) -> DeviceSpec:
    """The spec of a GPU by name (unknown ones get T4 throughput: a conservative plan)."""
    for fragment, (flops, bandwidth, _) in GPUS.items():
        if fragment in name:
            return DeviceSpec(name, flops, bandwidth, memory)
    return DeviceSpec(name, T4.peak_flops, T4.bandwidth, memory)


def cpu_spec() -> DeviceSpec:
    """This machine's CPU: float32 matmul throughput, the best of a few 1024² products (~0.1 s);
    models reach 70% of it in inference, 30% in training (benchmarks/scale.py measured these
    shares for GPT-2 small on 2 cores)."""
    import time

    import torch

    a = torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        torch.mm(a, a)
        best = min(best, time.perf_counter() - start)
    return DeviceSpec("CPU", 2 * 1024**3 / best, 10e9, 0.0, 0.7, 0.3)


def this_device(profile: Any) -> DeviceSpec:
    """The spec of the device the profile will run on."""
    from ..runtime.devices import device_name, resolve_device, total_device_memory

    device = resolve_device(profile.device)
    if device.type == "cuda":
        return gpu_spec(device_name(device), float(total_device_memory(device)))
    return cpu_spec()
