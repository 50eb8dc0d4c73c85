"""The repository address in one place: badges and setup cells rewritten from it (idempotent,
other links untouched), and the Colab setup cell: installs only what is missing, quietly."""
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from memdec_helpers.lessons import publish

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "set_repo_url.py"
OLD = "https://colab.research.google.com/github/old-owner/old-name/blob/dev/notebooks/00_x.ipynb"
PAPER = "https://github.com/LUMIA-Group/MemoryDecoder"  # a reference link: must stay


def sample_repo(tmp_path: Path) -> Path:
    """A repository with publish.py, a README, a pyproject and one lesson, all on old addresses."""
    (tmp_path / "memdec_helpers" / "lessons").mkdir(parents=True)
    (tmp_path / "memdec_helpers" / "lessons" / "publish.py").write_text(Path(publish.__file__).read_text())
    (tmp_path / "README.md").write_text(f"| 00 | [![Open In Colab](badge.svg)]({OLD}) |\nsee {PAPER}\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project.urls]\nRepository = "https://github.com/old-owner/old-name"\n')
    cells = [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": [f"[badge]({OLD})"]},
             {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1,
              "outputs": [{"name": "stdout", "output_type": "stream", "text": ["old\n"]}],
              "source": ["%pip install git+https://github.com/old-owner/old-name.git\n", f"# {PAPER}"]}]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_x.ipynb").write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    return tmp_path


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True)


def test_rewrite_points_badges_and_requirements_at_the_repo_and_is_idempotent():
    text = f"[b]({OLD}) pip install git+https://github.com/old-owner/old-name.git {PAPER}"
    new = publish.rewrite_repo_urls(text, "https://github.com/me/course")
    assert "https://colab.research.google.com/github/me/course/blob/main/notebooks/00_x.ipynb" in new
    assert "git+https://github.com/me/course " in new and PAPER in new
    assert publish.rewrite_repo_urls(new, "https://github.com/me/course") == new
    with pytest.raises(ValueError, match="github.com/<owner>/<name>"):
        publish.rewrite_repo_urls(text, "https://gitlab.com/me/course")


def test_script_sets_the_address_then_everything_follows(tmp_path):
    root = sample_repo(tmp_path)
    assert run_script(root, "--check").returncode == 1  # old addresses are stale
    done = run_script(root, "https://github.com/real/course", "--setup-cells")
    assert done.returncode == 0, done.stderr
    publish_py = (root / "memdec_helpers" / "lessons" / "publish.py").read_text()
    assert 'REPO_URL = "https://github.com/real/course"' in publish_py
    readme = (root / "README.md").read_text()
    assert "github/real/course/blob/main/notebooks/00_x.ipynb" in readme and PAPER in readme
    assert 'Repository = "https://github.com/real/course"' in (root / "pyproject.toml").read_text()
    nb = json.loads((root / "notebooks" / "00_x.ipynb").read_text())
    assert "github/real/course/blob/main" in "".join(nb["cells"][0]["source"])
    setup = nb["cells"][1]
    assert "".join(setup["source"]) == publish.setup_cell("https://github.com/real/course")
    assert setup["outputs"] == [] and setup["execution_count"] is None  # stale output dropped
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    again = run_script(root, "--setup-cells")
    assert again.returncode == 0 and "0 file(s) updated" in again.stdout  # idempotent
    assert before == {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    assert run_script(root, "--check", "--setup-cells").returncode == 0


def test_the_repository_is_in_sync_with_publish():
    done = run_script(ROOT, "--check")
    assert done.returncode == 0, done.stdout + "\nrun: python scripts/set_repo_url.py"


# --- the setup cell ------------------------------------------------------------------------

class FakeEnvironment:
    """find_spec / pip of a kernel where `absent` modules are missing until pip installs them."""

    def __init__(self, monkeypatch, absent: set[str], colab: bool, pip_fails: bool = False):
        self.absent, self.pip_fails, self.calls = set(absent), pip_fails, []
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name in self.absent else real(name, *a))
        monkeypatch.setattr(subprocess, "run", self.pip)
        if colab:
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def pip(self, args, **kwargs):
        self.calls.append(args[3:])  # after python -m pip
        assert kwargs.get("capture_output"), "pip's output must be captured"
        if self.pip_fails:
            return subprocess.CompletedProcess(args, 1, "Collecting faiss-cpu\n", "ERROR: no network\n")
        self.absent.clear()
        return subprocess.CompletedProcess(args, 0, "lots of pip output\n", "")


def run_setup_cell() -> None:
    exec(compile(publish.setup_cell(), "<setup cell>", "exec"), {})


def test_setup_cell_installs_only_what_is_missing_quietly(monkeypatch, capsys):
    env = FakeEnvironment(monkeypatch, {"faiss"}, colab=True)
    run_setup_cell()
    assert env.calls == [["install", "-q", "faiss-cpu"]]  # memdec_helpers was there
    out = capsys.readouterr().out
    assert "pip output" not in out and len(out.splitlines()) == 3, out
    env = FakeEnvironment(monkeypatch, set(), colab=True)
    run_setup_cell()
    assert env.calls == [] and capsys.readouterr().out.strip().startswith("ready")


def test_setup_cell_shows_pip_output_only_when_pip_fails(monkeypatch, capsys):
    FakeEnvironment(monkeypatch, {"faiss", "memdec_helpers"}, colab=True, pip_fails=True)
    with pytest.raises(RuntimeError, match="pip install failed"):
        run_setup_cell()
    assert "ERROR: no network" in capsys.readouterr().out


def test_setup_cell_outside_colab_installs_nothing_and_says_what_to_do(monkeypatch):
    env = FakeEnvironment(monkeypatch, {"memdec_helpers"}, colab=False)
    with pytest.raises(ModuleNotFoundError, match="scripts/env.sh"):
        run_setup_cell()
    assert env.calls == []
    assert f"git+{publish.REPO_URL}" in publish.setup_cell()
