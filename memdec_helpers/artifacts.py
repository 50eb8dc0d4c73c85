"""Artifacts on disk: one folder per stage, a manifest that says what config made it, atomic writes.

Layout: `<artifacts_dir>/<profile>/<stage>/`. A stage is complete only when its
`manifest.json` exists (it is written last, atomically); a manifest whose config hash differs
from the current config means "rebuild", never "reuse".
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MANIFEST = "manifest.json"
PROGRESS = ".progress.json"  # how far an unfinished streaming build got (datastore, targets)


def project_root() -> Path | None:
    """The course repository this package is checked out in (None for a plain pip install)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").exists() else None


def artifacts_root(artifacts_dir: str) -> Path:
    """A relative `artifacts_dir` is taken from the repository root when there is one (so the
    notebooks, the batch runner and nbval share one cache), else from the working directory;
    the environment variable MEMDEC_ARTIFACTS overrides a relative one."""
    path = Path(artifacts_dir)
    if path.is_absolute():
        return path
    if os.environ.get("MEMDEC_ARTIFACTS"):
        return Path(os.environ["MEMDEC_ARTIFACTS"])
    return (project_root() or Path.cwd()) / path


def check_stage_name(name: Any, what: str = "stage") -> None:
    """`name` becomes a folder under the profile's artifacts: a non-empty plain name (no path
    separators, no leading dot), else ValueError naming the argument `what`."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"{what}={name!r} must be a plain folder name (not empty, no path "
                         "separators, no leading dot), e.g. 'validation'")


def stage_dir(profile: Any, stage: str) -> Path:
    """`<artifacts_dir>/<profile name>/<stage>`, created if missing."""
    path = artifacts_root(profile.artifacts_dir) / profile.name / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def array_hash(array: np.ndarray) -> str:
    """A short content hash of an array (shape and dtype included): an input's identity in manifests."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The stage's manifest, or None if there is none. A corrupted one raises ValueError."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"manifest {path} is corrupted ({err}); delete the folder {path.parent} to rebuild it"
        ) from None
    if not isinstance(data, dict) or "config_hash" not in data:
        raise ValueError(f"manifest {path} is malformed; delete {path.parent} to rebuild it")
    return data


def write_manifest(directory: str | os.PathLike, config: dict[str, Any], **info: Any) -> dict:
    """Record config, its hash and the sizes of the stage's files; written last, atomically."""
    directory = Path(directory)
    files = {
        p.name: p.stat().st_size
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {
        "config": config,
        "config_hash": config_hash(config),
        "files": files,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        **info,
    }
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def stage_is_current(directory: str | os.PathLike, config: dict[str, Any]) -> bool:
    """True if the stage was completed with this exact config and its files are intact."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None or manifest["config_hash"] != config_hash(config):
        return False
    for name, size in manifest.get("files", {}).items():
        path = directory / name
        if not path.exists() or path.stat().st_size != size:
            raise ValueError(
                f"{path} is missing or truncated (expected {size} bytes); "
                f"delete the folder {directory} to rebuild it"
            )
    return True


def clear_stage(directory: str | os.PathLike) -> None:
    """Remove a stale stage's manifest first (so nothing looks complete), then its files."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if manifest.exists():
        manifest.unlink()
    for p in directory.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def resume_point(directory: str | os.PathLike, expected: dict[str, Any],
                 part_sizes: dict[str, int], counter: str) -> int:
    """Where an interrupted build continues: `counter` of its progress file, if that file's
    `expected` fields match and every .part file has its full size; else clear the stage, 0."""
    directory = Path(directory)
    try:
        state = json.loads((directory / PROGRESS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = None
    parts_ok = all((directory / name).exists() and (directory / name).stat().st_size == size
                   for name, size in part_sizes.items())
    if isinstance(state, dict) and parts_ok and all(state.get(k) == v for k, v in expected.items()):
        return int(state[counter])
    clear_stage(directory)
    return 0


def open_memmap(path: str | os.PathLike, dtype: Any, shape: tuple[int, ...], mode: str = "r"):
    """A raw memmap whose file size is checked against `shape` first (truncation -> ValueError)."""
    path = Path(path)
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if mode == "r":
        actual = path.stat().st_size if path.exists() else -1
        if actual != expected:
            raise ValueError(
                f"{path} has {actual} bytes but shape {shape} of {np.dtype(dtype)} needs "
                f"{expected}: the file is truncated or corrupted; delete its folder to rebuild it"
            )
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape)


def record_results(profile: Any, name: str, data: dict[str, Any]) -> Path:
    """Save a lesson's headline results (JSON) where the batch runner will collect them."""
    path = stage_dir(profile, "results") / f"{name}.json"
    atomic_write_json(path, data)
    return path


def load_results(profile: Any) -> dict[str, Any]:
    directory = stage_dir(profile, "results")
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}
