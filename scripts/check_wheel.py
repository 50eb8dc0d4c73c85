"""Build the wheel as `pip install git+…` does (isolated, latest setuptools) and check it.

    python scripts/check_wheel.py

Fails (exit 1) if the build prints any setuptools/build-backend warning (deprecations become
build errors later) or if a file git tracks under memdec_helpers/ is missing from the wheel
(a data folder or file type that `[tool.setuptools.package-data]` does not cover).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARNING = re.compile(r"\w*Warning\b|[Dd]eprecat")  # class names and deprecation notices


def build_wheel(out_dir: Path) -> tuple[Path, list[str]]:
    """(the wheel, every line the build printed)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT),
                           "-w", str(out_dir)], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    if done.returncode:
        sys.exit("the wheel build failed:\n" + "\n".join(lines[-40:]))
    return next(out_dir.glob("*.whl")), lines


def tracked_package_files() -> set[str]:
    """Files git tracks under memdec_helpers/ (what the wheel must ship)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "memdec_helpers"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def main() -> int:
    leftovers = [ROOT / "build", ROOT / "memdec_helpers.egg-info"]  # setuptools builds in-tree
    existed = {path for path in leftovers if path.exists()}
    with tempfile.TemporaryDirectory() as tmp:
        wheel, lines = build_wheel(Path(tmp))
        shipped = set(zipfile.ZipFile(wheel).namelist())
    for path in set(leftovers) - existed:
        shutil.rmtree(path, ignore_errors=True)
    warnings = [line for line in lines if WARNING.search(line)]
    missing = sorted(tracked_package_files() - shipped)
    print(f"{wheel.name}: {len(shipped)} files; build output {len(lines)} lines, "
          f"{len(warnings)} warning lines; {len(missing)} tracked files missing")
    for line in warnings[:20] + missing[:20]:
        print("  ", line)
    return 1 if warnings or missing else 0


if __name__ == "__main__":
    sys.exit(main())
