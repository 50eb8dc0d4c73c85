"""Run the course as a batch: every notebook in order with papermill, then a results summary.

    python -m memdec_helpers.run --profile tiny            # all lessons -> runs/tiny/
    python -m memdec_helpers.run --profile tiny --only 03  # one lesson (it builds what it needs)
    python -m memdec_helpers.run --profile tiny --inplace  # refresh the committed notebooks' outputs
    python -m memdec_helpers.run --profile my.yaml --keep-going  # run on past a failed lesson
    python -m memdec_helpers.run --readme runs/tiny/summary.json  # README results table from a run

One line per lesson; a failed lesson is one line, its name and the failing cell's own error
(`04_interpolation: AssertionError: ...`), with where its full traceback is (the executed
notebook, and error.log in the output folder). The run stops at the first failure, or with
--keep-going runs every lesson that does not depend on a failed one: the lessons are
independent (each builds what it needs through the pipeline's cached stages, so lesson 04
trains the Memory Decoder itself when lesson 03 did not), so only the failed lesson is lost.
Kernels print nothing to the terminal: they talk over IPC sockets, and what one prints outside
its notebook (C libraries, a dying kernel) goes to `<lesson>.kernel.log` in the output folder.

Notebooks record results with `record_results(profile, name, data)`; the runner gathers them
into `runs/<profile>/summary.md` and `summary.json`, written after every run, failed or not
(lesson 04 records the results table as `results.table`, a list of rows; see
`memdec_helpers.results`): per lesson its status (ok, failed with its error, skipped), the
seconds of those that ran, and the results recorded under this profile. The exit code is 1
when a lesson failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.results import format_table
from ..pipeline import plan
from ..planning.plan import FAR, far_misfits
from ..profiles import is_yaml_path, load_profile
from ..stages.records import load_results, profile_hash, stale_results
from ..stages.store import atomic_write_json, project_root, stage_dir

README_START, README_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
MEMORIES_START, MEMORIES_END = "<!-- memories-table:start -->", "<!-- memories-table:end -->"
# lesson -> the lessons it needs to have run first (with --keep-going, a lesson whose need failed
# is skipped). Empty: every lesson builds what it needs itself through the pipeline's cached
# stages (lesson 04 trains the Memory Decoder when lesson 03 did not), and no notebook reads
# another's output; a lesson that starts to must be named here.
DEPENDS_ON: dict[str, tuple[str, ...]] = {}


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


def kernel_manager_class(kernel_log: Path | None = None) -> type:
    """A jupyter kernel manager whose kernel prints nothing to the runner's terminal:

    - on IPC sockets in the jupyter runtime folder, where the platform has them (not Windows):
      a kernel on TCP without CurveZMQ keys logs "Kernel is running over TCP without
      encryption" (ipykernel's kernelapp) straight to the terminal, once per lesson;
    - its own stdout and stderr into `kernel_log`: what C code prints (faiss, torch) reaches the
      notebook's output and, echoed by ipykernel, the terminal; so does a dying kernel's last
      words. The notebook keeps its outputs; the log keeps the rest."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    ipc = ipc_available()

    class LessonKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc" if ipc else "tcp"

        @default("ip")
        def _default_ip(self) -> str:  # an absolute path: the default, `kernel-ipc-<n>` in the
            # kernel's working folder, would leave sockets in notebooks/ after a crash
            return str(ipc_folder() / f"memdec-kernel-{uuid.uuid4().hex[:12]}") if ipc \
                else super()._ip_default()

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            if kernel_log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            with open(kernel_log, "ab") as log:  # noqa: ASYNC230 - once a lesson; the kernel
                # process holds its own copy of the file
                streams = {"stdout": log, "stderr": log}
                return await super()._async_launch_kernel(kernel_cmd, **{**kw, **streams})

    return LessonKernelManager


def ipc_available() -> bool:
    """Whether kernels can talk over IPC sockets here (zmq has them; not on Windows)."""
    import zmq

    return os.name != "nt" and bool(zmq.has("ipc"))


def ipc_folder() -> Path:
    """Where the kernels' IPC sockets live: jupyter's runtime folder, or the temporary folder
    where that path is too long for a socket name (about 100 bytes)."""
    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(jupyter_runtime_dir())
    if len(str(folder)) > 60:
        folder = Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_notebook(path: Path, out_path: Path, profile: str, parameters: dict[str, Any],
                 kernel_log: Path | None = None) -> float:
    """Execute one lesson with papermill (progress bars as one final line; the kernel's own
    output, outside the notebook, into `kernel_log`); seconds taken."""
    pm = import_papermill()
    os.environ.setdefault("MEMDEC_PROGRESS", "line")  # the kernel inherits it
    keep_figures()
    start = time.time()
    pm.execute_notebook(str(path), str(out_path), parameters={"PROFILE": profile, **parameters},
                        kernel_name="python3", cwd=str(path.parent), progress_bar=False,
                        log_output=False, kernel_manager_class=kernel_manager_class(kernel_log))
    return time.time() - start


def keep_figures() -> None:
    """Kernels draw figures inline: a non-interactive MPLBACKEND (Agg, set for tests) inherited by
    a kernel would make every plt.show() a no-op and leave the executed notebooks without figures."""
    if os.environ.get("MPLBACKEND", "").lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        del os.environ["MPLBACKEND"]


@dataclass
class LessonRun:
    """What became of one lesson in a run: status "ok", "failed" or "skipped" (not run: an
    earlier lesson failed without --keep-going, or a lesson it depends on failed)."""

    name: str
    status: str = "skipped"
    seconds: float | None = None
    error: str | None = None  # failed: the failing cell's error in one line, "<Type>: <message>"
    cell: int | None = None  # failed: the failing cell's execution count, when a cell raised
    notebook: str | None = None  # the executed notebook (failed: it holds the full traceback)
    kernel_log: str | None = None  # what the kernel printed outside the notebook, if anything
    reason: str | None = None  # skipped: why
    traceback: str = ""  # failed: the full traceback, for error.log (not in summary.json)

    def record(self) -> dict[str, Any]:
        """The lesson's entry in summary.json (the fields that are set)."""
        return {k: v for k, v in asdict(self).items()
                if v is not None and k not in ("name", "traceback")}


def write_summary(profile_name: str, out_dir: Path, lessons: dict[str, LessonRun],
                  started: float | None = None) -> str:
    """summary.json and summary.md of a run: per lesson its status (ok, failed with its error,
    skipped), seconds of the lessons that ran, and the results recorded under this exact
    profile (hash in `profile_hash`; `results.table` is lesson 04's table); results of an
    older config are named in `stale_results`, results this run did not write (recorded
    before `started`) in `earlier_results`."""
    profile = load_profile(profile_name)
    results, stale = load_results(profile), stale_results(profile)
    timings = {name: run.seconds for name, run in lessons.items() if run.seconds is not None}
    failed = [name for name, run in lessons.items() if run.status == "failed"]
    summary = {"profile": profile_name, "profile_hash": profile_hash(profile),
               "config": profile.to_dict(), "ok": not failed, "failed": failed,
               "lessons": {name: run.record() for name, run in lessons.items()},
               "seconds": timings, "results": results, "stale_results": stale,
               "earlier_results": earlier_results(profile, results, started)}
    atomic_write_json(out_dir / "summary.json", summary)
    lines = [f"# Course run: profile `{profile_name}`", "",
             "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {run.status} | {'' if run.seconds is None else f'{run.seconds:.0f}'} |"
              for name, run in lessons.items()]
    lines += ["", f"Total: {sum(timings.values()):.0f} s", ""]
    for name in failed:
        lines += [f"Failed: {name}: {lessons[name].error}", ""]
    if stale:
        lines += [(f"Left out (recorded under another config of `{profile_name}`): "
                   f"{', '.join(stale)}"), ""]
    if results.get("table"):
        lines += ["## Results (test split)", "", format_table(results["table"]), ""]
    text = "\n".join(lines)
    (out_dir / "summary.md").write_text(text)
    return text


def earlier_results(profile: Any, results: dict[str, Any], started: float | None) -> list[str]:
    """Names of `results` recorded before `started` (a lesson that failed or was skipped this
    run leaves its last good run's record in place); none when `started` is None."""
    if started is None:
        return []
    folder = stage_dir(profile, "results")
    return sorted(name for name in results
                  if (folder / f"{name}.json").stat().st_mtime < started)


def update_readme(summary_path: Path, readme: Path | None = None) -> str:
    """Replace the README's results table (between its marker comments) with the table of a
    course run's summary.json, so the README's numbers are the notebooks' numbers; lesson 07's
    table of memories goes between its own markers when the run recorded it."""
    readme = readme or notebooks_dir().parent / "README.md"
    results = json.loads(Path(summary_path).read_text()).get("results", {})
    rows = results.get("table")
    if not rows:
        raise ValueError(f"{summary_path} has no results.table: run lesson 04 (or the whole "
                         "course) first")
    note = (f"<!-- generated from {summary_path} by python -m memdec_helpers.run --readme; "
            "do not edit by hand -->")
    text = _between(readme.read_text(), README_START, README_END, f"{note}\n{format_table(rows)}",
                    readme)
    memories = (results.get("memories") or {}).get("table")
    if memories and MEMORIES_START in text:
        text = _between(text, MEMORIES_START, MEMORIES_END, f"{note}\n{format_table(memories)}",
                        readme)
    readme.write_text(text)
    return format_table(rows)


def _between(text: str, start: str, end: str, body: str, where: Path) -> str:
    """`text` with what lies between the markers `start` and `end` replaced by `body`."""
    if start not in text or end not in text:
        raise ValueError(f"{where} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


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
    parser.add_argument("--keep-going", action="store_true",
                        help="after a failed lesson, run the lessons that do not depend on it "
                             "(all of them: every lesson builds what it needs through the "
                             "pipeline's cached stages; DEPENDS_ON in cli/run.py names any "
                             "exception); without it the run stops at the first failure")
    parser.add_argument("--readme", metavar="SUMMARY_JSON",
                        help="only rewrite the README's results table from a run's summary.json")
    parser.add_argument("--ignore-plan", action="store_true",
                        help=f"run even when the plan needs more than {FAR:g}x this machine's "
                             "disk or memory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the course; 0 when every lesson ran, 1 when one failed (its one line on stderr, as
    the run went) or the runner itself failed (one line on stderr that says where its full
    traceback is: error.log in the output folder)."""
    args = parse_args(argv)
    args.profile = profile_argument(args.profile)
    log = error_log(args)
    try:
        lessons = run_course(args)
    except Exception as err:  # noqa: BLE001 - one line for the learner, the rest in the log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        print(f"error: {_one_line(err)} (full traceback: {log})", file=sys.stderr, flush=True)
        return 1
    failed = [run for run in lessons.values() if run.status == "failed"]
    if failed:
        skipped = [name for name, run in lessons.items() if run.status == "skipped"]
        print(f"{len(failed)} of {len(lessons)} lessons failed ({', '.join(r.name for r in failed)})"
              + (f", {len(skipped)} not run ({', '.join(skipped)})" if skipped else "")
              + f"; summary: {output_dir(args) / 'summary.json'}", file=sys.stderr, flush=True)
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


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours papermill's traceback lines


def lesson_error(err: Exception) -> tuple[str, int | None, str]:
    """(the error in one line, the failing cell's execution count, the full traceback) of a
    lesson that raised: from papermill's PapermillExecutionError the cell's own exception
    (`ename: evalue`) and traceback; anything else (a kernel that died, a timeout) as itself."""
    if type(err).__name__ == "PapermillExecutionError":
        message = " ".join(str(getattr(err, "evalue", "")).split())
        line = f"{err.ename}: {message}" if message else f"{err.ename} (no message)"
        lines = getattr(err, "traceback", None) or []
        return line, getattr(err, "exec_count", None), ANSI.sub("", "\n".join(lines))
    return _one_line(err), None, "".join(traceback.format_exception(err))


def failure_line(run: LessonRun, log: Path) -> str:
    """The one line a failed lesson is reported by: its name, the cell's error, and where the
    full traceback is."""
    cell = f"cell [{run.cell}]; " if run.cell is not None else ""
    return f"{run.name}: {run.error} ({cell}full traceback: {run.notebook}, {log})"


def blocked_by(name: str, lessons: dict[str, LessonRun]) -> list[str]:
    """The lessons `name` depends on (DEPENDS_ON, by number prefix) that failed or were
    skipped in this run."""
    needs = DEPENDS_ON.get(name[:2], ())
    return [other for other, run in lessons.items()
            if other[:2] in needs and run.status != "ok"]


def run_course(args: argparse.Namespace) -> dict[str, LessonRun]:
    """Run the selected lessons in order; what became of each (summary.json is written in any
    case, error.log when a lesson failed)."""
    if args.readme:
        print(update_readme(Path(args.readme)))
        return {}
    profile = load_profile(args.profile)  # fail early on a bad profile name
    paths = list_notebooks(args.only)
    import_papermill()  # before any work: a missing papermill is the runner's error
    print(plan(profile), flush=True)  # the plan first: stages, estimated time and memory
    problems = [] if args.ignore_plan else far_misfits(profile)
    if problems:
        raise ValueError("; ".join(problems) + f" (more than {FAR:g}x): nothing was run. Lower "
                         "the caps in the profile, point artifacts_dir at a larger disk, or "
                         "pass --ignore-plan to run anyway")
    out_dir = output_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = error_log(args)
    log.unlink(missing_ok=True)  # an earlier run's: this run writes its own if a lesson fails
    lessons = {path.stem: LessonRun(path.stem) for path in paths}
    started = time.time()
    try:
        run_lessons(args, paths, lessons, log)
    finally:  # also on Ctrl-C: what ran is recorded
        failed = [run for run in lessons.values() if run.status == "failed"]
        if failed:
            log.write_text("\n\n".join(f"=== {run.name}: {run.error}\n{run.traceback}"
                                        for run in failed))
        print(write_summary(args.profile, out_dir, lessons, started), flush=True)
    return lessons


def run_lessons(args: argparse.Namespace, paths: list[Path], lessons: dict[str, LessonRun],
                log: Path) -> None:
    """Run each lesson in `lessons` (filled in as they go): one line each; stop at the first
    failure unless --keep-going, then skip only the lessons that depend on a failed one."""
    out_dir = output_dir(args)
    for i, path in enumerate(paths, 1):
        run = lessons[path.stem]
        print(f"[{i}/{len(paths)}] {path.stem} ...", end=" ", flush=True)
        if any(r.status == "failed" for r in lessons.values()) and not args.keep_going:
            run.reason = "an earlier lesson failed (--keep-going runs the others)"
        elif blocked_by(path.stem, lessons):
            run.reason = f"needs {', '.join(blocked_by(path.stem, lessons))}, which did not run"
        if run.reason:
            print(f"skipped: {run.reason}", flush=True)
            continue
        target = path if args.inplace else out_dir / path.name
        run_lesson(path, target, args.profile, run, out_dir / f"{path.stem}.kernel.log")
        if run.status == "ok":
            if args.inplace:
                strip_metadata(target)
            print(f"{run.seconds:.0f} s", flush=True)
        else:
            print(f"failed after {run.seconds:.0f} s", flush=True)
            print(failure_line(run, log), file=sys.stderr, flush=True)


def run_lesson(path: Path, target: Path, profile: str, run: LessonRun, kernel_log: Path) -> None:
    """run_notebook, its outcome written into `run`: ok and seconds, or failed with the
    failing cell's error in one line and the traceback (KeyboardInterrupt passes through,
    the lesson marked failed). `kernel_log` keeps what the kernel printed outside the
    notebook (removed when it printed nothing)."""
    run.notebook = str(target)
    kernel_log.unlink(missing_ok=True)
    start = time.time()
    try:
        run.seconds = run_notebook(path, target, profile, {}, kernel_log=kernel_log)
        run.status = "ok"
    except KeyboardInterrupt:
        run.status, run.seconds, run.error = "failed", time.time() - start, "interrupted"
        raise
    except Exception as err:  # noqa: BLE001 - a lesson's failure is reported, not raised
        run.status, run.seconds = "failed", time.time() - start
        run.error, run.cell, run.traceback = lesson_error(err)
    finally:
        if kernel_log.exists() and kernel_log.stat().st_size == 0:
            kernel_log.unlink()
        if kernel_log.exists():
            run.kernel_log = str(kernel_log)
            tail = kernel_log.read_text(errors="replace").splitlines()[-KERNEL_LOG_TAIL:]
            run.traceback += (f"\n\nthe kernel's own output (outside the notebook), {kernel_log}, "
                              f"last {len(tail)} lines:\n" + "\n".join(tail))


KERNEL_LOG_TAIL = 40  # lines of a failed lesson's kernel log copied into error.log


if __name__ == "__main__":
    sys.exit(main())
