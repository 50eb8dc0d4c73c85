"""Run the course as a batch: every notebook in order with papermill, then a results summary.

    python -m memdec_helpers.run --profile tiny            # all lessons -> runs/tiny/
    python -m memdec_helpers.run --profile tiny --only 03  # one lesson (it builds what it needs)
    python -m memdec_helpers.run --profile tiny --inplace  # refresh the committed notebooks' outputs
    python -m memdec_helpers.run --readme runs/tiny/summary.json  # README results table from a run

Notebooks record results with `record_results(profile, name, data)`; the runner gathers them
into `runs/<profile>/summary.md` and `summary.json` (lesson 04 records the results table as
`results.table`, a list of rows; see `memdec_helpers.results`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..core.results import format_table
from ..pipeline import plan
from ..planning.plan import FAR, far_misfits
from ..profiles import is_yaml_path, load_profile
from ..stages.records import load_results, profile_hash, stale_results
from ..stages.store import atomic_write_json, project_root

README_START, README_END = "<!-- results-table:start -->", "<!-- results-table:end -->"


def notebooks_dir() -> Path:
    root = project_root()
    if root is None:
        raise ValueError("the batch runner needs the course repository (clone it; "
                         "a pip-installed memdec_helpers has no notebooks)")
    return root / "notebooks"


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """The lessons `NN_*.ipynb` in order; `only` keeps those whose name starts with a prefix."""
    paths = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
        if not paths:
            raise ValueError(f"--only {only} matches no notebook in {notebooks_dir()}")
    return paths


def strip_metadata(path: Path) -> None:
    """Drop Colab/editor/papermill metadata so committed notebooks diff cleanly."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    nb.metadata.get("language_info", {}).pop("version", None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])
                and c.source]
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        cell.metadata = {"tags": [t for t in tags if t != "injected-parameters"]} if tags else {}
    count = 0
    for cell in nb.cells:  # deterministic counts: nbval refuses outputs on "unrun" cells
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count if cell.get("outputs") else None
            for out in cell.get("outputs", []):
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
    nbformat.write(nb, path)


def import_papermill() -> Any:
    """papermill, or a ValueError that says how to get it (it is the `batch` extra)."""
    try:
        import papermill
    except ImportError as err:
        raise ValueError("the batch runner needs papermill: pip install 'memdec_helpers[batch]' "
                         "(bash scripts/course.sh installs it)") from err
    return papermill


def run_notebook(path: Path, out_path: Path, profile: str, parameters: dict[str, Any]) -> float:
    """Execute one lesson with papermill (progress bars as one final line); seconds taken."""
    pm = import_papermill()
    os.environ.setdefault("MEMDEC_PROGRESS", "line")  # the kernel inherits it
    start = time.time()
    pm.execute_notebook(str(path), str(out_path), parameters={"PROFILE": profile, **parameters},
                        kernel_name="python3", cwd=str(path.parent), progress_bar=False,
                        log_output=False)
    return time.time() - start


def write_summary(profile_name: str, out_dir: Path, timings: dict[str, float]) -> str:
    """summary.json and summary.md of a run: only results recorded under this exact profile
    (hash in `profile_hash`); results of an older config are named in `stale_results`."""
    profile = load_profile(profile_name)
    results, stale = load_results(profile), stale_results(profile)
    summary = {"profile": profile_name, "profile_hash": profile_hash(profile),
               "config": profile.to_dict(), "seconds": timings, "results": results,
               "stale_results": stale}
    atomic_write_json(out_dir / "summary.json", summary)
    lines = [f"# Course run: profile `{profile_name}`", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings.items()]
    lines += ["", f"Total: {sum(timings.values()):.0f} s", ""]
    if stale:
        lines += [f"Left out (recorded under another config of `{profile_name}`): "
                  f"{', '.join(stale)}", ""]
    if results.get("table"):
        lines += ["## Results (test split)", "", format_table(results["table"]), ""]
    text = "\n".join(lines)
    (out_dir / "summary.md").write_text(text)
    return text


def update_readme(summary_path: Path, readme: Path | None = None) -> str:
    """Replace the README's results table (between its marker comments) with the table of a
    course run's summary.json, so the README's numbers are the notebooks' numbers."""
    readme = readme or notebooks_dir().parent / "README.md"
    summary = json.loads(Path(summary_path).read_text())
    rows = summary.get("results", {}).get("table")
    if not rows:
        raise ValueError(f"{summary_path} has no results.table: run lesson 04 (or the whole "
                         "course) first")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} lacks the markers {README_START} ... {README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    table = (f"{README_START}\n<!-- generated from {summary_path} by python -m "
             f"memdec_helpers.run --readme; do not edit by hand -->\n{format_table(rows)}\n")
    readme.write_text(head + table + README_END + tail)
    return format_table(rows)


class LessonFailed(Exception):
    """A lesson raised: its error in one line, and where its full traceback is."""


def profile_argument(profile: str) -> str:
    """The --profile value every kernel is given: a YAML path made absolute from the current
    folder (each kernel runs in notebooks/, where a relative path means something else)."""
    path = Path(profile).expanduser()
    return str(path.absolute()) if is_yaml_path(path) else profile


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", help="tiny | cpu | colab | gpu | auto | a YAML path")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 03")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<profile>)")
    parser.add_argument("--inplace", action="store_true",
                        help="write outputs back into notebooks/ (metadata stripped)")
    parser.add_argument("--readme", metavar="SUMMARY_JSON",
                        help="only rewrite the README's results table from a run's summary.json")
    parser.add_argument("--ignore-plan", action="store_true",
                        help=f"run even when the plan needs more than {FAR:g}x this machine's "
                             "disk or memory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the course; 0 when every lesson ran. An error is one line on stderr that says where
    its full traceback is (the executed notebook, and error.log in the output folder)."""
    args = parse_args(argv)
    args.profile = profile_argument(args.profile)
    log = error_log(args)
    try:
        run_course(args)
    except Exception as err:  # noqa: BLE001 - one line for the learner, the rest in the log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc() + _lesson_traceback(err))
        line = str(err) if isinstance(err, LessonFailed) else f"error: {_one_line(err)}"
        print(f"{line} (full traceback: {log})", file=sys.stderr, flush=True)
        return 1
    return 0


def error_log(args: argparse.Namespace) -> Path:
    """Where a failed run writes its full traceback: error.log in its output folder."""
    return output_dir(args) / "error.log"


def output_dir(args: argparse.Namespace) -> Path:
    """--out, else runs/<profile> in the repository (the working folder without one)."""
    if args.out:
        return Path(args.out)
    root = project_root() or Path.cwd()
    return root / "runs" / Path(args.profile).stem


def _one_line(err: BaseException) -> str:
    """An exception as one line: its message (with its type when that says something)."""
    text = " ".join(str(err).split())
    return text if isinstance(err, (ValueError, OSError)) and text else f"{type(err).__name__}: {text}"


def _lesson_traceback(err: BaseException) -> str:
    """A failed lesson's own traceback (papermill's), after the runner's."""
    cause = err.__cause__
    lines = getattr(cause, "traceback", None) or []
    return "\n\nin the lesson:\n" + "\n".join(lines) if lines else ""


def run_course(args: argparse.Namespace) -> None:
    if args.readme:
        print(update_readme(Path(args.readme)))
        return
    profile = load_profile(args.profile)  # fail early on a bad profile name
    paths = list_notebooks(args.only)
    print(plan(profile), flush=True)  # the plan first: stages, estimated time and memory
    problems = [] if args.ignore_plan else far_misfits(profile)
    if problems:
        raise ValueError("; ".join(problems) + f" (more than {FAR:g}x): nothing was run. Lower "
                         "the caps in the profile, point artifacts_dir at a larger disk, or "
                         "pass --ignore-plan to run anyway")
    out_dir = output_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for i, path in enumerate(paths, 1):
        target = path if args.inplace else out_dir / path.name
        print(f"[{i}/{len(paths)}] {path.name} ...", end=" ", flush=True)
        timings[path.stem] = run_lesson(path, target, args.profile)
        if args.inplace:
            strip_metadata(target)
        print(f"{timings[path.stem]:.0f} s", flush=True)
    print(write_summary(args.profile, out_dir, timings))


def run_lesson(path: Path, target: Path, profile: str) -> float:
    """run_notebook, a lesson's error turned into LessonFailed: one line naming the lesson,
    the error and the executed notebook that holds the full traceback."""
    try:
        return run_notebook(path, target, profile, {})
    except Exception as err:
        if type(err).__name__ != "PapermillExecutionError":
            raise
        print("failed", flush=True)
        message = " ".join(str(getattr(err, "evalue", "")).split())
        raise LessonFailed(f"{path.name} failed: {getattr(err, 'ename', 'error')}: {message}; "
                           f"the executed notebook with the full traceback: {target}") from err


if __name__ == "__main__":
    sys.exit(main())
