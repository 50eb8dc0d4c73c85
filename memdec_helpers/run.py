"""Run the course as a batch: every notebook in order with papermill, then a results summary.

    python -m memdec_helpers.run --profile tiny            # all lessons -> runs/tiny/
    python -m memdec_helpers.run --profile tiny --only 03  # one lesson (it builds what it needs)
    python -m memdec_helpers.run --profile tiny --inplace  # refresh the committed notebooks' outputs

Notebooks record results with `record_results(profile, name, data)`; the runner gathers them
into `runs/<profile>/summary.md` and `summary.json`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .artifacts import atomic_write_json, load_results, project_root
from .pipeline import plan
from .profiles import load_profile


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


def run_notebook(path: Path, out_path: Path, profile: str, parameters: dict[str, Any]) -> float:
    import papermill as pm

    start = time.time()
    pm.execute_notebook(str(path), str(out_path), parameters={"PROFILE": profile, **parameters},
                        kernel_name="python3", cwd=str(path.parent), progress_bar=False,
                        log_output=False)
    return time.time() - start


def write_summary(profile_name: str, out_dir: Path, timings: dict[str, float]) -> str:
    results = load_results(load_profile(profile_name))
    summary = {"profile": profile_name, "seconds": timings, "results": results}
    atomic_write_json(out_dir / "summary.json", summary)
    lines = [f"# Course run: profile `{profile_name}`", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.0f} |" for name, sec in timings.items()]
    lines += ["", f"Total: {sum(timings.values()):.0f} s", ""]
    table = results.get("results_table", {}).get("markdown")
    if table:
        lines += ["## Results (test split)", "", table, ""]
    text = "\n".join(lines)
    (out_dir / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", help="tiny | cpu | colab | gpu | auto | a YAML path")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 03")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<profile>)")
    parser.add_argument("--inplace", action="store_true",
                        help="write outputs back into notebooks/ (metadata stripped)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)  # fail early on a bad profile name
    paths = list_notebooks(args.only)
    print(plan(profile), flush=True)  # the plan first: stages, estimated time and memory
    out_dir = Path(args.out) if args.out else notebooks_dir().parent / "runs" / Path(args.profile).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for i, path in enumerate(paths, 1):
        target = path if args.inplace else out_dir / path.name
        print(f"[{i}/{len(paths)}] {path.name} ...", end=" ", flush=True)
        timings[path.stem] = run_notebook(path, target, args.profile, {})
        if args.inplace:
            strip_metadata(target)
        print(f"{timings[path.stem]:.0f} s", flush=True)
    print(write_summary(args.profile, out_dir, timings))


if __name__ == "__main__":
    sys.exit(main())
