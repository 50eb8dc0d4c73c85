"""Training the Memory Decoder data-parallel on several GPUs (or CPU processes): torchrun + DDP.

    torchrun --nproc_per_node=4 -m memdec_helpers.cli.torchrun --profile gpu

Rank 0 builds (or reuses) the corpus, datastore, index and kNN targets while the others wait;
then every process trains on its share of each batch (DistributedDataParallel averages the
gradients, so a step equals the single-process step with the same global batch) and rank 0
writes the run to `artifacts/<profile>/memdec`, where lesson 03 finds and reuses it.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch.distributed as dist

from .. import pipeline as P
from ..runtime.devices import resolve_device
from ..runtime.distributed import barrier, check_batch_split, init_from_env, world


def main(argv: list[str] | None = None) -> None:
    """Build the inputs on rank 0, then train on every process (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="gpu", help="tiny | cpu | colab | gpu | a YAML path")
    args = parser.parse_args(argv)
    profile = P.setup(args.profile, verbose=int(os.environ.get("RANK", "0")) == 0)
    init_from_env(resolve_device(profile.device).type)
    rank, size = world()
    check_batch_split(profile.train_batch_size)
    if rank == 0:  # everything training reads, built once
        P.targets(profile)
        P.validation_targets(profile)
        P.base_logprobs(profile, "validation")
    barrier()
    model, history = P.memory_decoder(profile, progress=rank == 0)
    if rank == 0:
        print(f"trained on {size} process(es): {len(history['steps'])} steps, run in "
              f"{P.memdec_dir(profile)}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
