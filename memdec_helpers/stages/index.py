"""The search index on disk: a faiss index file over a datastore's keys, with its manifest; or,
on a GPU that holds the keys, exact torch search over the datastore itself (nothing saved)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..core.search import TorchFlatIndex
from ..profiles import Profile
from ..runtime.search import (_check_index_knobs, _ivf, as_faiss, check_datastore,
                              make_faiss_index, search_device, set_nprobe)
from .store import (atomic_path, clear_stage, read_manifest, stage_dir, stage_is_current,
                    stage_lock, write_manifest)


INDEX_FILE = "index.faiss"


@dataclass
class Index:
    """A searchable index and where it came from: a saved faiss index with the manifest of the
    stage that made it (what the targets stage records as the identity of the index it
    searched), or exact torch search over the datastore's own keys (nothing saved: no manifest
    or path; its identity is the datastore's)."""

    faiss: Any  # a faiss index, or a TorchFlatIndex (the same d, ntotal and search(x, k))
    manifest: dict | None  # None when the folder has no manifest (a bare index file)
    path: Path | None

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    @property
    def d(self) -> int:
        return int(self.faiss.d)

    def release(self) -> None:
        """Free exact search's device copy of the keys (the next search copies them again)."""
        if isinstance(self.faiss, TorchFlatIndex):
            self.faiss.release()


def index_config(profile: Profile, datastore: Any) -> dict[str, Any]:
    """Everything the index file depends on: the datastore's identity and the relevant knobs."""
    n, d = datastore.keys.shape
    config = {"datastore": datastore.manifest["config_hash"], "n": int(n), "dim": int(d),
              "index_type": profile.index_type}
    if profile.index_type != "flat":
        config.update(ivf_nlist=profile.ivf_nlist, index_train_size=profile.index_train_size,
                      seed=profile.seed)
    if profile.index_type == "ivfpq":
        config["pq_code_bytes"] = profile.pq_code_bytes
    return config


def build_index(profile: Profile, datastore: Any, progress: bool = True,
                stage: str = "index") -> Index:
    """Build (or reuse, when its manifest matches) the faiss index of the datastore's keys,
    saved atomically as `<artifacts>/<profile>/<stage>/index.faiss` with its manifest. On a GPU
    that holds the keys (search_device), exact torch search over them instead: nothing saved."""
    n, d = check_datastore(datastore)
    device = search_device(profile, n, d)
    if device is not None:  # the datastore's keys are the index
        return Index(TorchFlatIndex(datastore.keys, device,
                                    identity=datastore.manifest["config_hash"]), None, None)
    _check_index_knobs(profile, n, d)
    config = index_config(profile, datastore)
    directory = stage_dir(profile, stage)
    with stage_lock(directory):
        if stage_is_current(directory, config):
            index = load_index(directory)
        else:
            index = _make_and_save(profile, datastore.keys, directory, config, progress)
    set_nprobe(index, profile.nprobe)
    return index


def _make_and_save(profile: Profile, keys: np.ndarray, directory: Path, config: dict,
                   progress: bool) -> Index:
    """A fresh index of `keys`, its file written atomically, then its manifest."""
    clear_stage(directory)
    index = make_faiss_index(profile, keys, progress)
    with atomic_path(directory / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    ivf = _ivf(index)
    write_manifest(directory, config, ntotal=int(index.ntotal), dim=keys.shape[1],
                   faiss_type=type(index).__name__, nlist=ivf.nlist if ivf else None,
                   faiss_version=faiss.__version__)
    return Index(index, read_manifest(directory), directory / INDEX_FILE)


def load_index(path: str | Path) -> Index:
    """Read a faiss index (file, or a stage folder holding index.faiss); corrupt -> ValueError."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_FILE
    if not path.is_file():
        raise ValueError(f"no index at {path}; build it first with build_index(profile, datastore)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise ValueError(
            f"the index file {path} is corrupted or truncated ({str(err).splitlines()[-1][:200]});"
            f" delete the folder {path.parent} and rebuild it with build_index"
        ) from None
    return Index(index, read_manifest(path.parent), path)


def index_identity(index: Any) -> dict[str, Any]:
    """What a search result depends on: the index's stage manifest hash (for an `Index` from
    build_index/load_index; for exact torch search, the datastore's), its type, size and nprobe."""
    manifest = index.manifest if isinstance(index, Index) else None
    index = as_faiss(index)
    if isinstance(index, TorchFlatIndex):
        return {"index": index.identity, "faiss_type": "exact", "d": index.d,
                "ntotal": index.ntotal, "nprobe": None}
    ivf = _ivf(index)
    return {"index": manifest["config_hash"] if manifest else None,
            # the type the manifest recorded at build time: a fresh flat index is a faiss
            # IndexFlat, the same one read back an IndexFlatL2, and both must be one identity
            "faiss_type": manifest["faiss_type"] if manifest else type(index).__name__,
            "d": int(index.d), "ntotal": int(index.ntotal),
            "nprobe": int(ivf.nprobe) if ivf is not None else None}
