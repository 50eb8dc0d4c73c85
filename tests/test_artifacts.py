"""Artifacts: atomic writes, manifests that say 'rebuild' when the config changes and 'damaged'
when files break, paths contained under the root, results tied to their profile, full disks."""
import errno
import json
import multiprocessing
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from memdec_helpers.core.hashing import config_hash
from memdec_helpers.stages.records import load_results, record_results, stale_results
from memdec_helpers.stages.store import atomic_path, clear_stage, open_memmap, read_manifest, stage_dir, stage_is_current, write_manifest


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_stage_is_current_only_with_the_same_config(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"1234")
    assert not stage_is_current(tmp_path, {"k": 1})  # no manifest yet: not complete
    write_manifest(tmp_path, {"k": 1})
    assert stage_is_current(tmp_path, {"k": 1})
    assert not stage_is_current(tmp_path, {"k": 2})


@pytest.mark.parametrize("damage,problem", [
    (b"12", "truncated"),
    (b"1235", "changed after it was written"),  # same size: sizes alone used to vouch for it
])
def test_damaged_files_are_detected(tmp_path, damage, problem):
    (tmp_path / "data.bin").write_bytes(b"1234")
    write_manifest(tmp_path, {"k": 1})
    (tmp_path / "data.bin").write_bytes(damage)
    with pytest.raises(ValueError, match=problem):
        stage_is_current(tmp_path, {"k": 1})


def test_corrupted_manifest_says_what_to_do(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="delete"):
        read_manifest(tmp_path)


def test_clear_stage_removes_manifest_and_files(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"1")
    write_manifest(tmp_path, {"k": 1})
    clear_stage(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_open_memmap_checks_size(tmp_path):
    path = tmp_path / "keys.f16"
    np.arange(12, dtype=np.float16).tofile(path)
    assert open_memmap(path, np.float16, (3, 4))[2, 3] == 11
    with pytest.raises(ValueError, match="truncated"):
        open_memmap(path, np.float16, (4, 4))


def test_manifest_records_file_sizes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    manifest = write_manifest(tmp_path, {"k": 1}, n=3)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["files"] == {"a.bin": 3} == manifest["files"]
    assert on_disk["n"] == 3


# files above HASH_LIMIT: a sampled hash (tests/test_reliability_artifacts.py)


@pytest.mark.parametrize("stage", [("../victim",), ("..",), ("eval", "../../x"), ("a/b",),
                                   (".hidden",), ("",)])
def test_stage_paths_stay_under_the_artifacts_root(profile, stage):
    with pytest.raises(ValueError, match="plain folder name"):
        stage_dir(profile, *stage)


def test_a_profile_name_cannot_leave_the_root(tmp_path):
    """A profile named ../../victim used to write (and clear_stage to delete) outside the root;
    a Profile refuses the name, and stage_dir refuses it from any profile-like object."""
    fake = SimpleNamespace(name="../../victim", artifacts_dir=str(tmp_path / "artifacts"))
    with pytest.raises(ValueError, match="profile name"):
        stage_dir(fake, "datastore")
    assert not (tmp_path / "victim").exists()


def test_record_results_names_are_contained(profile, tmp_path):
    with pytest.raises(ValueError, match="name"):
        record_results(profile, "../../../escaped", {"x": 1})
    assert not list(tmp_path.rglob("escaped.json"))


def test_results_are_tied_to_the_profile_that_made_them(profile):
    record_results(profile, "03_training", {"loss": 1.0})
    other = replace(profile, train_steps=profile.train_steps + 1)
    record_results(other, "04_interpolation", {"alpha": 0.5})
    assert load_results(other) == {"04_interpolation": {"alpha": 0.5}}  # not the old 03
    assert stale_results(other) == ["03_training"]
    assert load_results(profile) == {"03_training": {"loss": 1.0}}


def test_reserving_space_on_a_full_disk_is_a_clear_os_error(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="not enough disk space.*artifacts_dir") as caught:
        open_memmap(tmp_path / "keys.f16", np.float16, (1000, 8), "w+")
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "keys.f16").exists()  # nothing half-made left behind


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill_memmap(directory: str, report: str) -> None:
    """In a child process: a 2 MiB memmap written in full; an OSError's text goes to `report`."""
    try:
        keys = open_memmap(Path(directory) / "keys.f16", np.float16, (2**20,), "w+")
        keys[:] = 1.0
    except OSError as err:
        Path(report).write_text(str(err))


def test_a_full_disk_is_an_os_error_before_the_memmap_not_a_sigbus(small_disk, tmp_path):
    """Writing a 2 MiB memmap on a 1 MiB disk used to kill the process with SIGBUS; the write
    runs in a forked child, so a SIGBUS would show as its exit code, not take pytest down."""
    report = tmp_path / "report.txt"
    child = multiprocessing.get_context("fork").Process(target=fill_memmap,
                                                        args=(str(small_disk), str(report)))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0, child.exitcode  # -7 would be SIGBUS
    assert "not enough disk space" in report.read_text()
