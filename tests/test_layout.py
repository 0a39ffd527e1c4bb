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
