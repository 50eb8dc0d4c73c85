"""The package's layers, pinned: each module imports only from its own layer or those below it,
`profiles` and `progress` import nothing of the package, `core` nothing outside itself, the stages
never the facade, and no module imports itself back through a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "memdec_helpers"
LAYERS = ["profiles", "progress", "core", "runtime", "stages", "planning", "pipeline", "lessons",
          "cli", "run"]  # from the ground up
ALLOWED_BELOW = {  # a layer may import these layers (and itself)
    "profiles": set(), "progress": set(),
    "core": set(),
    "runtime": {"profiles", "progress", "core"},
    "stages": {"profiles", "progress", "core", "runtime"},
    "planning": {"profiles", "progress", "core", "runtime", "stages"},
    "pipeline": {"profiles", "progress", "core", "runtime", "stages", "planning", "lessons"},
    "lessons": {"profiles", "progress", "core", "runtime"},
    "cli": {"profiles", "progress", "core", "runtime", "stages", "planning", "pipeline", "lessons"},
    "run": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> str:
    return module.split(".")[0]


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """The package modules `path` (the module named `module`) imports, relative imports
    resolved, at any depth of the file."""
    here = (module or module_name(path)).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import a, b
                found |= {".".join(base + [alias.name]) for alias in node.names}
            else:
                found.add(target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found |= {n.split(".", 1)[1] for n in names if n.startswith("memdec_helpers.")}
    return {m for m in found if m}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"
           or p.parent != PACKAGE}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    layer = layer_of(module)
    assert layer in ALLOWED_BELOW, f"{module}: not in a known layer; add it to LAYERS"
    allowed = ALLOWED_BELOW[layer] | {layer}
    wrong = sorted(m for m in imports_of(MODULES[module]) if layer_of(m) not in allowed)
    assert not wrong, f"{module} ({layer}) imports {wrong}, above its layer"


def test_no_import_cycles():
    graph = {m: {i for i in imports_of(p) if i in MODULES} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [module, nxt]))
            if nxt not in state:
                visit(nxt, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_contract_can_fail(tmp_path):
    """The checker sees imports that go up a layer, however written (so the tests above can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..stages.store import stage_dir\nfrom . import knn\n"
                     "def f():\n    import memdec_helpers.pipeline\n")
    assert imports_of(probe, "core.probe") == {"stages.store", "core.knn", "pipeline"}
