"""One writer per stage: two processes that build the same datastore, index and targets at the
same moment leave one clean result (byte-identical to a lone build); a process that finds a
stage locked waits, then reuses what the other built."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_gpt2
from memdec_helpers.stages.datastore import build_datastore
from memdec_helpers.stages.index import build_index
from memdec_helpers.profiles import load_profile
from memdec_helpers.stages.targets import build_targets

CHILD = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_concurrency import build

root, me, others = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
(root / f"ready-{{me}}").touch()
while not all((root / f"ready-{{o}}").exists() for o in others):  # start together
    time.sleep(0.01)
print("forward passes:", build(root, slow=True))
"""


def build(root: Path, slow: bool = False) -> int:
    """Datastore, index and targets of a small random model under `root`; the number of forward
    passes this process ran (0: it reused the datastore)."""
    profile = load_profile("tiny", artifacts_dir=str(root / "artifacts"), context_length=32,
                           stride=16, batch_size=4, k=8, target_top_m=4)
    model, forward = make_gpt2(), []

    def count(module, args):  # and slow enough for two builds to overlap
        forward.append(1)
        time.sleep(0.05 if slow else 0)

    model.transformer.h[-1].mlp.register_forward_pre_hook(count)
    tokens = np.random.default_rng(0).integers(0, 97, 1200)
    store = build_datastore(profile, model, tokens, "m", progress=False)
    build_targets(profile, store, build_index(profile, store, progress=False), progress=False)
    return len(forward)


FILES = {"datastore": ["keys.f16", "vals.i32"], "index": ["index.faiss"],
         "targets": ["ids.i32", "probs.f16", "mass.f16"]}


def start(root: Path, me: str, *others: str) -> subprocess.Popen:
    script = CHILD.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "MEMDEC_LOCK_QUIET_S": "0"}  # report every wait on the lock
    return subprocess.Popen([sys.executable, "-c", script, str(root), me, *others],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(child: subprocess.Popen) -> tuple[str, str]:
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    return out, err


@pytest.mark.slow
def test_two_builders_at_once_leave_one_clean_result(tmp_path):
    alone = tmp_path / "alone"
    build(alone)
    together = tmp_path / "together"
    together.mkdir()
    outputs = [finish(child) for child in (start(together, "a", "b"), start(together, "b", "a"))]
    assert any("waiting for another process" in err for _, err in outputs)  # a lock held one
    passes = sorted(int(out.split("forward passes:")[1]) for out, _ in outputs)
    assert passes[0] == 0 and passes[1] > 0  # one built the datastore, the other reused it
    for stage, names in FILES.items():
        [built] = (together / "artifacts" / "tiny").glob(f"{stage}-*")  # one recipe, one folder
        [lone] = (alone / "artifacts" / "tiny").glob(f"{stage}-*")
        assert built.name == lone.name and (built / "manifest.json").exists()
        assert not [p.name for p in built.iterdir() if p.name.startswith(".")]  # no leftovers
        for name in names:
            assert (built / name).read_bytes() == (lone / name).read_bytes(), (stage, name)
