"""Every world runs the whole course: the colab profile's code paths on the CPU (ci-colab) and a
learner's own folder of text that is not the Bible. Both run all eight lessons through the batch
runner and write summary.json with the results contract; every claims cell prints a verdict
(these worlds differ from tiny, so a differing claim is reported, never raised). The fast tests
below pin that no notebook sizes itself for the tiny world by hand."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memdec_helpers.core.results import METHODS
from memdec_helpers.profiles import load_profile

from own_domain import write_own_domain  # tests/ is on sys.path (rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CI_COLAB = Path(__file__).parent / "profiles" / "ci-colab.yaml"
RESULT_KEYS = {"method", "base", "weight", "weight_grid", "test_best_weight", "val_ppl",
               "test_ppl", "general_test_ppl"}
VERDICT_HEADER = "| statement of the prose | numbers on this run | verdict |"
# parameters that choose what to show, not how big a world is (each clipped to the data)
DISPLAY_PARAMETERS = {"QUERY_POSITION", "SAMPLE_SEEDS", "NEW_TOKENS", "PROMPT_TOKENS", "N_QUERIES"}
TINY_SIZES = ["20_000", "40_000", "80_000", "[16, 64, 256]", "[1, 4, 16, 64, 256]",
              "[1.0, 3.0, 10.0]", '"k = 256"', "TEMPERATURE_GRID.index(3.0)"]


def cells(path: Path, kind: str = "code") -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def numbers_in(node: ast.AST) -> list[float]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_parameter_sizes_a_world_by_hand(path):
    """A parameters cell may set display choices; a grid, a list of sizes or a large count must
    come from the profile (None = derived)."""
    params = [c for c in cells(path) if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    for node in ast.parse(source(params[0])).body:
        name = node.targets[0].id
        if name in DISPLAY_PARAMETERS or name == "PROFILE":
            continue
        value = node.value
        assert not isinstance(value, (ast.List, ast.Tuple)), \
            f"{path.name}: {name} is a hand-written grid; derive it from the profile"
        assert all(abs(x) <= 100 for x in numbers_in(value)), \
            f"{path.name}: {name} is a hand-written size; derive it from the profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_tiny_only_size_or_world_test_comes_back(path):
    for cell in cells(path):
        text = source(cell)
        for size in TINY_SIZES:
            assert size not in text, f"{path.name}: {size} is a tiny-world size written by hand"
        assert 'name == "tiny"' not in text and "assert all(claims" not in text
        if "claims.claim(" in text:
            assert "claims.check(profile" in text, f"{path.name}: a claim that is never judged"


def test_every_prose_assert_became_a_claims_cell():
    """Statements about results are judged by claims.check (strict on tiny only); the asserts
    left are invariants of the code, true on every world."""
    for path in NOTEBOOKS:
        for cell in cells(path):
            for line in source(cell).splitlines():
                if line.strip().startswith("assert "):
                    assert "prose" not in line, f"{path.name}: {line.strip()}"


def own_domain_profile(tmp_path: Path) -> Path:
    folder = write_own_domain(tmp_path / "licences", documents=120)
    path = tmp_path / "own-licences.yaml"
    path.write_text("\n".join([
        "extends: tiny", "name: own-licences", f"domain_corpus: files:{folder}",
        "max_train_tokens: 16000", "max_eval_tokens: 3000", "train_steps: 60", "eval_every: 20",
        "ablation_steps: 8", "ablation_seeds: 1", ""]))
    return path


def run_course(profile_path: Path, tmp_path: Path) -> tuple[dict, Path]:
    out = tmp_path / "run"
    env = {**os.environ, "MEMDEC_ARTIFACTS": str(tmp_path / "artifacts"), "MPLBACKEND": "Agg",
           "MEMDEC_PROGRESS": "line"}
    env.pop("MEMDEC_CLAIMS", None)
    done = subprocess.run([sys.executable, "-m", "memdec_helpers.run", "--profile",
                           str(profile_path), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), out


def check_world(summary: dict, out: Path) -> None:
    executed = sorted(out.glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in NOTEBOOKS]
    for path in executed:
        outputs = [o for c in cells(path) for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], path.name
        texts = json.dumps(outputs)
        claims_cells = sum("claims.check(profile" in source(c) for c in cells(path))
        assert texts.count(VERDICT_HEADER) == claims_cells > 0, path.name
    table = summary["results"]["table"]
    assert {(r["method"], r["base"]) for r in table} >= {
        ("base", 0), ("base", 1), ("base + kNN-LM", 0), ("base + kNN-LM", 1), ("MemDec alone", None),
        ("base + MemDec", 0), ("base + MemDec", 1), ("DAPT", 0)}
    assert all(RESULT_KEYS <= set(r) for r in table)
    memories = summary["results"]["memories"]["table"]  # lesson 07: every memory on two domains
    domains = list(dict.fromkeys(r["domain"] for r in memories))
    assert len(domains) == 2 and domains[1] == "facts", domains
    for domain in domains:
        assert {r["method"] for r in memories if r["domain"] == domain} == set(METHODS) - {"base + DAPT"}
    assert all(r["verbatim_fact_ppl"] is not None for r in memories if r["domain"] == "facts")


@pytest.mark.slow
def test_the_colab_shaped_world_runs_the_whole_course(tmp_path):
    profile = load_profile(str(CI_COLAB))
    colab = load_profile("colab")
    for knob in ("k", "knn_temperature", "knn_temperature_grid", "index_type", "ablation_seeds",
                 "grad_accum"):
        assert getattr(profile, knob) == getattr(colab, knob), knob  # colab's own code paths
    assert profile.memdec_layers > 1 and profile.micro_batch_size < profile.train_batch_size
    summary, out = run_course(CI_COLAB, tmp_path)
    check_world(summary, out)


@pytest.mark.slow
def test_an_own_domain_folder_runs_the_whole_course(tmp_path):
    summary, out = run_course(own_domain_profile(tmp_path), tmp_path)
    check_world(summary, out)
    assert summary["config"]["domain_corpus"].startswith("files:")
