"""Data-parallel training primitives (torchrun + DistributedDataParallel): every process takes an
equal share of each batch and DDP averages the gradients, so a step equals the single-process
step with the same global batch. The torchrun entry point is cli/torchrun.py.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


WAIT = datetime.timedelta(hours=48)  # rank 0 may build the paper-scale targets meanwhile


def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) unless a process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device_type: str) -> None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...): nccl on
    GPUs, one per local rank; gloo on CPUs. No-op in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=WAIT)


def local_device(device: torch.device) -> torch.device:
    """This process's GPU under torchrun (cuda:LOCAL_RANK); `device` otherwise."""
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over the processes, in place (no-op in a single process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel when there are several processes."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def check_batch_split(batch_size: int) -> None:
    """Every process takes the same share of each batch: ValueError otherwise."""
    size = world()[1]
    if batch_size % size:
        raise ValueError(f"train_batch_size={batch_size} must be a multiple of the {size} "
                         "processes (each takes an equal share of every batch)")
