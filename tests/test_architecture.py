"""The layout shows the architecture: stages as folders with arrows pointing down (no module imports a
stage above its own, so there is no import cycle), and no function too long to read at once."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "compress"
# bottom to top; a module may import its own stage and the stages below it
STAGES = [{"errors", "bounds", "arch", "files", "layout", "runtime"}, {"data"}, {"nn"}, {"backbones"}, {"adapters"},
          {"measure"}, {"engine"}, {"store"}, {"nas"}, {"app"}, {"suite"}]
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Set[str]:
    """Every compress module ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("compress"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compress"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in out if m in modules}


def stage(module: str) -> int:
    top = module.split(".")[1] if module != "compress" else ""
    return next((i for i, names in enumerate(STAGES) if top in names), len(STAGES))


ROOTS = {"compress", "compress.__main__"}  # the lazy public API (imports nothing on import) and `python -m`


def graph() -> Dict[str, Set[str]]:
    """module -> the compress modules it imports, the roots left out."""
    return {module_name(p): imports(p) - ROOTS for p in PACKAGE.rglob("*.py") if module_name(p) not in ROOTS}


def test_every_module_belongs_to_a_stage():
    assert not [m for m in graph() if stage(m) == len(STAGES)]


def test_arrows_point_down():
    upward = [(m, dep) for m, deps in graph().items() for dep in deps if stage(dep) > stage(m)]
    assert not upward, upward


def test_no_import_cycle():
    edges = {m: deps - {m} for m, deps in graph().items()}
    state: Dict[str, int] = {}
    path: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(edges.get(m, ())):
            if d not in edges:
                continue
            assert state.get(d) != 1, " -> ".join(path[path.index(d):] + [d])
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in [*PACKAGE.rglob("*.py"), REPO / "cli.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
