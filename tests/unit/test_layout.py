"""The package's layout rules, read from its imports (every import statement, TYPE_CHECKING and
function-level ones included), so a change that breaks one fails here rather than in a review."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "switchboard_server"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports."""
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from package import submodule` takes the submodule; any other name, the module.
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in modules else node.module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    circles = sorted(name for name in graph if name in _reaches(graph, name))
    assert circles == []


def test_each_layer_imports_only_the_layers_below_it():
    below = {
        "switchboard_server.transport": (),
        "switchboard_server.core": ("switchboard_server.transport", "switchboard_server.brokers.base"),
        "switchboard_server.brokers": ("switchboard_server.core", "switchboard_server.brokers"),
        "switchboard_server.protocols": ("switchboard_server.core", "switchboard_server.transport"),
    }
    wrong = []
    for name, targets in _imports().items():
        for layer, allowed in below.items():
            if name.startswith(layer + ".") or name == layer:
                wrong += [
                    f"{name} -> {target}"
                    for target in targets
                    if not target.startswith((layer, *allowed)) and target != "switchboard_server"
                ]
    assert wrong == []


def test_the_core_never_imports_flask_or_a_protocol():
    for path in (PACKAGE / "core").rglob("*.py"):
        source = path.read_text()
        assert "import flask" not in source and "from flask" not in source, path
        assert "switchboard_server.protocols" not in source, path


def test_importing_the_package_loads_nothing_heavy():
    """Gunicorn's master names the worker class before gevent patches: the package's face must
    not import gevent, Flask or the hub."""
    code = "import sys, switchboard_server; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'flask', 'redis') or m.startswith('switchboard_server.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert loaded.stdout.strip() == "[]"
