"""Devices, precision, seeding and memory: the one place that reads how much memory there is."""
from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto`/None -> cuda if available else cpu. Asking for cuda without it raises ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was asked for but CUDA is not available on this machine; "
            "use device='auto' or 'cpu' (or pick a GPU runtime in Colab)"
        )
    return device


def native_bf16(device: torch.device) -> bool:
    """True if the GPU computes bf16 natively (compute capability >= 8.0: Ampere and newer).

    `torch.cuda.is_bf16_supported()` also counts emulation, so it says True on a T4 (7.5),
    where bf16 is slow and attention may fall back to its memory-hungry kernel."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `device`: bf16 where native, else fp16 (trained with a
    GradScaler), on CUDA; None on CPU or for float32."""
    if device.type != "cuda" or dtype == "float32":
        return None
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return getattr(torch, dtype)


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """An autocast context on CUDA with `dtype`, or a no-op."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- memory ---------------------------------------------------------------------------------

DEVICE_SHARE = 0.9  # of the free GPU memory a stage may plan to use
HOST_SHARE = 0.5  # of the available host memory a CPU stage may plan to use


def total_device_memory(device: torch.device) -> int:
    """Bytes of memory a CUDA device has in all (0 elsewhere)."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(device).total_memory)


def device_name(device: torch.device) -> str:
    """The GPU's name (e.g. 'Tesla T4'), or 'CPU'."""
    return torch.cuda.get_device_properties(device).name if device.type == "cuda" else "CPU"


def available_bytes(device: torch.device) -> int:
    """What a stage may plan to use: free GPU memory (plus torch's cached blocks) on CUDA, a
    share of the host's available memory on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(DEVICE_SHARE * (free + cached))
    return int(HOST_SHARE * host_available_bytes())


def host_available_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); 8 GiB where it cannot be read."""
    return _meminfo("MemAvailable")


def host_total_bytes() -> int:
    """MemTotal from /proc/meminfo (Linux); 8 GiB where it cannot be read."""
    return _meminfo("MemTotal")


def _meminfo(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
