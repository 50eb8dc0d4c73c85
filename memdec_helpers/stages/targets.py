"""Training targets on disk: the sparse top-m kNN distribution of every datastore position
(core/targets.py drops the query's own entry by position), and the cached neighbours they can
be cut from without another search."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.hashing import array_hash
from ..core.targets import drop_self, sparse_targets
from ..profiles import Profile
from ..progress import progress_bar
from ..runtime.search import search
from .index import index_identity, searched_with
from .recipes import Recipe, neighbours_recipe, targets_recipe
from .store import (check_stage_name, open_memmap, read_manifest, stage_dir, stage_is_current,
                    stage_lock)
from .writer import StreamedWriter

CHUNK = 8192  # queries searched and written per step (a resume restarts at a chunk boundary)


@dataclass
class Targets:
    """A finished targets stage: sparse top-m p_kNN per position, as read-only memmaps."""

    path: Path
    ids: np.ndarray  # [N, m] int32
    probs: np.ndarray  # [N, m] float16, rows sum to 1 (renormalized top-m)
    mass: np.ndarray  # [N] float16, p_kNN mass of the top-m before renormalization
    manifest: dict

    def __len__(self) -> int:
        return len(self.ids)


def load_targets(path: str | Path) -> Targets:
    """Open a finished targets folder (size-checked memmaps); unfinished -> ValueError."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"{path} holds no finished targets (no manifest.json); build them first")
    n, m = manifest["n"], manifest["m"]
    return Targets(path, open_memmap(path / "ids.i32", np.int32, (n, m)),
                   open_memmap(path / "probs.f16", np.float16, (n, m)),
                   open_memmap(path / "mass.f16", np.float16, (n,)), manifest)


def mean_retained_mass(targets: Targets) -> float:
    """Average share of p_kNN kept by the top-m truncation."""
    return float(np.mean(targets.mass, dtype=np.float64))


def build_targets(profile: Profile, datastore: Any, index: Any, *, progress: bool = True,
                  stage: str = "targets", neighbours: Neighbours | None = None,
                  recipe: Recipe | None = None) -> Targets:
    """Targets for every datastore position (self excluded by position); resumable; cached in
    the folder of `recipe` (default: the targets recipe of this datastore and index, labelled
    `stage`). With `neighbours` (a search of every position with more than k + 1 neighbours,
    see build_neighbours) no search is run: any k, τ and m is a slice and a re-weighting of it."""
    if recipe is None:
        recipe = replace(targets_recipe(profile, datastore.manifest["config_hash"],
                                        index_identity(index)), label=stage)
    return _build(profile, recipe, datastore.keys, index, datastore.vals, exclude_self=True,
                  progress=progress, neighbours=neighbours)


@dataclass
class Neighbours:
    """The nearest datastore rows of every datastore position, self included, nearest first."""

    distances: np.ndarray  # [N, K] float32
    rows: np.ndarray  # [N, K] int32


NEIGHBOUR_FILES = ("distances.f32", "rows.i32")


def build_neighbours(profile: Profile, datastore: Any, index: Any, k: int, *,
                     progress: bool = True, stage: str | None = None) -> Neighbours:
    """Search every datastore position once for its `k` nearest rows (memmaps, cached, resumable
    after a kill): the training targets of every smaller k and every τ come from it without
    another search."""
    n = len(datastore.vals)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} neighbours must be in [1, {n}] (the datastore's size)")
    recipe = neighbours_recipe(datastore.manifest["config_hash"], index_identity(index), k)
    directory = stage_dir(profile, replace(recipe, label=stage or recipe.label).folder)
    with stage_lock(directory):
        if not stage_is_current(directory, recipe.config()):
            writer = StreamedWriter(directory, recipe.config(),
                                    {"distances.f32": (np.float32, (n, k)),
                                     "rows.i32": (np.int32, (n, k))}, "rows_done", {"chunk": CHUNK})
            done = writer.start()
            for lo in progress_bar(range(done, n, CHUNK), desc="neighbours", disable=not progress,
                                   initial=done // CHUNK, total=-(-n // CHUNK)):
                hi = min(lo + CHUNK, n)
                d, rows = search(index, datastore.keys[lo:hi], k)  # [b, k]
                writer["distances.f32"][lo:hi], writer["rows.i32"][lo:hi] = d, rows
                writer.commit(hi)
            writer.finish(n=n, k=k, searched_with=searched_with(index))
        return Neighbours(open_memmap(directory / "distances.f32", np.float32, (n, k)),
                          open_memmap(directory / "rows.i32", np.int32, (n, k)))


def build_eval_targets(profile: Profile, index: Any, datastore_vals: Any, query_keys: np.ndarray,
                       *, name: str, progress: bool = False,
                       recipe: Recipe | None = None) -> Targets:
    """Targets for held-out queries (e.g. validation keys), to measure KL(p_kNN || p_Mem) there.

    No self-exclusion: the queries are not datastore positions. `datastore_vals` is the
    datastore (identified by its recipe key) or its vals array (identified by content); without
    a `recipe` the queries are identified by content and the stage is labelled `targets-<name>`."""
    check_stage_name(name, "name")
    vals = getattr(datastore_vals, "vals", datastore_vals)
    if recipe is None:
        manifest = getattr(datastore_vals, "manifest", None)
        identity = manifest["config_hash"] if manifest else array_hash(np.asarray(vals))
        recipe = Recipe("targets", f"targets-{name}",
                        profile.subset("k", "knn_temperature", "target_top_m"),
                        {"datastore": identity, "search": index_identity(index),
                         "queries": array_hash(np.asarray(query_keys))})
    return _build(profile, recipe, query_keys, index, vals, exclude_self=False, progress=progress)


def _check_build_args(profile: Profile, queries: Any, index: Any, vals: Any,
                      exclude_self: bool) -> None:
    """ValueError for inputs that cannot give targets, before any file is touched (the knobs
    themselves were checked when the profile was made)."""
    k = profile.k
    if queries.ndim != 2 or len(queries) == 0:
        raise ValueError(f"query keys must be a non-empty [Q, d] array; got {tuple(queries.shape)}")
    if queries.shape[1] != index.d or len(vals) != index.ntotal:
        raise ValueError(
            f"the index (ntotal={index.ntotal}, d={index.d}) does not belong to this datastore "
            f"(N={len(vals)}, queries {tuple(queries.shape)}); rebuild it with build_index"
        )
    if k + int(exclude_self) > index.ntotal:
        raise ValueError(f"k={k} is larger than the datastore ({index.ntotal} keys); "
                         f"use k <= {index.ntotal - int(exclude_self)}")


def _build(profile: Profile, recipe: Recipe, queries: np.ndarray, index: Any, vals: np.ndarray, *,
           exclude_self: bool, progress: bool, neighbours: Neighbours | None = None) -> Targets:
    """Check, then (one process at a time) reuse or build the targets of `recipe`."""
    _check_build_args(profile, queries, index, vals, exclude_self)
    wanted = profile.k + int(exclude_self)
    if neighbours is not None and (neighbours.rows.shape != (len(queries), neighbours.rows.shape[1])
                                   or neighbours.rows.shape[1] < wanted):
        raise ValueError(f"the cached neighbours {neighbours.rows.shape} do not cover the "
                         f"{len(queries)} queries with k + 1 = {wanted} neighbours each")

    def nearest(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """[b, wanted] distances and rows of queries lo..hi, nearest first."""
        if neighbours is None:
            return search(index, queries[lo:hi], wanted)
        return (np.asarray(neighbours.distances[lo:hi, :wanted]),
                np.asarray(neighbours.rows[lo:hi, :wanted], dtype=np.int64))

    directory = stage_dir(profile, recipe.folder)
    with stage_lock(directory):
        if not stage_is_current(directory, recipe.config()):
            _write_targets(profile, directory, recipe.config(), nearest, n=len(queries),
                           vals=np.asarray(vals), exclude_self=exclude_self, progress=progress,
                           how=searched_with(index))
        return load_targets(directory)


def _write_targets(profile: Profile, directory: Path, config: dict, nearest: Any, *, n: int,
                   vals: np.ndarray, exclude_self: bool, progress: bool, how: str) -> None:
    """Search (`nearest(lo, hi)`), truncate and write the targets chunk by chunk with the
    streamed writer (a killed build resumes at its last chunk)."""
    m = profile.target_top_m
    writer = StreamedWriter(directory, config, {"ids.i32": (np.int32, (n, m)),
                                                "probs.f16": (np.float16, (n, m)),
                                                "mass.f16": (np.float16, (n,))},
                            "rows_done", {"chunk": CHUNK})
    done = writer.start()
    for lo in progress_bar(range(done, n, CHUNK), desc="targets", disable=not progress,
                           initial=done // CHUNK, total=-(-n // CHUNK)):
        hi = min(lo + CHUNK, n)
        distances, indices = nearest(lo, hi)  # [b, k(+1)]
        if exclude_self:
            distances, indices = drop_self(distances, indices, np.arange(lo, hi))  # [b, k]
        (writer["ids.i32"][lo:hi], writer["probs.f16"][lo:hi],
         writer["mass.f16"][lo:hi]) = sparse_targets(distances, vals[indices],
                                                     profile.knn_temperature, m)
        writer.commit(hi)
    retained = float(np.mean(writer["mass.f16"], dtype=np.float64))
    writer.finish(n=n, m=m, mean_retained_mass=retained, searched_with=how)
