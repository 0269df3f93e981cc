"""The layout's rules, checked on the source (README "Architecture"):

- dependencies point one way: ``wire`` imports nothing of ours, ``cache`` only
  ``wire``, ``client`` only ``wire``, ``daemon`` only ``wire`` and ``client``; the two
  daemons ``server`` and ``balancer`` import those, never each other;
- nothing but the tests (and a micro-benchmark that times a part in-process, named
  below) imports ``server`` or ``balancer``;
- ``balancer/`` stands on floors along a job's path (:data:`BALANCER_FLOORS`): a module
  imports only from its own floor or lower;
- no import cycle among our modules, counting every import (in a function, under
  ``if TYPE_CHECKING``: a cycle hidden there is still a cycle of meaning);
- a module of the runtime packages over 400 lines is a warning (time to cut it).
"""

from __future__ import annotations

import ast
import warnings
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
IN_PROCESS_BENCHES = {"bench/affinity.py", "bench/dns.py"}
"""Micro-benchmarks that time a balancer part in-process, as a unit test drives it (every
other bench runs the daemons as processes)."""
MAX_LINES = 400
BALANCER_FLOORS = {
    "settings": 1, "errors": 1, "workers": 1,  # values, and the processes' plumbing
    "routing": 2,  # pure decisions: which backend, how long, who waits
    "pool": 3, "config": 3,  # the backends as they are; the config that makes them
    "dispatch": 4, "cli": 4,  # one job's attempts; the command line
    "observe": 5,  # counters, dashboard, admin port
    "connection": 6,  # one client's connection
    "service": 7,  # the listeners and their lifetimes
    "main": 8,  # the process
}  # fmt: skip
"""Each part of ``balancer/`` (a module or a subpackage) and its floor."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The modules of ours that ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = (
        _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    )

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
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
            visit(child)

    visit(tree)
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


def _floor(module: str) -> int | None:
    """``module``'s floor in ``balancer/`` (0: the package itself; None: no floor)."""
    parts = module.split(".")
    return 0 if len(parts) == 1 else BALANCER_FLOORS.get(parts[1])


def test_every_balancer_module_stands_on_a_floor() -> None:
    unplaced = [name for name in _runtime_modules() if name.startswith("balancer")
                and _floor(name) is None]  # fmt: skip
    assert unplaced == []


def test_balancer_imports_only_its_own_floor_or_lower() -> None:
    wrong = []
    for name, path in _runtime_modules().items():
        floor = _floor(name)
        if not name.startswith("balancer") or floor is None:
            continue
        for imported in sorted(_imports(path)):
            theirs = _floor(imported) if imported.startswith("balancer") else 0
            if theirs is None or theirs > floor:
                wrong.append(f"{name} (floor {floor}) imports {imported} (floor {theirs})")
    assert wrong == []


def test_no_import_cycle() -> None:
    modules = _runtime_modules()
    graph = {
        name: {i for i in _imports(path) if i in modules and i != name}
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


def test_a_runtime_module_over_400_lines_is_a_warning() -> None:
    long = {
        name: count
        for name, path in _runtime_modules().items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    for name, count in sorted(long.items()):
        warnings.warn(f"{name}: {count} lines (over {MAX_LINES}: cut it)", stacklevel=1)
