"""Batch runner: notebook order and selection, metadata stripping, results collection (only
results of the profile that runs)."""
import json
from dataclasses import replace

import nbformat
import pytest

from memdec_helpers.cli import run
from memdec_helpers.stages.records import record_results
from memdec_helpers.profiles import load_profile


def test_notebooks_are_listed_in_lesson_order(tmp_path, monkeypatch):
    for name in ["10_last.ipynb", "02_second.ipynb", "01_first.ipynb", "notes.ipynb",
                 "3_one_digit.ipynb", "01_first.py"]:
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(run, "notebooks_dir", lambda: tmp_path)
    assert [p.name for p in run.list_notebooks()] == ["01_first.ipynb", "02_second.ipynb",
                                                      "10_last.ipynb"]
    assert [p.name for p in run.list_notebooks(["1", "02"])] == ["02_second.ipynb",
                                                                "10_last.ipynb"]


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


def test_summary_holds_only_results_of_the_profile_that_ran(tmp_path, monkeypatch):
    """A result recorded under an older config of the profile used to be mixed in."""
    monkeypatch.setenv("MEMDEC_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = load_profile("tiny")
    record_results(replace(profile, k=profile.k // 2), "results_table", {"markdown": "| old |"})
    record_results(profile, "03_training", {"loss": 2.0})
    text = run.write_summary("tiny", tmp_path, {"03_training": 1.0})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"] == {"03_training": {"loss": 2.0}}
    assert summary["stale_results"] == ["results_table"]
    assert summary["config"]["k"] == profile.k and "| old |" not in text


def test_readme_table_is_rewritten_from_a_summary(tmp_path):
    from test_results import _table

    rows = _table(b0=100.0, b1=90.0, k0=80.0, k1=75.0, m=85.0, bm0=70.0, bm1=68.0)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"results": {"table": rows}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{run.README_START}\nold numbers\n{run.README_END}\nafter\n")
    run.update_readme(summary, readme)
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith(f"{run.README_END}\nafter\n")
    assert "| base 0 + MemDec | 0.75 | 0.00–1.00 | 0.75 | 70.00 | 70.00 |  |" in text
    run.update_readme(summary, readme)  # idempotent
    assert readme.read_text() == text
    plain = tmp_path / "plain.md"
    plain.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        run.update_readme(summary, plain)
    with pytest.raises(ValueError, match="no results.table"):
        summary.write_text("{}")
        run.update_readme(summary, readme)
