"""Point every badge, setup cell and project URL at the repository in memdec_helpers/lessons/publish.py.

    python scripts/set_repo_url.py                       # rewrite README, notebooks, pyproject
    python scripts/set_repo_url.py https://github.com/o/n  # first set REPO_URL to that address
    python scripts/set_repo_url.py --setup-cells         # also make each lesson's first code
                                                         # cell the canonical setup cell
    python scripts/set_repo_url.py --check [--setup-cells]  # change nothing; exit 1 if stale

Only Colab badge links, `git+https://github.com/...` requirements and pyproject's
`Repository = "..."` are touched; other links (papers, reference code) are left alone.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_publish(root: Path) -> ModuleType:
    """memdec_helpers/lessons/publish.py of `root`, loaded by path (no torch import)."""
    path = root / "memdec_helpers" / "lessons" / "publish.py"
    spec = importlib.util.spec_from_file_location("memdec_publish", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_repo_url(root: Path, repo_url: str) -> None:
    """Write `repo_url` into publish.REPO_URL (checked first)."""
    publish = load_publish(root)
    owner, name = publish.github_repo(repo_url)
    path = root / "memdec_helpers" / "lessons" / "publish.py"
    text, count = re.subn(r'(?m)^REPO_URL = ".*"$', f'REPO_URL = "https://github.com/{owner}/{name}"',
                          path.read_text())
    if count != 1:
        raise SystemExit(f"{path}: expected one REPO_URL = \"...\" line, found {count}")
    path.write_text(text)


def lessons(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def with_setup_cell(text: str, source: str) -> str:
    """Notebook JSON text whose first code cell is `source` (outputs cleared if it changed)."""
    nb = json.loads(text)
    cell = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
    if cell is None:
        raise SystemExit("a lesson without a code cell has no setup cell to replace")
    if "".join(cell["source"]) != source:
        cell.update(source=source.splitlines(keepends=True), outputs=[], execution_count=None)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"  # nbformat's layout


def updated_files(root: Path, setup_cells: bool) -> dict[Path, str]:
    """path -> new text, for every file whose text would change."""
    publish = load_publish(root)
    changed = {}
    for path in [root / "README.md", root / "pyproject.toml", *lessons(root)]:
        old = path.read_text()
        new = publish.rewrite_repo_urls(old)
        if setup_cells and path.suffix == ".ipynb":
            new = with_setup_cell(new, publish.setup_cell())
        if new != old:
            changed[path] = new
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_url", nargs="?", help="new address: https://github.com/<owner>/<name>")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--setup-cells", action="store_true",
                        help="also make each lesson's first code cell the canonical setup cell")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    if args.repo_url and args.check:
        parser.error("--check does not take a new address")
    if args.repo_url:
        set_repo_url(args.root, args.repo_url)
    changed = updated_files(args.root, args.setup_cells)
    for path, text in changed.items():
        if not args.check:
            path.write_text(text)
        print(f"{'stale' if args.check else 'updated'}: {path.relative_to(args.root)}")
    if args.check and changed:
        print("run: python scripts/set_repo_url.py" + (" --setup-cells" if args.setup_cells else ""))
        return 1
    print(f"repository {load_publish(args.root).REPO_URL}: "
          f"{len(changed)} file(s) {'stale' if args.check else 'updated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
