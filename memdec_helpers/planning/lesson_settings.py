"""Lesson 06's variants, derived from the profile (never sized by hand for one world).

Target k's are the profile's k and a wider vote, target τ's the profile's τ and the next flatter one
in its grid, datastore sizes are fractions of the training tokens, the kNN-LM grid spans powers of
4 up to 4 x the largest k of the profile's kNN-LM grid (so it shows what lies past that grid).
On `tiny` (k 64, τ 3, 80k tokens) they are the values the lesson's prose was written from.
The planner (`plan.ablation_stages`) costs the same settings the notebook runs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

BETAS = (0.0, 0.5, 1.0)  # the KL weight: plain CE, the paper's mix, pure imitation (a property of
# the method, not of a world; 0.25 and 0.75 fell between their neighbours on tiny, within the spread)
K_GRID_REACH = 4  # the kNN-LM grid goes this factor past the largest k of the profile's grid
TRAIN_FRACTIONS = (0.25, 0.5, 1.0)  # datastore sizes: shares of the training tokens
QUERY_FRACTION = 4  # the kNN-LM grid runs on 1/4 of the validation positions ...
MAX_QUERIES = 5000  # ... at most this many (a [queries, largest k] search is held in memory)
FLAT_TEMPERATURE = 100  # a τ far above any sensible one: the grid's top, x this / its bottom


@dataclass(frozen=True)
class AblationSettings:
    """What lesson 06 varies: β's, target k's and τ's, datastore sizes, the kNN-LM grid."""

    betas: tuple[float, ...]
    target_ks: tuple[int, ...]
    target_taus: tuple[float, ...]
    train_tokens: tuple[int, ...]
    k_grid: tuple[int, ...]
    temperature_grid: tuple[float, ...]
    queries: int


def target_ks(profile: Any, keys: int) -> tuple[int, ...]:
    """Two k's a factor 4 apart: the profile's k and the wider vote 4k, unless 4k passes the
    largest k the profile's kNN-LM grid tries, its neighbour cache (targets search k + 1) or
    the keys; then the cap and a quarter of it. (k/4 ranked like k on tiny: not trained.)"""
    cap = min(max(*profile.knn_k_grid, profile.k), keys - 1)
    if profile.neighbour_cache_k:
        cap = min(cap, profile.neighbour_cache_k - 1)
    top = max(1, min(4 * profile.k, cap))
    return tuple(sorted({max(1, top // 4), top}))


def target_taus(profile: Any) -> tuple[float, ...]:
    """The profile's τ and the next flatter τ of its τ grid (3τ past the grid's edge). (The
    sharper neighbour ranked like τ on tiny: not trained.)"""
    tau = float(profile.knn_temperature)
    grid = sorted({float(t) for t in profile.knn_temperature_grid} | {tau})
    i = grid.index(tau)
    above = grid[i + 1] if i + 1 < len(grid) else 3 * tau
    return (tau, above)


def knn_k_reach(profile: Any, target_ks: tuple[int, ...], keys: int) -> int:
    """The largest k of lesson 06's kNN-LM grid: K_GRID_REACH x the largest k of the profile's
    kNN-LM grid (and at least the largest target k), at most keys - 1."""
    return max(1, min(max(K_GRID_REACH * max(profile.knn_k_grid), *target_ks), keys - 1))


def k_grid(largest: int) -> tuple[int, ...]:
    """Powers of 4 from 1 up to `largest` (and `largest` itself)."""
    ks, k = [], 1
    while k < largest:
        ks.append(k)
        k *= 4
    return tuple(ks + [largest])


def temperature_grid(profile: Any) -> tuple[float, ...]:
    """The profile's τ grid (with its τ) and one τ far too flat, 100 x the grid's smallest."""
    grid = sorted({float(t) for t in profile.knn_temperature_grid} | {float(profile.knn_temperature)})
    flat = FLAT_TEMPERATURE * grid[0]
    return tuple(grid + ([flat] if flat > grid[-1] else []))


def ablation_settings(profile: Any, n_train: int, n_eval: int,
                      **overrides: Any) -> AblationSettings:
    """Lesson 06's settings for a profile whose (capped) splits hold `n_train` and
    `n_eval` tokens; `overrides` (a notebook's parameters, None = derived) replace them."""
    ks = target_ks(profile, n_train)
    sizes = sorted({max(int(n_train * f), 4 * max(ks)) for f in TRAIN_FRACTIONS if f < 1} | {n_train})
    derived = AblationSettings(
        betas=BETAS, target_ks=ks, target_taus=target_taus(profile),
        train_tokens=tuple(s for s in sizes if s <= n_train),
        k_grid=k_grid(knn_k_reach(profile, ks, n_train)), temperature_grid=temperature_grid(profile),
        queries=max(1, min(n_eval // QUERY_FRACTION, MAX_QUERIES)))
    names = {f.name for f in fields(AblationSettings)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown lesson 06 setting(s) {sorted(unknown)}: use {sorted(names)}")
    given = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in overrides.items()
             if v is not None}
    return replace(derived, **given)
