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
SAMPLE_BLOCKS = 64  # larger files: a hash of this many evenly spaced blocks (first and last
SAMPLE_BLOCK = 64 * 2**10  # included) of this many bytes each, 4 MiB read per check
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # what writing to a read-only place raises


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
    make_dir(path)
    return path


def make_dir(path: Path) -> None:
    """`path` and its parents, created if missing; a read-only or full disk is an OSError that
    names the folder and the fix."""
    with disk_errors(path):
        path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full or read-only disk met while writing under `path` into an OSError (same
    errno) that names the folder and what to do, instead of a bare ENOSPC or EROFS."""
    try:
        yield
    except OSError as err:
        if err.errno not in FULL_DISK + READ_ONLY or "artifacts_dir" in str(err):
            raise
        raise _disk_error(err.errno, Path(path)) from None


def _disk_error(code: int, path: Path) -> OSError:
    """The clear OSError for a full (ENOSPC, EDQUOT, EFBIG) or read-only disk at `path`."""
    folder = path if path.is_dir() else path.parent
    if code in FULL_DISK:
        free = _free_bytes(folder)
        problem = (f"not enough disk space in {folder} ({free / 2**20:,.1f} MiB free); free some "
                   "space or")
    else:
        problem = (f"cannot write in {folder}: the disk or folder is read-only "
                   f"({os.strerror(code)}); make it writable or")
    return OSError(code, f"{problem} point artifacts_dir (or MEMDEC_ARTIFACTS) at another folder")


def _free_bytes(folder: Path) -> int:
    """Free bytes on the disk of `folder` (or of its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_writable(directory: str | os.PathLike) -> None:
    """Create and remove a probe file in `directory`: a read-only disk (or a folder this user
    may not write) is the clear OSError here, before any work, not a raw one half-way through."""
    probe = Path(directory) / f".write-probe-{os.getpid()}"
    with disk_errors(directory):
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        probe.unlink()


def check_free_space(directory: str | os.PathLike, nbytes: int) -> None:
    """OSError (ENOSPC, naming the folder) if the disk of `directory` has less than `nbytes`
    free: checked before a stale stage is cleared, so a full disk keeps the old files."""
    free = _free_bytes(Path(directory))
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"not enough disk space in {directory}: writing the stage "
                      f"needs {nbytes / 2**20:,.1f} MiB and {free / 2**20:,.1f} MiB are free; free "
                      "some space or point artifacts_dir (or MEMDEC_ARTIFACTS) at a larger disk")


@contextlib.contextmanager
def stage_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive OS lock on the stage `directory` while it is checked and built (one
    writer per stage). The lock file sits next to the folder, so clearing the stage keeps it;
    the OS drops the lock when its holder exits, even by SIGKILL."""
    directory = Path(directory)
    make_dir(directory.parent)
    fh = _open_lock(directory.parent / f".{directory.name}.lock")
    with fh if fh is not None else contextlib.nullcontext():
        if fcntl is None or fh is None:
            yield
            return
        _acquire(fh, directory)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open_lock(path: Path) -> Any:
    """The lock file, opened for append (created if missing); on a read-only disk the existing
    file opened for reading (flock works on it), or None when there is none: nobody can build
    there, so a complete stage is read without a lock, and a build fails on its first write
    with a clear error (check_writable)."""
    try:
        return open(path, "a")
    except OSError as err:
        if err.errno not in READ_ONLY:
            raise
    try:
        return open(path, "r")
    except OSError:
        return None


LOCK_QUIET_S = 5.0  # a wait shorter than this (another process checking the stage) is not reported;
# MEMDEC_LOCK_QUIET_S overrides it (0: report every wait)


def lock_quiet_seconds() -> float:
    """LOCK_QUIET_S, or MEMDEC_LOCK_QUIET_S when set (ValueError naming it when it is not a
    number of seconds >= 0)."""
    raw = os.environ.get("MEMDEC_LOCK_QUIET_S")
    if raw is None or not raw.strip():
        return LOCK_QUIET_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"MEMDEC_LOCK_QUIET_S={raw!r} must be a number of seconds >= 0 (how "
                         "long a wait for another process's lock stays unreported); unset it "
                         f"for the default {LOCK_QUIET_S:g}")
    return value


def _acquire(fh: Any, directory: Path) -> None:
    """Take the exclusive lock on `fh`; say so on stderr only when another process holds it for
    more than LOCK_QUIET_S seconds (a build, not a check)."""
    deadline = time.monotonic() + lock_quiet_seconds()
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
        with disk_errors(path):
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


def full_digest(path: Path) -> str:
    """sha256 of a whole file, read in 1 MiB blocks (whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def file_sample_digest(path: Path) -> str:
    """sha256 of a file's size and SAMPLE_BLOCKS blocks of SAMPLE_BLOCK bytes at evenly spaced
    offsets (the first and the last block included): what vouches for a file above HASH_LIMIT.
    It sees a file replaced, zeroed, shifted or rewritten in part, not a change between blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    last = max(size - SAMPLE_BLOCK, 0)
    offsets = sorted({round(i * last / max(SAMPLE_BLOCKS - 1, 1)) for i in range(SAMPLE_BLOCKS)})
    with open(path, "rb") as fh:
        for offset in offsets:
            fh.seek(offset)
            digest.update(fh.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def _stage_files(directory: Path) -> list[tuple[str, Path]]:
    """The files a manifest vouches for, as (name relative to the stage, path): every visible
    file of the stage, in its subfolders too (a trained run's `model/`), but the manifest.
    Hidden files and folders (temporaries, progress files, `.old` copies) are not part of a
    stage; folder links are not followed."""
    out = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(directory).as_posix()
            if not name.startswith(".") and rel != MANIFEST and path.is_file():
                out.append((rel, path))
    return out


def write_manifest(directory: str | os.PathLike, config: dict[str, Any], **info: Any) -> dict:
    """Record config, its hash, and the size and content hash of every file of the stage
    (a sampled hash above HASH_LIMIT); written last, atomically."""
    directory = Path(directory)
    files = _stage_files(directory)
    sizes = {rel: p.stat().st_size for rel, p in files}
    manifest = {
        "config": config,
        "config_hash": config_hash(config),
        "files": sizes,
        "file_sha256": {rel: digest for rel, p in files if (digest := file_digest(p)) is not None},
        "file_sample_sha256": {rel: file_sample_digest(p) for rel, p in files
                               if sizes[rel] > HASH_LIMIT},
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    clash = sorted(set(manifest) & set(info))
    if clash:
        raise ValueError(f"write_manifest: {clash} are the manifest's own fields; rename them")
    manifest.update(info)
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def _damaged(directory: Path, path: Path, problem: str) -> ValueError:
    return ValueError(f"{path} {problem}; delete the folder {directory} to rebuild it")


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
    """check_stage_files once per process and stage (a stage's files are written once,
    atomically, under its recipe's key: checked once, they are trusted for the session)."""
    memo = (str(directory), manifest["config_hash"], str(manifest.get("created")))
    if memo in _VERIFIED:
        return
    check_stage_files(directory, manifest)
    STATS["verified"] += 1
    STATS["hashed_bytes"] += sum(manifest.get("files", {}).get(name, 0)
                                 for name in manifest.get("file_sha256", {}))
    _VERIFIED.add(memo)


def check_stage_files(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """ValueError (naming the file and the folder to delete) unless every file the manifest
    lists has its size and content hash (full, or sampled for large files)."""
    directory = Path(directory)
    damaged = "was changed after it was written (its content hash differs from the manifest's)"
    for name, size in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            raise _damaged(directory, path, f"is missing or truncated (expected {size} bytes)")
    for name, digest in manifest.get("file_sha256", {}).items():
        if file_digest(directory / name) != digest:
            raise _damaged(directory, directory / name, damaged)
    for name, digest in manifest.get("file_sample_sha256", {}).items():
        if file_sample_digest(directory / name) != digest:
            raise _damaged(directory, directory / name, damaged)


def clear_stage(directory: str | os.PathLike) -> None:
    """Remove a stale stage's manifest first (so nothing looks complete), then its files; a
    read-only disk is a clear error before anything is removed."""
    directory = Path(directory)
    check_writable(directory)
    manifest = directory / MANIFEST
    with disk_errors(directory):
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
        check_writable(directory)
        values = compute()
        check_free_space(directory, values.nbytes + 2**20)
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
        if err.errno in READ_ONLY:
            raise _disk_error(err.errno, path) from None
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
