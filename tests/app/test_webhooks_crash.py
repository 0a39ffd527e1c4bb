"""``kill -9`` of ``stoplist serve`` between a change's commit and its webhook: the event is in the
outbox, so it arrives (once, signed) after the restart. The real service in a process of its own
on a SQLite file, a real receiver on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from app.keys.model import generate_key
from tests.app.webhook_receiver import Receiver

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "stoplist"), "serve", "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill reaches everything
        )


async def _ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited"
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the service did not start")


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


async def test_event_committed_before_kill_9_arrives_after_restart(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    port, key = _free_port(), generate_key()
    env = {
        **os.environ,
        "STOPLIST_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'stoplist.db'}",
        "STOPLIST_HTTP_PORT": str(port),
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": key,
        "STOPLIST_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "STOPLIST_WEBHOOK_ENABLED": "false",  # committed, not sent: then the kill
        "STOPLIST_SMTP_ENABLED": "false",
    }
    auth = {"Authorization": f"Bearer {key}"}
    log = tmp_path / "serve.log"
    proc = _serve(env, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _ready(client, proc)
            r = await client.post("/v1/webhooks", json={"url": receiver.url}, headers=auth)
            assert r.status_code == 201, r.text
            secret = r.json()["secret"]
            r = await client.put(
                "/v1/suppressions/crash@example.com", json={"reason": "manual"}, headers=auth
            )
            assert r.status_code == 200, r.text
            _kill9(proc)
            assert receiver.requests == []
            proc = _serve({**env, "STOPLIST_WEBHOOK_ENABLED": "true"}, log)
            await _ready(client, proc)
            deadline = time.monotonic() + 30
            while not receiver.requests:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # nothing more comes
    finally:
        if proc.poll() is None:
            _kill9(proc)
        await receiver.stop()
    [request] = receiver.requests
    event = Webhook(secret).verify(request.body, request.headers)
    assert event["type"] == "suppression.created"
    assert event["data"]["address"] == "crash@example.com"
