"""Packaging metadata: what current setuptools accepts without warnings, every bundled file
covered by package-data, papermill only in the `batch` extra. (The full wheel build is
`python scripts/check_wheel.py`.)"""
import fnmatch
import sys
from pathlib import Path

import pytest

from memdec_helpers.cli import run

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(specs: list[str]) -> set[str]:
    """'papermill>=2.5' -> 'papermill'."""
    return {s.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip() for s in specs}


def test_license_is_an_spdx_string_with_existing_license_files(pyproject):
    project = pyproject["project"]
    assert project["license"] == "MIT"  # a TOML table is deprecated (a build error from 2027)
    assert project["license-files"] and all((ROOT / f).is_file() for f in project["license-files"])
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]  # PEP 639 support


def test_every_bundled_file_is_package_data(pyproject):
    """Each non-Python file in the package matches a package-data pattern and sits in a package
    that packages.find includes: a new data file type must be added to pyproject.toml."""
    patterns = pyproject["tool"]["setuptools"]["package-data"]["*"]
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    files = [p for p in (ROOT / "memdec_helpers").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"]
    assert files, "the package ships data (profiles, corpora, models)"
    for path in files:
        assert any(fnmatch.fnmatch(path.name, pat) for pat in patterns), f"{path} is not package data"
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(package, pat) for pat in include), f"{package} is not found"


def test_papermill_is_only_a_batch_extra(pyproject):
    project = pyproject["project"]
    assert "papermill" not in requirement_names(project["dependencies"])  # Colab never needs it
    extras = project["optional-dependencies"]
    assert "papermill" in requirement_names(extras["batch"])
    assert "memdec_helpers[batch]" in extras["test"]  # CI runs the notebooks with papermill


def test_runner_without_papermill_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # import papermill -> ImportError
    with pytest.raises(ValueError, match=r"memdec_helpers\[batch\]"):
        run.import_papermill()
