"""Kill a datastore build and a targets build part-way (SIGKILL to a subprocess), rerun, and get
byte-identical files to an uninterrupted build."""
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
if stage == "targets":
    targets_module.CHUNK = 64
    index = build_index(profile, store, progress=False)
    if slow:
        real = targets_module.search
        targets_module.search = lambda *a, **k: (time.sleep(0.1), real(*a, **k))[1]
    build_targets = targets_module.build_targets(profile, store, index, progress=False)
print("done")
"""

FILES = {"datastore": ["keys.f16", "vals.i32"], "targets": ["ids.i32", "probs.f16", "mass.f16"]}


def run_child(stage, root, slow):
    script = CHILD.format(tests=str(Path(__file__).parent))
    return subprocess.Popen([sys.executable, "-c", script, stage, str(root), slow])


@pytest.mark.parametrize("stage", ["datastore", "targets"])
def test_sigkill_then_rerun_gives_identical_files(stage, tmp_path):
    clean_root, killed_root = tmp_path / "clean", tmp_path / "killed"
    assert run_child(stage, clean_root, "fast").wait(timeout=120) == 0
    child = run_child(stage, killed_root, "slow")
    progress = killed_root / "tiny" / stage / ".progress.json"
    deadline = time.time() + 120
    while not progress.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let it write a few more batches, then kill it mid-build
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (killed_root / "tiny" / stage / "manifest.json").exists()  # nothing looks complete
    assert run_child(stage, killed_root, "fast").wait(timeout=120) == 0
    for name in FILES[stage]:
        clean = (clean_root / "tiny" / stage / name).read_bytes()
        assert (killed_root / "tiny" / stage / name).read_bytes() == clean, name
