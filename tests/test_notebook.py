"""Papermill parameters: a name the notebook does not declare is an error (it used to be a
warning, and the notebook ran on PROFILE = "auto"); declared names, and no papermill, pass."""
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from memdec_helpers.lessons.notebook import assigned_names, check_parameters

LESSON = Path(__file__).parents[1] / "notebooks" / "00_setup_and_overview.ipynb"


@pytest.fixture
def kernel():
    """A real IPython shell (what papermill's kernel runs), dropped after the test."""
    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def run_lesson_start(shell, parameters):
    """Run the lesson as papermill would, up to the cell that calls `P.setup(PROFILE)` (cells
    that only run in Colab skipped); the error that stopped it, if any."""
    nb = parameterize_notebook(load_notebook_node(str(LESSON)), parameters,
                               kernel_name="python3", language="python")
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    injected = tags.index(["injected-parameters"])
    setup = next(i for i, cell in enumerate(nb.cells) if "P.setup(PROFILE)" in cell.source)
    assert setup > injected, "the profile is set up after the parameters"
    for cell in nb.cells[:setup + 1]:
        if cell.cell_type == "code" and "google.colab" not in cell.source:
            result = shell.run_cell(cell.source, store_history=True)
            if result.error_in_exec is not None:
                return result.error_in_exec
    return None


def test_a_misspelt_parameter_stops_the_notebook(kernel):
    error = run_lesson_start(kernel, {"PROFLE": "tiny"})
    assert isinstance(error, ValueError) and "PROFLE" in str(error) and "PROFILE" in str(error)


def test_declared_parameters_pass(kernel):
    assert run_lesson_start(kernel, {"PROFILE": "tiny", "SAMPLE_TOKENS": 10}) is None
    assert kernel.user_ns["PROFILE"] == "tiny"


def test_without_papermill_nothing_is_checked(kernel):
    kernel.run_cell("PROFILE = 'auto'", store_history=True)
    assert kernel.run_cell("from memdec_helpers.lessons.notebook import check_parameters\n"
                           "check_parameters()", store_history=True).error_in_exec is None
    check_parameters(history=["", "x = 1"])  # outside IPython: the history given


def test_assigned_names():
    assert assigned_names("A = 1  # c\nB: int = 2\nC, (D, E) = 1, (2, 3)\nF += 1\nprint(G)\n") == {
        "A", "B", "C", "D", "E", "F"}
    assert assigned_names("not python (") == set()
