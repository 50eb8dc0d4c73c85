"""Reliability of the artifact store (issue 21): manifests vouch for every file a stage keeps
(subfolders too; large files by a sampled hash), read-only caches stay readable, full or
read-only disks give errors that name the folder, and bad environment knobs are named."""
import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import memdec_helpers.stages.store as artifacts
from memdec_helpers.stages.store import atomic_write_json, cached_array, stage_dir, stage_is_current, stage_lock, write_manifest


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_vouches_for_files_in_subfolders(tmp_path):
    """A flipped byte in a trained run's model/model.safetensors went unnoticed: the manifest
    listed top-level files only."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "history.json").write_text("{}")
    (tmp_path / ".checkpoint.old").mkdir()  # hidden: a temporary, not part of the stage
    (tmp_path / ".checkpoint.old" / "x").write_bytes(b"1")
    manifest = write_manifest(tmp_path, {"k": 1})
    assert set(manifest["files"]) == {"model/model.safetensors", "history.json"}
    assert stage_is_current(tmp_path, {"k": 1})
    flip_byte(tmp_path / "model" / "model.safetensors", 700)
    artifacts._VERIFIED.clear()  # the next process (a stage is verified once per process)
    with pytest.raises(ValueError, match=r"model\.safetensors was changed.*delete the folder"):
        stage_is_current(tmp_path, {"k": 1})


def test_large_files_are_checked_by_a_sampled_hash(tmp_path, monkeypatch):
    """Files above HASH_LIMIT were checked by size only; now SAMPLE_BLOCKS evenly spaced blocks
    of SAMPLE_BLOCK bytes are hashed (the first and the last included). A change between the
    blocks is the documented blind spot."""
    monkeypatch.setattr(artifacts, "HASH_LIMIT", 100)
    monkeypatch.setattr(artifacts, "SAMPLE_BLOCK", 10)
    monkeypatch.setattr(artifacts, "SAMPLE_BLOCKS", 4)  # blocks at 0, 330, 660, 990 of 1000
    big = tmp_path / "keys.f16"
    big.write_bytes(bytes(1000))
    manifest = write_manifest(tmp_path, {"k": 1})
    assert "keys.f16" not in manifest["file_sha256"] and "keys.f16" in manifest["file_sample_sha256"]
    flip_byte(big, 500)  # between blocks: not seen (a full read of a huge file on every load is not cheap)
    assert stage_is_current(tmp_path, {"k": 1})
    flip_byte(big, 500)
    for at in (3, 335, 995):
        flip_byte(big, at)
        artifacts._VERIFIED.clear()  # the next process (a stage is verified once per process)
        with pytest.raises(ValueError, match="keys.f16 was changed"):
            stage_is_current(tmp_path, {"k": 1})
        flip_byte(big, at)


def read_only_open(real_open):
    """`open` as on a read-only disk: any write mode fails with EROFS."""
    def fake(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "aw+x"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)
    return fake


def test_a_complete_stage_on_a_read_only_disk_is_read(profile, monkeypatch):
    """The lock file was opened for append, so a complete cache on a read-only disk (a shared
    Drive folder, a mounted image) could not be read at all."""
    directory = stage_dir(profile, "eval", "x")
    values = cached_array(directory, {"k": 1}, lambda: np.arange(5.0))
    monkeypatch.setattr(artifacts, "open", read_only_open(open), raising=False)
    again = cached_array(directory, {"k": 1}, lambda: pytest.fail("must not recompute"))
    np.testing.assert_array_equal(again, values)
    (directory.parent / ".x.lock").unlink()  # no lock file either: read without a lock
    with stage_lock(directory):
        assert stage_is_current(directory, {"k": 1})


def test_building_on_a_read_only_disk_is_a_clear_error(profile, monkeypatch):
    """A raw `mkdir` error (or one from deep inside a write) named neither the cause nor a fix."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(OSError, match=r"read-only.*artifacts_dir \(or MEMDEC_ARTIFACTS\)") as caught:
        stage_dir(profile, "corpus-domain")
    assert caught.value.errno == errno.EROFS


def test_rebuilding_a_stale_stage_on_a_read_only_disk_is_a_clear_error(profile, monkeypatch):
    directory = stage_dir(profile, "eval", "y")
    cached_array(directory, {"k": 1}, lambda: np.arange(3.0))
    monkeypatch.setattr(artifacts, "open", read_only_open(open), raising=False)
    monkeypatch.setattr(os, "open", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(OSError, match=f"{directory}.*read-only"):
        cached_array(directory, {"k": 2}, lambda: np.arange(4.0))
    assert (directory / "manifest.json").exists()  # the old stage is untouched


def test_a_full_disk_during_a_small_write_names_the_folder(tmp_path, monkeypatch):
    """A bare ENOSPC from a manifest or corpus array write named no folder."""
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=f"not enough disk space.*{tmp_path}.*MEMDEC_ARTIFACTS") as caught:
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_free_space_is_checked_before_a_stale_stage_is_cleared(tmp_path, monkeypatch):
    cached_array(tmp_path, {"k": 1}, lambda: np.arange(3.0))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100))
    with pytest.raises(OSError, match=f"not enough disk space.*{tmp_path}"):
        cached_array(tmp_path, {"k": 2}, lambda: np.zeros(1000))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the old stage kept


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_lock_quiet_setting_is_named(tmp_path, monkeypatch, value):
    monkeypatch.setenv("MEMDEC_LOCK_QUIET_S", value)
    with pytest.raises(ValueError, match=f"MEMDEC_LOCK_QUIET_S={value!r}.*seconds"):
        artifacts.lock_quiet_seconds()


@pytest.fixture
def read_only_disk(tmp_path):
    """A real tmpfs that can be remounted read-only; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_read_only_disk(read_only_disk, monkeypatch):
    monkeypatch.delenv("MEMDEC_ARTIFACTS", raising=False)
    from memdec_helpers.profiles import load_profile

    profile = load_profile("tiny", artifacts_dir=str(read_only_disk / "artifacts"))
    directory = stage_dir(profile, "eval", "z")
    values = cached_array(directory, {"k": 1}, lambda: np.arange(4.0))
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_disk)], check=True)
    np.testing.assert_array_equal(cached_array(directory, {"k": 1}, lambda: None), values)
    with pytest.raises(OSError, match="read-only"):
        cached_array(directory, {"k": 2}, lambda: np.arange(5.0))
    with pytest.raises(OSError, match="read-only"):
        stage_dir(profile, "datastore")
