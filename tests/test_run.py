"""Batch runner: notebook order and selection, metadata stripping, results collection."""
import json

import nbformat
import pytest

from memdec_helpers import run
from memdec_helpers.artifacts import record_results


def test_notebooks_are_listed_in_lesson_order():
    names = [p.name for p in run.list_notebooks()]
    assert names == sorted(names)
    assert all(n[:2].isdigit() for n in names)


def test_only_filters_and_unknown_prefix_is_refused():
    assert all(p.name.startswith("0") for p in run.list_notebooks(["0"]))
    with pytest.raises(ValueError, match="matches no notebook"):
        run.list_notebooks(["99"])


def test_strip_metadata_leaves_tags_and_drops_the_rest(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"colab": {"provenance": []}, "kernelspec": {"name": "python3"},
                   "papermill": {"x": 1}}
    cell = nbformat.v4.new_code_cell("PROFILE = 'auto'", execution_count=3)
    cell.metadata = {"tags": ["parameters"], "id": "abc", "papermill": {"duration": 1.0}}
    injected = nbformat.v4.new_code_cell("PROFILE = 'tiny'")
    injected.metadata = {"tags": ["injected-parameters"]}
    nb.cells = [cell, injected]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    run.strip_metadata(path)
    out = json.loads(path.read_text())
    assert set(out["metadata"]) == {"kernelspec"}
    assert len(out["cells"]) == 1
    assert out["cells"][0]["metadata"] == {"tags": ["parameters"]}
    assert out["cells"][0]["execution_count"] is None  # no outputs: never run


def test_recorded_results_are_collected(profile):
    record_results(profile, "results_table", {"markdown": "| a |"})
    assert run.load_results(profile) == {"results_table": {"markdown": "| a |"}}
