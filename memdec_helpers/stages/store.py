"""The artifacts store: one folder per stage, a manifest that says what config made it, atomic
writes, one writer at a time.

Layout: `<artifacts_dir>/<profile>/<stage>/`. A stage is complete only when its
`manifest.json` exists (it is written last, atomically); a manifest whose config hash differs
from the current config means "rebuild", never "reuse". One process at a time checks and builds
a stage (`stage_lock`, an OS file lock); a process that waited reuses what the other built.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..core.hashing import config_hash
from ..profiles import is_plain_name

try:
    import fcntl
except ImportError:  # Windows: no OS lock (one process per stage is then up to the user)
    fcntl = None
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"  # how far an unfinished streaming build got (datastore, targets)


HASH_LIMIT = 256 * 2**20  # files up to this size get a content hash, checked on load


def project_root() -> Path | None:
    """The course repository this package is checked out in (None for a plain pip install)."""
    root = Path(__file__).resolve().parents[2]
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
    if not is_plain_name(name):
        raise ValueError(f"{what}={name!r} must be a plain folder name (not empty, no path "
                         "separators, no leading dot), e.g. 'validation'")


def contained_path(root: Path, *names: str, what: str = "stage") -> Path:
    """`root/names...` with every name a plain folder name: a path that stays under `root`."""
    for name in names:
        check_stage_name(name, what)
    return root.joinpath(*names)


def stage_dir(profile: Any, *stage: str) -> Path:
    """`<artifacts_dir>/<profile name>/<stage...>`, created if missing; every part of the path
    is a plain name, so nothing is ever written outside the artifacts root."""
    if not stage:
        raise ValueError("stage_dir needs a stage name, e.g. stage_dir(profile, 'datastore')")
    profile_root = contained_path(artifacts_root(profile.artifacts_dir), profile.name,
                                  what="profile name")
    path = contained_path(profile_root, *stage)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def stage_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive OS lock on the stage `directory` while it is checked and built (one
    writer per stage). The lock file sits next to the folder, so clearing the stage keeps it;
    the OS drops the lock when its holder exits, even by SIGKILL."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a") as fh:
        if fcntl is None:
            yield
            return
        _acquire(fh, directory)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


LOCK_QUIET_S = 5.0  # a wait shorter than this (another process checking the stage) is not reported;
# MEMDEC_LOCK_QUIET_S overrides it (0: report every wait)


def _acquire(fh: Any, directory: Path) -> None:
    """Take the exclusive lock on `fh`; say so on stderr only when another process holds it for
    more than LOCK_QUIET_S seconds (a build, not a check)."""
    deadline = time.monotonic() + float(os.environ.get("MEMDEC_LOCK_QUIET_S", LOCK_QUIET_S))
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    print(f"waiting for another process that is building {directory} ...", file=sys.stderr, flush=True)
    fcntl.flock(fh, fcntl.LOCK_EX)


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


def file_digest(path: Path) -> str | None:
    """sha256 of a file up to HASH_LIMIT bytes (read in 1 MiB blocks); None for larger files,
    which the manifest checks by size only (hashing 100 GB of keys on every load is not cheap)."""
    if path.stat().st_size > HASH_LIMIT:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage_files(directory: Path) -> list[Path]:
    """The files a manifest vouches for: every visible top-level file but the manifest."""
    return [p for p in sorted(directory.iterdir())
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")]


def write_manifest(directory: str | os.PathLike, config: dict[str, Any], **info: Any) -> dict:
    """Record config, its hash, and the size and content hash of the stage's files; written
    last, atomically."""
    directory = Path(directory)
    files = _stage_files(directory)
    manifest = {
        "config": config,
        "config_hash": config_hash(config),
        "files": {p.name: p.stat().st_size for p in files},
        "file_sha256": {p.name: digest for p in files if (digest := file_digest(p)) is not None},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    clash = sorted(set(manifest) & set(info))
    if clash:
        raise ValueError(f"write_manifest: {clash} are the manifest's own fields; rename them")
    manifest.update(info)
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def _damaged(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path} {problem}; delete the folder {path.parent} to rebuild it")


STATS = {"manifests": 0, "verified": 0, "hashed_bytes": 0, "seconds": 0.0}  # cache checks
_VERIFIED: set[tuple[str, str, str]] = set()  # (folder, config hash, created): checked already


def stage_is_current(directory: str | os.PathLike, config: dict[str, Any],
                     verify: bool = True) -> bool:
    """True if the stage was completed with this exact config; with `verify` (the caller is about
    to read its files) also that they are intact — sizes, and contents where the manifest holds
    a hash — once per process and stage. A damaged file raises ValueError."""
    start = time.perf_counter()
    try:
        directory = Path(directory)
        manifest = read_manifest(directory)
        STATS["manifests"] += 1
        if manifest is None or manifest["config_hash"] != config_hash(config):
            return False
        if verify:
            verify_stage(directory, manifest)
        return True
    finally:
        STATS["seconds"] += time.perf_counter() - start


def verify_stage(directory: Path, manifest: dict[str, Any]) -> None:
    """ValueError naming the file if a file the manifest vouches for is missing, truncated or
    changed; each stage is verified once per process (its files are written once, atomically)."""
    memo = (str(directory), manifest["config_hash"], str(manifest.get("created")))
    if memo in _VERIFIED:
        return
    for name, size in manifest.get("files", {}).items():
        path = directory / name
        if not path.exists() or path.stat().st_size != size:
            raise _damaged(path, f"is missing or truncated (expected {size} bytes)")
    for name, digest in manifest.get("file_sha256", {}).items():
        STATS["hashed_bytes"] += (directory / name).stat().st_size
        if file_digest(directory / name) != digest:
            raise _damaged(directory / name, "was changed after it was written (its content "
                           "hash differs from the manifest's)")
    STATS["verified"] += 1
    _VERIFIED.add(memo)


def clear_stage(directory: str | os.PathLike) -> None:
    """Remove a stale stage's manifest first (so nothing looks complete), then its files."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if manifest.exists():
        manifest.unlink()
    for p in directory.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def cached_array(directory: str | os.PathLike, config: dict[str, Any],
                 compute: Callable[[], np.ndarray], filename: str = "array.npy",
                 **info: Any) -> np.ndarray:
    """The array saved in the stage `directory` when its manifest matches `config`; else
    `compute()`, saved with a manifest of `config` and `info` (an info value may be a function
    of the array), under the stage's lock."""
    directory = Path(directory)
    with stage_lock(directory):
        if stage_is_current(directory, config):
            return np.load(directory / filename)
        values = compute()
        clear_stage(directory)
        atomic_save_npy(directory / filename, values)
        write_manifest(directory, config, **{k: v(values) if callable(v) else v for k, v in info.items()})
        return values


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


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _allocate(fh: Any, nbytes: int) -> None:
    """Allocate `nbytes` on disk for the open file `fh`: posix_fallocate where the OS and file
    system have it, else a free-space check and a sparse truncate."""
    if nbytes == 0:
        return
    try:
        os.posix_fallocate(fh.fileno(), 0, nbytes)
        return
    except AttributeError:  # macOS, Windows
        pass
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # EINVAL: fs cannot fallocate
            raise
    if shutil.disk_usage(Path(fh.name).parent).free < nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fh.truncate(nbytes)


def reserve_space(path: Path, nbytes: int) -> None:
    """Create `path` with `nbytes` allocated on disk now, so a full disk is a clear OSError here
    and not a SIGBUS later, inside a memory-mapped write to a sparse file."""
    try:
        with open(path, "wb") as fh:
            _allocate(fh, nbytes)
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise OSError(err.errno, f"not enough disk space for {path}: it needs "
                      f"{nbytes / 2**20:,.1f} MiB and {free / 2**20:,.1f} MiB are free; free some "
                      "space or point artifacts_dir (or MEMDEC_ARTIFACTS) at a larger disk"
                      ) from None


def open_memmap(path: str | os.PathLike, dtype: Any, shape: tuple[int, ...], mode: str = "r"):
    """A raw memmap whose file size is checked against `shape` first (truncation -> ValueError);
    mode "w+" reserves the file's disk space before mapping it (full disk -> OSError)."""
    path = Path(path)
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if mode == "w+":
        reserve_space(path, expected)
        mode = "r+"
    actual = path.stat().st_size if path.exists() else -1
    if actual != expected:
        raise ValueError(
            f"{path} has {actual} bytes but shape {shape} of {np.dtype(dtype)} needs "
            f"{expected}: the file is truncated or corrupted; delete its folder to rebuild it"
        )
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape)
