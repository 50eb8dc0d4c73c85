"""The search index on disk: a faiss index file over a datastore's keys, with its manifest; or,
on a GPU that holds the keys, exact torch search over the datastore itself (nothing saved)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..core.search import TorchFlatIndex
from ..profiles import Profile
from ..runtime.search import (_check_index_knobs, _ivf, as_faiss, check_datastore,
                              make_faiss_index, search_device, set_nprobe)
from .recipes import index_recipe
from .store import (atomic_path, clear_stage, read_manifest, stage_dir, stage_is_current,
                    stage_lock, write_manifest)


INDEX_FILE = "index.faiss"


@dataclass
class Index:
    """A searchable index over a datastore and where it came from: a saved faiss index with the
    manifest of the stage that made it, or exact torch search over the datastore's own keys
    (nothing saved). `identity` is what every search result built from it records."""

    faiss: Any  # a faiss index, or a TorchFlatIndex (the same d, ntotal and search(x, k))
    manifest: dict | None  # None when the folder has no manifest (a bare index file)
    path: Path | None
    datastore_key: str | None = None  # the recipe key of the datastore it searches
    nprobe: int | None = None  # lists searched (IVF), as asked for

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    @property
    def d(self) -> int:
        return int(self.faiss.d)

    @property
    def identity(self) -> str:
        return index_identity(self)

    def set_nprobe(self, nprobe: int) -> None:
        """Search the `nprobe` nearest lists (IVF; clamped to nlist); no-op for exact search."""
        set_nprobe(self.faiss, nprobe)
        self.nprobe = int(nprobe) if _ivf(self.faiss) is not None else None

    def release(self) -> None:
        """Free exact search's device copy of the keys (the next search copies them again)."""
        if isinstance(self.faiss, TorchFlatIndex):
            self.faiss.release()


def build_index(profile: Profile, datastore: Any, *, progress: bool = True,
                stage: str = "index") -> Index:
    """Build (or reuse, when its manifest matches) the faiss index of the datastore's keys,
    saved atomically as `index.faiss` in the folder of its recipe (labelled `stage`) with its
    manifest. On a GPU that holds the keys (search_device), exact torch search over them
    instead: nothing saved."""
    n, d = check_datastore(datastore)
    key = datastore.manifest["config_hash"]
    device = search_device(profile, n, d)
    if device is not None:  # the datastore's keys are the index
        return Index(TorchFlatIndex(datastore.keys, device, identity=key), None, None, key)
    _check_index_knobs(profile, n, d)
    recipe = replace(index_recipe(profile, key), label=stage)
    directory = stage_dir(profile, recipe.folder)
    with stage_lock(directory):
        if stage_is_current(directory, recipe.config()):
            index = load_index(directory)
        else:
            index = _make_and_save(profile, datastore.keys, directory, recipe.config(), progress)
    index.datastore_key = key
    index.set_nprobe(profile.nprobe)
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
    manifest = read_manifest(path.parent)
    key = manifest["config"]["upstream"].get("datastore") if manifest else None
    return Index(index, manifest, path, key)


def index_identity(index: Any) -> str:
    """What a search's results depend on, the same string recipes.search_identity computes from
    the profile alone: exact search (torch, or a faiss flat index) is "exact:<datastore key>",
    whatever the device; an approximate index is "<its recipe key>:nprobe=<nprobe>"."""
    raw = as_faiss(index)
    datastore_key = getattr(index, "datastore_key", None)
    if isinstance(raw, TorchFlatIndex):
        return f"exact:{raw.identity or datastore_key}"
    ivf = _ivf(raw)
    if ivf is None:  # flat: exact over its keys (a bare index: known by its shape only)
        return f"exact:{datastore_key or f'{type(raw).__name__}-{raw.ntotal}x{raw.d}'}"
    manifest = getattr(index, "manifest", None)
    nprobe = getattr(index, "nprobe", None) or int(ivf.nprobe)
    return f"{manifest['config_hash'] if manifest else 'unsaved'}:nprobe={nprobe}"


def searched_with(index: Any) -> str:
    """How an index searches, in words (recorded in the manifests of what it built)."""
    raw = as_faiss(index)
    if isinstance(raw, TorchFlatIndex):
        return f"exact torch search on {raw.device.type}"
    return f"faiss {type(raw).__name__}"
