"""Jobs in a pool of single-threaded processes: on a CPU, several small trainings side by side
use the cores better than one process with many small matrices."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..progress import progress_bar


def _one_thread() -> None:
    """Workers compute with one thread each (torch and faiss's OpenMP): two workers with two
    threads each on two cores spin-wait on each other and run many times slower."""
    import faiss

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


def run_in_workers(job: Callable[..., Any], arguments: Sequence[tuple], workers: int,
                   desc: str = "jobs") -> list[Any]:
    """`job(*args)` for every args of `arguments`, `workers` at a time in spawned processes of
    one thread each (`job` must be importable by name); their results, in order. A worker's
    error is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(job, *args) for args in arguments]
        return [future.result() for future in progress_bar(futures, desc=desc, leave=False)]
