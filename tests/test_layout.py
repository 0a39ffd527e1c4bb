"""The pure packages (dsn, arf, classifiers, events) never import the service (app)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE = ("dsn", "arf", "classifiers", "events")
FORBIDDEN = ("app", "sqlalchemy", "fastapi", "redis", "aiosmtpd", "httpx", "asyncpg")


def test_pure_packages_do_not_import_io_layers() -> None:
    offenders = []
    for package in PURE:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in FORBIDDEN:
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file (lazy and TYPE_CHECKING
    imports included: a cycle hidden inside a function is still a cycle)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(top: str = "app") -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in (ROOT / top).rglob("*.py")}
    known = set(paths)
    return {name: _imports_of(path, name, known) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_app_has_no_import_cycles() -> None:
    graph = {
        name: {t for t in targets if t != name.rpartition(".")[0]}  # a package's own __init__
        for name, targets in import_graph().items()
    }
    assert _cycles(graph) == []


# The layers of app/, bottom first. A module may import its own layer and those below, never one
# above. New modules must be placed here (an unplaced module fails the test).
LAYERS: list[tuple[str, ...]] = [
    ("app", "app.streams", "app.errors", "app.metrics", "app.addresses", "app.logs"),
    ("app.signing", "app.settings"),
    ("app.models", "app.db", "app.cache", "app.migrations", "app.webhooks.outbox"),
    (
        "app.suppression",
        "app.keys",
        "app.intake.parse_pool",
        "app.feedback.planner",
        "app.rates",
        "app.webhooks",
    ),
    # The composition root's Services is still the bag the flows below take (docs/architecture.md).
    ("app.container",),
    ("app.feedback", "app.bulk", "app.intake", "app.events"),
    ("app.ingest",),
    ("app.intake.child", "app.intake.smtp"),
    ("app.http", "app.console"),
    ("app.main", "app.cli"),
]


def _layer(module: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank)
    assert best[1] >= 0, f"{module} is in no layer of tests/test_layout.py"
    return best[1]


def test_app_never_imports_upward() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_feedback_planner_reaches_no_io() -> None:
    """The planner decides from the analysis, the settings and the signer alone: nothing it
    imports, directly or through others, is the database, the container or a service. (It reaches
    ``app.cache`` and ``app.models`` for types only, through ``app.suppression.model``.)"""
    graph = import_graph()
    reached: set[str] = set()
    todo = ["app.feedback.planner"]
    while todo:
        module = todo.pop()
        for target in graph.get(module, ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    io = {
        "app.db",
        "app.container",
        "app.suppression.repository",
        "app.suppression.service",
        "app.suppression.lookup",
        "app.suppression.replica",
    }
    assert sorted(reached & io) == []
