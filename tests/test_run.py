"""Batch runner: notebook order and selection, metadata stripping, results collection (only
results of the profile that runs)."""
import json
import os
from dataclasses import replace

import nbformat
import pytest

from memdec_helpers.cli import run
from memdec_helpers.profiles import load_profile
from memdec_helpers.stages.records import record_results


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
    text = run.write_summary("tiny", tmp_path, {"03_training": run.LessonRun("03_training", "ok", 1.0)})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"] == {"03_training": {"loss": 2.0}}
    assert summary["stale_results"] == ["results_table"]
    assert summary["config"]["k"] == profile.k and "| old |" not in text
    assert summary["seconds"] == {"03_training": 1.0}
    assert summary["lessons"] == {"03_training": {"status": "ok", "seconds": 1.0}}


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


def test_readme_gets_lesson_07s_table_between_its_own_markers(tmp_path):
    from test_results import _table

    rows = _table(b0=100.0, b1=90.0, k0=80.0, k1=75.0, m=85.0, bm0=70.0, bm1=68.0)
    memories = [{**r, "domain": "facts"} for r in rows[:2]]
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"results": {"table": rows, "memories": {"table": memories}}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"{run.README_START}\n{run.README_END}\nmid\n{run.MEMORIES_START}\nold\n"
                      f"{run.MEMORIES_END}\nend\n")
    run.update_readme(summary, readme)
    text = readme.read_text()
    memories_part = text.split(run.MEMORIES_START)[1]
    assert "old" not in memories_part and "| facts | base 0 |" in memories_part
    assert "| domain |" not in text.split(run.MEMORIES_START)[0]  # the main table has no domain
    assert text.endswith(f"{run.MEMORIES_END}\nend\n")


# --- failures, --keep-going, summary.json: tiny notebooks run by papermill -----------------------

def fake_lesson(folder, name, code):
    """A notebook `name`.ipynb with a `parameters` cell (PROFILE) and one cell of `code`."""
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("PROFILE = 'tiny'")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, folder / f"{name}.ipynb")


RECORD = ("from memdec_helpers.profiles import load_profile\n"
          "from memdec_helpers.stages.records import record_results\n"
          "record_results(load_profile(PROFILE), {name!r}, {{'x': 1}})")


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch):
    """Three lessons, the second failing in its third cell; the runner pointed at them (the
    plan's machine check passed), artifacts in tmp_path; the output folder."""
    from memdec_helpers.planning import plan as plan_module

    folder = tmp_path / "notebooks"
    folder.mkdir()
    fake_lesson(folder, "01_first", RECORD.format(name="01_first")  # and C-level output (faiss)
                + "\nimport os\nos.write(2, b'WARNING clustering 3999 points\\n')")
    fake_lesson(folder, "02_second", "assert x == 2, 'the table says\\n  otherwise'")
    fake_lesson(folder, "03_third", RECORD.format(name="03_third"))
    monkeypatch.setattr(run, "notebooks_dir", lambda: folder)
    monkeypatch.setenv("MEMDEC_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(plan_module, "machine_capacity",
                        lambda p: {"gpu_gb": 0.0, "host_gb": 1e4, "disk_gb": 1e6})
    return tmp_path / "out"


@pytest.mark.slow
def test_a_failing_cell_is_one_line_and_the_run_stops(fake_notebooks, capfd):
    out = fake_notebooks
    assert run.main(["--profile", "tiny", "--out", str(out)]) == 1
    stdout, stderr = capfd.readouterr()  # fd level: the kernels' own output too
    line = (f"02_second: AssertionError: the table says otherwise (cell [4]; full traceback: "
            f"{out / '02_second.ipynb'}, {out / 'error.log'})")
    assert line in stderr.splitlines()
    assert "Traceback" not in stdout + stderr and "Papermill" not in stdout + stderr
    assert "without encryption" not in stdout + stderr  # the kernels run on IPC sockets
    assert "WARNING clustering" not in stdout + stderr  # the kernel's own output: in its log
    assert "WARNING clustering 3999" in (out / "01_first.kernel.log").read_text()
    assert not (out / "02_second.kernel.log").exists()  # nothing printed: no log
    assert "[3/3] 03_third ... skipped" in stdout
    assert "1 of 3 lessons failed (02_second), 1 not run (03_third)" in stderr
    assert "assert x == 2" in (out / "error.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    lessons = summary["lessons"]
    assert [lessons[n]["status"] for n in ("01_first", "02_second", "03_third")] == [
        "ok", "failed", "skipped"]
    assert lessons["02_second"]["error"] == "AssertionError: the table says otherwise"
    assert lessons["02_second"]["cell"] == 4 and "seconds" not in lessons["03_third"]
    assert lessons["01_first"]["kernel_log"] == str(out / "01_first.kernel.log")
    assert summary["failed"] == ["02_second"] and summary["ok"] is False
    assert set(summary["seconds"]) == {"01_first", "02_second"}
    assert summary["results"] == {"01_first": {"x": 1}} and summary["earlier_results"] == []


@pytest.mark.slow
def test_keep_going_runs_the_lessons_after_a_failure(fake_notebooks, capfd):
    out = fake_notebooks
    assert run.main(["--profile", "tiny", "--out", str(out), "--keep-going"]) == 1
    stdout, stderr = capfd.readouterr()
    assert "02_second: AssertionError: the table says otherwise" in stderr
    assert "[3/3] 03_third ... " in stdout and "skipped" not in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {n: r["status"] for n, r in summary["lessons"].items()} == {
        "01_first": "ok", "02_second": "failed", "03_third": "ok"}
    assert summary["results"] == {"01_first": {"x": 1}, "03_third": {"x": 1}}
    assert "| 02_second | failed |" in (out / "summary.md").read_text()
    # the failed lesson left out: every lesson runs, the earlier run's error.log is gone
    assert run.main(["--profile", "tiny", "--out", str(out), "--only", "01", "03"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["failed"] == [] and set(summary["lessons"]) == {
        "01_first", "03_third"}
    assert not (out / "error.log").exists()


def test_a_lesson_whose_need_failed_is_skipped(tmp_path, monkeypatch, capsys):
    """DEPENDS_ON (empty as shipped: every lesson builds what it needs) skips the dependents
    of a failed lesson under --keep-going, and only them."""
    from memdec_helpers.planning import plan as plan_module

    lessons = [tmp_path / f"{n}.ipynb" for n in ("01_a", "02_b", "03_c", "04_d")]
    monkeypatch.setattr(run, "list_notebooks", lambda only=None: lessons)
    monkeypatch.setattr(plan_module, "machine_capacity",
                        lambda p: {"gpu_gb": 0.0, "host_gb": 1e4, "disk_gb": 1e6})
    monkeypatch.setenv("MEMDEC_ARTIFACTS", str(tmp_path / "artifacts"))
    ran = []

    def fake(path, out, profile, params, kernel_log=None):
        ran.append(path.stem)
        if path.stem == "02_b":
            raise RuntimeError("kernel died")
        return 1.0

    monkeypatch.setattr(run, "run_notebook", fake)
    monkeypatch.setattr(run, "DEPENDS_ON", {"03": ("02",)})
    assert run.main(["--profile", "tiny", "--out", str(tmp_path / "out"), "--keep-going"]) == 1
    assert ran == ["01_a", "02_b", "04_d"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["lessons"]["03_c"] == {"status": "skipped",
                                          "reason": "needs 02_b, which did not run"}
    assert summary["lessons"]["02_b"]["error"] == "RuntimeError: kernel died"
    assert "02_b: RuntimeError: kernel died (full traceback: " in capsys.readouterr().err


def test_the_shipped_lessons_are_independent():
    """The --keep-going rule as shipped: no lesson needs another (see DEPENDS_ON)."""
    assert run.DEPENDS_ON == {}


def test_kernels_use_ipc_sockets_at_an_absolute_path():
    if not run.ipc_available():
        pytest.skip("no IPC sockets on this platform")
    km = run.kernel_manager_class()(kernel_name="python3")
    assert km.transport == "ipc" and km.ip.startswith(str(run.ipc_folder()))
    assert len(km.ip) < 90  # room for "-<port>" within a socket name's ~107 bytes


def test_kernels_draw_figures_even_when_tests_set_a_non_interactive_backend(monkeypatch):
    from memdec_helpers.cli import run as runner

    monkeypatch.setenv("MPLBACKEND", "Agg")
    runner.keep_figures()
    assert "MPLBACKEND" not in os.environ
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    runner.keep_figures()
    assert os.environ["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"
