"""The layout's rules, checked on the source (README "Architecture"):

- dependencies point one way: ``wire`` imports nothing of ours, ``cache`` only
  ``wire``, ``client`` only ``wire``, ``daemon`` only ``wire`` and ``client``; the two
  daemons ``server`` and ``balancer`` import those, never each other;
- nothing but the tests (and a micro-benchmark that times a part in-process, named
  below) imports ``server`` or ``balancer``;
- no import cycle among our modules at import time;
- no module of the runtime packages is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("wire", "cache", "client", "daemon", "server", "balancer")
ALLOWED = {
    "wire": {"wire"},
    "cache": {"cache", "wire"},
    "client": {"client", "wire"},
    "daemon": {"daemon", "client", "wire"},
    "server": {"server", "daemon", "client", "cache", "wire"},
    "balancer": {"balancer", "daemon", "client", "cache", "wire"},
}
OUTSIDE = ("bench", "docker", "scripts", "configs")
IN_PROCESS_BENCHES = {"bench/affinity.py"}
"""Micro-benchmarks that time a balancer part in-process, as a unit test drives it (every
other bench runs the daemons as processes)."""
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The modules of ours that ``path`` imports (all, or those run at import time:
    not inside a function, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = (
        _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    )

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if top_level_only and inner:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    found.add(".".join([*base, child.module or ""]).rstrip("."))
                elif child.module:
                    # ``from pkg import mod`` imports the module pkg.mod, ``from pkg
                    # import name`` the package (_KNOWN tells them apart).
                    subs = {f"{child.module}.{alias.name}" for alias in child.names} & _KNOWN
                    found.update(subs)
                    if len(subs) < len(child.names):
                        found.add(child.module)
            visit(child, inner)

    visit(tree, False)
    return {name for name in found if name.split(".")[0] in RUNTIME}


def _runtime_modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in RUNTIME for path in (ROOT / package).rglob("*.py")
    }


_KNOWN = set(_runtime_modules())


def test_dependencies_point_one_way() -> None:
    wrong = []
    for name, path in _runtime_modules().items():
        package = name.split(".")[0]
        for imported in _imports(path):
            if imported.split(".")[0] not in ALLOWED[package]:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_nothing_but_tests_imports_a_daemon() -> None:
    wrong = []
    for directory in OUTSIDE:
        for path in (ROOT / directory).rglob("*.py"):
            if str(path.relative_to(ROOT)) in IN_PROCESS_BENCHES:
                continue
            daemons = {i for i in _imports(path) if i.split(".")[0] in ("server", "balancer")}
            wrong += [f"{path.relative_to(ROOT)} imports {i}" for i in sorted(daemons)]
    assert wrong == []


def test_no_import_cycle() -> None:
    modules = _runtime_modules()
    graph = {
        name: {i for i in _imports(path, top_level_only=True) if i in modules and i != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(name: str, stack: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycles.append([*stack[stack.index(other) :], other])
            elif other not in state:
                walk(other, [*stack, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_no_runtime_module_is_over_400_lines() -> None:
    long = {
        name: count
        for name, path in _runtime_modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
