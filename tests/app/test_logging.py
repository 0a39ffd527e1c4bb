"""What the service logs at start-up and shutdown: nothing a person would question."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_migrating_logs_no_alembic_plugin_lines(tmp_path: Path) -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from app.settings import load_settings; from app.db import run_migrations;"
        "run_migrations(load_settings())"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "STOPLIST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "alembic.runtime.plugins" not in done.stderr
    assert "Running upgrade" in done.stderr  # migrations themselves are still reported


async def test_failing_write_throughs_log_once(caplog: Any) -> None:
    """A cache outage under load is one ERROR line (the replica is stale), not one per write; the
    metric counts every failure."""
    from app import metrics
    from app.cache import CacheUnavailable, MemoryCache
    from app.suppression.replica import CacheReplica

    class Down(MemoryCache):
        async def put_many(self, items: Any) -> int:
            raise CacheUnavailable("connection refused")

    replica = CacheReplica(db=None, cache=Down(), auto_rebuild=False)  # type: ignore[arg-type]

    async def no_state(addresses: Any, *, db: Any = None) -> list[Any]:
        return []

    replica.cache_state_for = no_state  # type: ignore[method-assign]
    before = metrics.CACHE_WRITE_FAILURES._value.get()
    with caplog.at_level(logging.ERROR, logger="app.suppressions"):
        for n in range(5):
            await replica.refresh_cache([f"a{n}@example.com"])
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert replica.cache_dirty
    assert metrics.CACHE_WRITE_FAILURES._value.get() - before == 5
