"""Artifacts: atomic writes, manifests that say 'rebuild' when the config changes or files break."""
import json

import numpy as np
import pytest

from memdec_helpers.artifacts import (atomic_path, clear_stage, config_hash, open_memmap,
                                      read_manifest, stage_is_current, write_manifest)


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


def test_truncated_file_is_detected(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"1234")
    write_manifest(tmp_path, {"k": 1})
    (tmp_path / "data.bin").write_bytes(b"12")
    with pytest.raises(ValueError, match="truncated"):
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
