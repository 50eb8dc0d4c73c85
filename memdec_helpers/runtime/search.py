"""Nearest-neighbour search over datastore keys: faiss (squared L2 on the raw keys) or exact
torch search on a GPU.

`flat` is exact search (the small profiles); `ivf_flat` searches only the `nprobe` nearest of
`nlist` k-means cells; `ivfpq` also compresses every key to `pq_code_bytes` bytes (the `gpu`
profile: 4096 lists, 64-byte codes, nprobe 32 as in kNN-LM's paper; the official Memory Decoder
scripts use 32-byte codes and nprobe 8). Keys are never normalized: kNN-LM and Memory Decoder use
plain squared Euclidean distance. On a GPU that holds the fp16 keys, exact torch search
(core/search.py) replaces faiss whatever `index_type` says.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch  # noqa: F401  before faiss: loaded after faiss's OpenMP, torch and faiss
import faiss  # interleaved (kNN-LM decoding) ran 2x slower on 2 cores (benchmarks/speed.py)

from ..core.search import TorchFlatIndex, key_bytes
from ..profiles import Profile
from ..progress import progress_bar
from .devices import resolve_device, total_device_memory
ADD_CHUNK = 65_536  # keys converted to float32 and added per step (bounded memory)
MIN_POINTS_PER_LIST = 39  # faiss's k-means warns below 39 training points per centroid
PQ_CENTROIDS = 256  # 8-bit sub-quantizers: 256 codewords each, need >= 256 training keys


GPU_KEYS_SHARE = 0.5  # search_device auto: the fp16 keys may take this share of the GPU's memory


def as_faiss(index: Any) -> Any:
    """The search object of a stage's `Index` (its `.faiss`: a faiss index or a TorchFlatIndex),
    or `index` itself (an index made by make_index)."""
    return getattr(index, "faiss", index)


def check_datastore(datastore: Any) -> tuple[int, int]:
    """(N, d) of a datastore-like object; ValueError if keys/vals do not line up."""
    keys, vals = datastore.keys, datastore.vals
    if keys.ndim != 2 or vals.ndim != 1 or len(keys) != len(vals):
        raise ValueError(
            f"datastore keys must be [N, d] and vals [N]; got keys {tuple(keys.shape)} and vals "
            f"{tuple(vals.shape)} (rebuild the datastore)"
        )
    if len(keys) == 0:
        raise ValueError("datastore is empty (N = 0): build it from a non-empty corpus")
    return int(keys.shape[0]), int(keys.shape[1])


def effective_nlist(nlist: int, n_train: int) -> int:
    """nlist clamped so every k-means cell gets >= 39 training keys (faiss's own rule of thumb)."""
    return max(1, min(nlist, n_train // MIN_POINTS_PER_LIST))


def _check_index_knobs(profile: Profile, n: int, d: int) -> None:
    """ValueError for index knobs that cannot work with this datastore, before any work."""
    if profile.index_type != "ivfpq":
        return
    m = profile.pq_code_bytes
    if d % m != 0:
        raise ValueError(
            f"pq_code_bytes={m} must divide the key size d={d} (one 8-bit sub-quantizer per "
            f"byte, each over d/pq_code_bytes dimensions); use a divisor of {d} such as "
            f"{_divisors_near(d, m)}"
        )
    n_train = min(profile.index_train_size, n)
    if n_train < PQ_CENTROIDS:
        raise ValueError(
            f"ivfpq needs >= {PQ_CENTROIDS} training keys for its 8-bit codebooks but has "
            f"{n_train} (N={n}, index_train_size={profile.index_train_size}); use "
            "index_type='flat' or 'ivf_flat' for a datastore this small"
        )


def _divisors_near(d: int, m: int) -> list[int]:
    """Up to three divisors of d closest to m (suggestions for pq_code_bytes)."""
    divisors = [x for x in range(1, d + 1) if d % x == 0]
    return sorted(divisors, key=lambda x: abs(x - m))[:3]


def training_sample(keys: np.ndarray, size: int, seed: int) -> np.ndarray:
    """float32 [min(size, N), d]: a seeded random sample of keys (sorted rows: memmap-friendly)."""
    n = len(keys)
    if size >= n:
        return np.ascontiguousarray(keys, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(keys[rows], dtype=np.float32)


def factory_string(profile: Profile, d: int, n_train: int) -> str:
    """The faiss index_factory description of the profile's index (L2 metric)."""
    if profile.index_type == "flat":
        return "Flat"
    nlist = effective_nlist(profile.ivf_nlist, n_train)
    if nlist < profile.ivf_nlist:
        warnings.warn(
            f"ivf_nlist={profile.ivf_nlist} is too many lists for {n_train} training keys; "
            f"using nlist={nlist} (>= {MIN_POINTS_PER_LIST} keys per list)", stacklevel=3)
    if profile.index_type == "ivf_flat":
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{profile.pq_code_bytes}x8"


def quiet_pq_training(index: Any, n_train: int) -> None:
    """Below 39 training keys per codeword, faiss prints a warning per sub-quantizer
    (pq_code_bytes lines) on the C stderr, which passes the notebook's output and reaches the
    terminal of a batch run: one Python warning says it instead, and faiss is told to accept it."""
    enough = PQ_CENTROIDS * MIN_POINTS_PER_LIST
    if n_train < enough:
        warnings.warn(
            f"ivfpq's codebooks ({PQ_CENTROIDS} codewords each) are trained on {n_train} keys, "
            f"fewer than the {enough} faiss asks for: its distances are coarser (fine for a small "
            "test; raise index_train_size or max_train_tokens for a real run)", stacklevel=3)
        index.pq.cp.min_points_per_centroid = 1


def set_nprobe(index: Any, nprobe: int) -> None:
    """Search the `nprobe` nearest lists of an IVF index (clamped to nlist); no-op when flat."""
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = int(min(nprobe, ivf.nlist))


def _ivf(index: Any) -> Any:
    """The IVF part of a faiss index or `Index` (None for flat faiss indexes and torch search)."""
    index = as_faiss(index)
    return faiss.try_extract_index_ivf(index) if isinstance(index, faiss.Index) else None


def add_keys(index: Any, keys: np.ndarray, progress: bool) -> None:
    """Add all keys in float32 chunks, so the datastore is never held in float32 at once."""
    starts = range(0, len(keys), ADD_CHUNK)
    for start in progress_bar(starts, desc="index add", disable=not progress):
        index.add(np.ascontiguousarray(keys[start:start + ADD_CHUNK], dtype=np.float32))


def exact_search_fits(n: float, d: int, device_memory: float) -> bool:
    """Whether `n` fp16 keys of size `d` fit exact search on a device of `device_memory` bytes
    (GPU_KEYS_SHARE of it): the rule of `search_device: auto`, shared with the planner."""
    return key_bytes(n, d) <= GPU_KEYS_SHARE * device_memory


def search_device(profile: Profile, n: int, d: int) -> torch.device | None:
    """Where exact torch search runs, or None for faiss on the CPU: `search_device` cuda, or
    auto with CUDA and fp16 keys within GPU_KEYS_SHARE of the GPU's *total* memory. Decided
    from what the machine is, not from the moment's free memory, so two processes (or two
    lessons) always choose alike and a search's identity never flips."""
    choice = profile.search_device
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return None
    device = resolve_device("cuda")
    if choice == "auto" and not exact_search_fits(n, d, total_device_memory(device)):
        return None
    return device


def make_index(profile: Profile, keys: np.ndarray, progress: bool = False,
               identity: str | None = None) -> Any:
    """A searchable index over `keys` [N, d] as the profile describes (in memory): exact torch
    search on the GPU where it fits (keys copied on the first search; `identity` names what
    made them), else a trained, filled faiss index."""
    device = search_device(profile, *keys.shape)
    if device is not None:
        return TorchFlatIndex(keys, device, identity=identity)
    return make_faiss_index(profile, keys, progress)


def make_faiss_index(profile: Profile, keys: np.ndarray, progress: bool = False) -> Any:
    """A trained, filled faiss index over `keys` [N, d] as the profile describes (in memory)."""
    n, d = keys.shape
    _check_index_knobs(profile, n, d)
    n_train = min(profile.index_train_size, n)
    index = faiss.index_factory(d, factory_string(profile, d, n_train), faiss.METRIC_L2)
    if isinstance(index, faiss.IndexIVFPQ):
        index.do_polysemous_training = False  # index_factory turns it on; we never use it (slow)
        quiet_pq_training(index, n_train)
    if not index.is_trained:
        index.train(training_sample(keys, n_train, profile.seed))
    add_keys(index, keys, progress)
    set_nprobe(index, profile.nprobe)
    return index


def _as_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array-like or (CPU-copied) torch tensor."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def check_search_args(index: Any, queries: np.ndarray, k: int, batch_size: int) -> None:
    """ValueError (naming the argument and the fix) for queries/k that the index cannot serve."""
    if queries.ndim != 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty [Q, d] array; got shape {queries.shape}")
    if not np.issubdtype(queries.dtype, np.floating):
        raise ValueError(f"queries must be floating point keys; got dtype {queries.dtype}")
    if queries.shape[1] != index.d:
        raise ValueError(
            f"queries have key size {queries.shape[1]} but the index holds keys of size "
            f"{index.d} (index.d): the queries must come from the same model and key_layer as "
            "the datastore"
        )
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be an integer >= 1")
    if k > index.ntotal:
        raise ValueError(
            f"k={k} neighbours asked for but the index holds only index.ntotal={index.ntotal} "
            f"keys; use k <= {index.ntotal} or build a larger datastore"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")


def search(index: Any, queries: Any, k: int, batch_size: int = 4096,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k nearest keys of each query, batched: (squared-L2 float32 [Q, k], ids int64 [Q, k])."""
    queries, index = _as_numpy(queries), as_faiss(index)
    check_search_args(index, queries, k, batch_size)
    q = len(queries)
    distances = np.empty((q, k), dtype=np.float32)  # [Q, k]
    indices = np.empty((q, k), dtype=np.int64)  # [Q, k]
    for start in progress_bar(range(0, q, batch_size), desc="search", disable=not progress):
        batch = np.ascontiguousarray(queries[start:start + batch_size], dtype=np.float32)
        if not np.isfinite(batch).all():
            raise ValueError(
                f"queries[{start}:{start + len(batch)}] contain NaN or inf; the keys are broken "
                "(recompute them in float32 or rebuild the datastore)"
            )
        distances[start:start + len(batch)], indices[start:start + len(batch)] = index.search(
            batch, k)
    _search_again_with_more_lists(index, queries, k, distances, indices)
    _check_all_found(index, indices, k)
    return distances, indices


def _search_again_with_more_lists(index: Any, queries: np.ndarray, k: int,
                                  distances: np.ndarray, indices: np.ndarray) -> None:
    """IVF: a query whose `nprobe` nearest lists hold fewer than k keys gets -1 for the
    missing neighbours (a small datastore, k a large share of it: colab's k 1024 and nprobe 32
    on 4,000 keys in 102 lists). Those queries only are searched again, in place, with twice
    the lists until all are found (at most every list, an exact scan of the lists); every other
    query keeps the profile's nprobe. Deterministic: the same index and queries, the same
    neighbours."""
    ivf = _ivf(index)
    if ivf is None:
        return
    nprobe = ivf.nprobe
    try:
        rows = np.flatnonzero((indices < 0).any(axis=1))
        while len(rows) and ivf.nprobe < ivf.nlist:
            ivf.nprobe = min(2 * ivf.nprobe, ivf.nlist)
            batch = np.ascontiguousarray(queries[rows], dtype=np.float32)
            distances[rows], indices[rows] = index.search(batch, k)
            rows = rows[(indices[rows] < 0).any(axis=1)]
    finally:
        ivf.nprobe = nprobe


def _check_all_found(index: Any, indices: np.ndarray, k: int) -> None:
    """Neighbours still missing (-1) from an exact index, or from an IVF index after every list
    was searched: squared distances that overflow float32 (or NaN). Refuse them."""
    missing = indices < 0
    if missing.any():
        rows = int(missing.any(axis=1).sum())
        ivf = _ivf(index)
        where = ("an exact (flat) index (nprobe does not apply to it)" if ivf is None
                 else f"all {ivf.nlist} lists of an IVF index")
        raise ValueError(
            f"{rows} queries got fewer than k={k} neighbours from {where} of {index.ntotal} "
            "keys: keys or queries so large (or NaN) that their squared distances overflow "
            "float32; rebuild the datastore (delete its folder) and check the key layer's values")
