"""What the service logs at start-up and shutdown: nothing a person would question."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.keys.model import generate_key

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \S.*$"
)


def _serve_once(tmp_path: Path, log_format: str) -> list[str]:
    """``stoplist serve`` with the sink on a fresh SQLite file: start, answer a health check,
    take one bounce over SMTP, process it, stop with SIGTERM. Its standard error, line by line."""
    http, smtp = _free_port(), _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STOPLIST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / f'{log_format}.db'}",
        "STOPLIST_HTTP_PORT": str(http),
        "STOPLIST_SMTP_PORT": str(smtp),
        "STOPLIST_SMTP_DOMAINS": "bounces.example.net",
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": generate_key(),
        "STOPLIST_INTAKE_SWEEP_INTERVAL_S": "0.2",
        "STOPLIST_LOG_FORMAT": log_format,
    }
    stoplist = Path(sys.executable).parent / "stoplist"
    proc = subprocess.Popen(
        [str(stoplist), "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:
            client.sendmail("", ["b@bounces.example.net"], BOUNCE)
        time.sleep(2)  # let the processor take it
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # uvicorn ends by raising the signal it caught again, once shut down cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    return stderr.splitlines()


BOUNCE = (
    (ROOT / "samples" / "bounce" / "postfix-01.eml")
    .read_bytes()
    .replace(b"\r\n", b"\n")
    .replace(b"\n", b"\r\n")
)
# Addresses in that bounce (the recipient and the envelope): none may appear at INFO.
ADDRESSES = ("carol@example.net", "b@bounces.example.net")


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_a_served_session_is_in_one_format(tmp_path: Path, log_format: str) -> None:
    lines = _serve_once(tmp_path, log_format)
    if log_format == "json":
        records = [json.loads(line) for line in lines]
        assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
        levels = [(r["level"], r["logger"], r["message"]) for r in records]
    else:
        assert [line for line in lines if not TEXT_LINE.match(line)] == [], "\n".join(lines)
        levels = [tuple(line.split(" ", 4)[2:5]) for line in lines]
    loggers = {logger for _, logger, _ in levels}
    assert "uvicorn.error" in loggers  # uvicorn's own lines, in our format
    assert any(logger.startswith("app.") for logger in loggers)
    assert [x for x in levels if x[0] not in ("DEBUG", "INFO")] == []  # nothing needs a person
    assert [x for x in levels if any(a in x[2] for a in ADDRESSES)] == []
