"""The lessons as a learner meets them: the canonical setup cell, a you-are-here strip with the
lesson's own number, exercises shipped as stubs whose checks exist, lesson 03 showing the
tested loss and loop verbatim, and no warnings or progress-bar spam in the saved outputs.
(Add as tests/test_lessons.py in the notebook pass of issue 12.)"""
import inspect
import json
import os
import re
from pathlib import Path

import pytest

from memdec_helpers.lessons import exercises, plain_training, publish

NOTEBOOKS = Path(os.environ.get("MEMDEC_LESSONS", Path(__file__).resolve().parents[1] / "notebooks"))
LESSONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CHECK = re.compile(r'ex\.check\("(\w+)", (.+?),')


def test_the_lessons_are_found():
    assert len(LESSONS) >= 7, f"no lessons in {NOTEBOOKS}"


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_a_lesson_opens_with_the_setup_cell_and_its_place_on_the_map(path):
    cells = code_cells(path)
    assert cells[0] == publish.setup_cell(), "run: python scripts/set_repo_url.py --setup-cells"
    assert any(f'plots.you_are_here("{path.name[:2]}")' in c for c in cells[:5])


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_exercises_ship_as_stubs_with_a_registered_check(path):
    cells = code_cells(path)
    checks = [m for c in cells for m in CHECK.findall(c)]
    assert checks, f"{path.name} has no exercise"
    for name, answer in checks:
        assert name in exercises.EXERCISES, f"{path.name}: unknown exercise {name!r}"
        variables = re.findall(r"\w+", answer.strip("()"))
        for var in variables:  # the answer is a stub: `var = ...` or a function whose body is ...
            stub = re.compile(rf"^{var} = \.\.\.|^def {var}\(.*\n(\s+#.*\n)*\s+\.\.\.", re.M)
            assert any(stub.search(c) for c in cells), f"{path.name}: {var} is not a stub"


def test_every_exercise_is_used_by_a_lesson():
    used = {m[0] for path in LESSONS for c in code_cells(path) for m in CHECK.findall(c)}
    assert used == set(exercises.EXERCISES)


def test_lesson_03_shows_the_tested_loss_and_loop():
    cells = "\n".join(code_cells(next(p for p in LESSONS if p.name.startswith("03"))))
    for function in (plain_training.plain_memdec_loss, plain_training.plain_train):
        assert inspect.getsource(function) in cells, f"copy {function.__name__} verbatim"
    assert "kl_without_gradient=True" in cells


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_saved_outputs_hold_no_warnings_and_no_progress_spam(path):
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            assert "Warning:" not in text, f"{path.name}: {text[:200]}"
            assert text.count("\r") <= 1 and text.count("it/s") <= 3, f"{path.name}: progress bars"
