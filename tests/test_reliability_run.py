"""Reliability of the batch runner (issue 21): a relative profile path reaches every kernel,
a plan far beyond the machine stops before any work, and errors are one clear line."""


import pytest

from memdec_helpers.cli import run
from memdec_helpers.planning import plan as plan_module
from memdec_helpers.planning.plan import far_misfits
from memdec_helpers.profiles import load_profile


@pytest.fixture
def fake_course(tmp_path, monkeypatch):
    """The runner with two stand-in lessons whose runs are recorded, not executed."""
    lessons = [tmp_path / "nb" / "01_a.ipynb", tmp_path / "nb" / "02_b.ipynb"]
    calls = []
    monkeypatch.setattr(run, "list_notebooks", lambda only=None: lessons)
    monkeypatch.setattr(run, "run_notebook",
                        lambda path, out, profile, params, kernel_log=None: calls.append((path.name, profile)) or 1.0)
    monkeypatch.setattr(run, "write_summary", lambda *a: "summary")
    monkeypatch.setattr(plan_module, "machine_capacity",
                        lambda p: {"gpu_gb": 0.0, "host_gb": 1e4, "disk_gb": 1e6})
    return calls


def test_a_relative_profile_path_reaches_every_lesson_as_an_absolute_path(tmp_path, monkeypatch,
                                                                        fake_course):
    """`python -m memdec_helpers.run --profile my_domain.yaml`: each kernel runs in notebooks/
    and could not find the relative path."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "my_domain.yaml").write_text("extends: tiny\nk: 32\n")
    monkeypatch.chdir(tmp_path / "work")
    assert run.main(["--profile", "my_domain.yaml", "--out", str(tmp_path / "out")]) == 0
    want = str(tmp_path / "work" / "my_domain.yaml")
    assert fake_course == [("01_a.ipynb", want), ("02_b.ipynb", want)]


def test_far_misfits_compares_the_plan_with_the_machine():
    profile = load_profile("tiny")
    plan = plan_module.make_plan(profile)
    roomy = {"gpu_gb": 0.0, "host_gb": 100 * plan.host_gb, "disk_gb": 100 * plan.disk_gb}
    assert far_misfits(profile, roomy) == []
    tight = {"gpu_gb": 0.0, "host_gb": plan.host_gb / 3, "disk_gb": plan.disk_gb / 3}
    problems = far_misfits(profile, tight)
    assert len(problems) == 2 and "GB of disk" in problems[0] and "GB of host memory" in problems[1]
    assert far_misfits(profile, {**roomy, "disk_gb": plan.disk_gb / 1.5}) == []  # not by far


def test_a_plan_far_beyond_the_machine_stops_before_any_lesson(tmp_path, monkeypatch, fake_course,
                                                               capsys):
    """A plan of 475,000 GB was printed and the run went on."""
    monkeypatch.setattr(plan_module, "machine_capacity",
                        lambda p: {"gpu_gb": 0.0, "host_gb": 1e4, "disk_gb": 1e-4})
    out = str(tmp_path / "out")
    assert run.main(["--profile", "tiny", "--out", out]) == 1
    err = capsys.readouterr().err
    assert fake_course == [] and "GB of disk" in err and "--ignore-plan" in err
    assert "Traceback" not in err
    assert run.main(["--profile", "tiny", "--out", out, "--ignore-plan"]) == 0
    assert len(fake_course) == 2


def test_a_failing_lesson_is_one_line_and_says_where_the_traceback_is(tmp_path, monkeypatch,
                                                                      fake_course, capsys):
    from papermill.exceptions import PapermillExecutionError

    def fail(path, out, profile, params, kernel_log=None):
        raise PapermillExecutionError(3, 3, "P.corpus(profile)", "ValueError",
                                      "corpus 'files:/x' is too small",
                                      ["Traceback (most recent call last)", "...deep..."])

    monkeypatch.setattr(run, "run_notebook", fail)
    out = tmp_path / "out"
    assert run.main(["--profile", "tiny", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "deep" not in err
    assert "01_a: ValueError: corpus 'files:/x' is too small (cell [3]; full traceback: " in err
    assert str(out / "01_a.ipynb") in err and str(out / "error.log") in err
    assert "deep" in (out / "error.log").read_text()


def test_a_runner_error_is_one_line(tmp_path, capsys):
    assert run.main(["--profile", "nonsense", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown profile 'nonsense'") and "Traceback" not in err
    assert "error.log" in err
