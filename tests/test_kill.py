"""Kill a datastore, a neighbours and a targets build part-way (SIGKILL to a subprocess), rerun,
and get byte-identical files to an uninterrupted build: all three go through the one streamed
writer, which resumes from its last finished chunk."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
import numpy as np, torch
from types import SimpleNamespace
from conftest import make_gpt2
from memdec_helpers.stages import targets as targets_module
from memdec_helpers.stages.datastore import build_datastore
from memdec_helpers.stages.index import build_index
from memdec_helpers.profiles import load_profile

stage, root, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"
profile = load_profile("tiny", artifacts_dir=root, context_length=32, stride=16, batch_size=4,
                       k=8, target_top_m=4)
model = make_gpt2()
tokens = np.random.default_rng(0).integers(0, 97, 1200)
if slow and stage == "datastore":
    model.transformer.h[-1].mlp.register_forward_pre_hook(lambda m, a: time.sleep(0.05))
store = build_datastore(profile, model, tokens, "m", progress=False)
if stage in ("targets", "neighbours"):
    targets_module.CHUNK = 64
    index = build_index(profile, store, progress=False)
    if slow:
        real = targets_module.search
        targets_module.search = lambda *a, **k: (time.sleep(0.1), real(*a, **k))[1]
    if stage == "targets":
        targets_module.build_targets(profile, store, index, progress=False)
    else:
        targets_module.build_neighbours(profile, store, index, 20, progress=False)
print("done")
"""

FILES = {"datastore": ["keys.f16", "vals.i32"], "targets": ["ids.i32", "probs.f16", "mass.f16"],
         "neighbours": ["distances.f32", "rows.i32"]}


def run_child(stage, root, slow):
    script = CHILD.format(tests=str(Path(__file__).parent))
    return subprocess.Popen([sys.executable, "-c", script, stage, str(root), slow])


def stage_folder(root: Path, stage: str) -> Path | None:
    """The folder of `stage` (its recipe key follows its label), or None before it exists."""
    found = sorted((root / "tiny").glob(f"{stage}-*")) if (root / "tiny").exists() else []
    return found[0] if found else None


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["datastore", "neighbours", "targets"])
def test_sigkill_then_rerun_gives_identical_files(stage, tmp_path):
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    assert run_child(stage, clean_root, "fast").wait(timeout=120) == 0
    child = run_child(stage, killed_root, "slow")
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (folder := stage_folder(killed_root, stage)) and (folder / ".progress.json").exists()):
        time.sleep(0.02)
    time.sleep(0.3)  # let it write a few more batches, then kill it mid-build
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    folder = stage_folder(killed_root, stage)
    assert folder is not None and (folder / ".progress.json").exists()  # killed mid-build
    assert not (folder / "manifest.json").exists()  # nothing looks complete
    assert run_child(stage, killed_root, "fast").wait(timeout=120) == 0
    clean_folder = stage_folder(clean_root, stage)
    assert folder.name == clean_folder.name  # one recipe, one folder
    for name in FILES[stage]:
        assert (folder / name).read_bytes() == (clean_folder / name).read_bytes(), name
