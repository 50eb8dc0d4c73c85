"""The lessons as a learner meets them: the canonical setup cell, a you-are-here strip with the
lesson's own number, exercises and one "predict, then run" question per lesson shipped as stubs
whose checks exist, lesson 03 showing the tested loss and loop verbatim *after* the learner wrote
their own, and clean saved outputs: no warnings, progress-bar spam, hints, answers or paths of
the machine that ran them, and no nbval comment in a learner-facing cell (cell tags instead)."""
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
PREDICT = re.compile(r'ex\.predict\("(\w+)", (\w+)[,)]')


def test_the_lessons_are_found():
    assert len(LESSONS) >= 7, f"no lessons in {NOTEBOOKS}"


def code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_a_lesson_opens_with_the_setup_cell_and_its_place_on_the_map(path):
    cells = code_cells(path)
    assert cells[0] == publish.setup_cell(), "run: python scripts/set_repo_url.py --setup-cells"
    assert any(f'plots.you_are_here("{path.name[:2]}")' in c for c in cells[:5])


def is_stub(var: str, cells: list[str]) -> bool:
    """`var = ...` or a function `var` whose body is `...` (comments and a docstring allowed)."""
    stub = re.compile(rf'^{var} = \.\.\.|^def {var}\(.*\n(\s+#.*\n|\s+""".*"""\n)*\s+\.\.\.', re.M)
    return any(stub.search(c) for c in cells)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_exercises_and_predictions_ship_as_stubs_with_a_registered_check(path):
    cells = code_cells(path)
    checks = [m for c in cells for m in CHECK.findall(c)]
    predicted = [m for c in cells for m in PREDICT.findall(c)]
    assert checks or predicted, f"{path.name} has no exercise"
    assert predicted, f"{path.name} has no 'predict, then run' question (ex.predict)"
    for name, answer in checks:
        assert name in exercises.EXERCISES, f"{path.name}: unknown exercise {name!r}"
        for var in re.findall(r"\w+", answer.strip("()")):
            assert is_stub(var, cells), f"{path.name}: {var} is not a stub"
    for name, guess in predicted:
        assert name in exercises.PREDICTIONS, f"{path.name}: unknown prediction {name!r}"
        assert is_stub(guess, cells), f"{path.name}: {guess} is not a stub"
        first_use = next(i for i, c in enumerate(cells) if re.search(rf"\b{guess}\b", c))
        assert re.search(rf"^{guess} = \.\.\.", cells[first_use], re.M), \
            f"{path.name}: the guess {guess} is asked for before the run, not after"


def test_every_exercise_and_question_is_used_by_a_lesson():
    used = {m[0] for path in LESSONS for c in code_cells(path) for m in CHECK.findall(c)}
    assert used == set(exercises.EXERCISES)
    asked = {m[0] for path in LESSONS for c in code_cells(path) for m in PREDICT.findall(c)}
    assert asked == set(exercises.PREDICTIONS)


def test_lesson_03_shows_the_tested_loss_and_loop_after_the_learner_wrote_them():
    cells = code_cells(next(p for p in LESSONS if p.name.startswith("03")))

    def index(text: str) -> int:
        return next(i for i, c in enumerate(cells) if text in c)
    for function, exercise in ((plain_training.plain_memdec_loss, "memdec_loss_by_hand"),
                               (plain_training.plain_train, "training_step")):
        source = inspect.getsource(function)
        source = source.rstrip("\n")
        assert any(source in c for c in cells), f"copy {function.__name__} verbatim"
        assert index(f'ex.check("{exercise}"') < index(source), \
            f"{function.__name__} is shown before the learner writes {exercise}"
    assert any("kl_without_gradient=True" in c for c in cells)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_learner_facing_cells_carry_nbval_markers_as_tags_and_no_old_names(path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        assert not source.lstrip().startswith("# NBVAL"), \
            f"{path.name}: an nbval comment opens a cell; use the tag nbval-check-output"
        assert "seed_bug" not in source and "seed notebook" not in source, path.name
    tagged = [c for c in cells if "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert all(c["cell_type"] == "code" for c in tagged)


def output_texts(path: Path) -> list[str]:
    """Every text a saved output shows (streams, plain-text results, errors)."""
    texts = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
            texts.append("".join(out.get("data", {}).get("text/markdown", "")))
            texts.extend(out.get("traceback", []))
    return [t for t in texts if t]


MACHINE_PATH = re.compile(r"PosixPath\(|WindowsPath\(|(?<![\w.])/(?:home|tmp|work|root|Users|mnt|"
                          r"var|opt|content|private|scratch)/|[A-Z]:\\\\")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_no_output_holds_a_path_of_the_machine_that_ran_it(path):
    here = str(Path(__file__).resolve().parents[1])
    for text in output_texts(path):
        assert here not in text and str(Path.home()) not in text, f"{path.name}: {text[:300]}"
        assert not MACHINE_PATH.search(text), f"{path.name}: {text[:300]}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_no_output_holds_a_hint_or_an_answer(path):
    hints = [e.hint for e in exercises.EXERCISES.values()]
    for text in output_texts(path):
        assert "Hint for" not in text and not any(h in text for h in hints), f"{path.name}: {text[:300]}"
        assert "memdec_helpers.lessons.solutions)" not in text and "answered by the run" not in text


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_saved_outputs_hold_no_warnings_and_no_progress_spam(path):
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            assert "Warning:" not in text, f"{path.name}: {text[:200]}"
            assert text.count("\r") <= 1 and text.count("it/s") <= 3, f"{path.name}: progress bars"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.name[:2])
def test_each_lesson_states_prerequisites_reading_time_and_links_the_glossary(path):
    cells = json.loads(path.read_text())["cells"]
    header = "".join(cells[0]["source"])
    assert "**Prerequisites:**" in header and "**Reading time:** about" in header
    target = "#Glossary" if path.name.startswith("00") else "00_setup_and_overview.ipynb#Glossary"
    links = sum("".join(c["source"]).count(f"]({target})") for c in cells if c["cell_type"] == "markdown")
    assert links >= 3, f"{path.name}: glossary terms are linked from their first use ({links} links)"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.name[:2])
def test_committed_outputs_hold_every_figure(path):
    """Each cell that shows a figure has it in its committed outputs (a run under MPLBACKEND=Agg
    would leave them empty)."""
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "plt.show()" in source:
            kinds = {key for out in cell.get("outputs", []) for key in out.get("data", {})}
            assert "image/png" in kinds, f"{path.name}: no figure in the outputs of {source[:60]!r}"
