"""Crash consistency under ``kill -9`` (RFC 5321 §6.1: with the 250 after DATA the message is ours).

``test_kill_9_loses_no_acknowledged_message`` runs ``bench/crash_consistency.py`` with small
parameters: the real service (``stoplist serve``) on a PostgreSQL database and Redis keys of its
own, a concurrent SMTP client, SIGKILL of the service's process group once mid-stream and once
while processing has a backlog, a restart each time, the client resending whatever got no 250. It
passes when every acknowledged message is stored once and processed (recipient suppressed, one
event, ``/v1/check`` says suppressed) and no process of a killed service outlives it. The script's
default run (thousands of messages, four kill points, both ``STOPLIST_INTAKE_PROCESS`` modes) is
one command; see docs/reliability.md. The script makes its own database, but the test asks for the
``pg_url`` and ``redis_url`` fixtures so that, like every PostgreSQL/Redis test, it fails under
``STOPLIST_TEST_REQUIRE_SERVICES=1`` (and skips otherwise) when they are unreachable.

The other two pin down, without timing luck, what the kills found: the window between the
policy's commit and its cache write, and the claims an intake child hands back when it stops.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from app.cache import RedisCache
from app.feedback import BatchItem, Envelope, apply_batch
from app.intake import FAILED, PENDING, IntakeStore
from app.intake.child import release_claims
from app.models import InboundMessage
from dsn import analyse_message
from tests.conftest import Env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "crash_consistency.py"
MESSAGES = 240


def _run(*args: str, timeout_s: float = 240.0) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no summary (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(lines[-1]), proc.stderr


def test_kill_9_loses_no_acknowledged_message(pg_url: str, redis_url: str) -> None:
    code, summary, log = _run(
        "--messages",
        str(MESSAGES),
        "--connections",
        "8",
        "--kill-at",
        "0.4",  # mid-stream; then once more while processing has a backlog
        # Processing in the service's own process: it starts fastest, so the whole run fits the
        # suite's time (the script's default run covers the child-process mode too).
        "--mode",
        "inline",
        "--claim-timeout",
        "2",  # the killed process's claims expire quickly
        "--pg-url",
        pg_url,  # the script creates (and drops) a database of its own on this server
        "--redis-url",
        redis_url.rsplit("/", 1)[0] + "/12",  # not the tests' database
        "--orphan-grace",
        "20",
    )
    [run] = summary["runs"]
    detail = json.dumps(run, indent=1)[:4000] + "\n" + log[-2000:]
    assert [k["label"] for k in run["kills"]] == ["stream 40%", "processing backlog"], detail
    # Each kill hit something: mid-transaction sessions, then stored rows not yet processed.
    assert run["kills"][0]["in_flight"] > 0, detail
    assert run["kills"][1]["pending_rows"] > 0, detail
    assert run["acked"] == MESSAGES and run["never_acked"] == 0, detail
    assert run["lost_acked"] == 0, detail
    assert run["unprocessed_acked"] == 0 and run["processed"] == MESSAGES, detail
    assert run["duplicates"] == 0 and run["stored"] == MESSAGES, detail
    assert run["orphans"] == 0 and not run["stop"].startswith("stuck"), detail
    assert run["check_clear"] == 0, detail  # every acked recipient reads suppressed
    assert code == 0 and summary["ok"], detail


async def test_reapplied_message_is_written_through_to_the_cache(pg_env: Env) -> None:
    """The window ``kill -9`` finds: the policy committed a message's suppression, the process
    died before writing it through to Redis, and the row is still pending. The next processor
    applies the message again (each step already has its event, so nothing is written twice);
    the cache must still end up with the suppression, or ``/v1/check`` answers "not suppressed"
    for a suppressed address until the next full rebuild."""
    address = "window@example.net"
    raw = (ROOT / "samples" / "bounce" / "postfix-01.eml").read_bytes()
    raw = raw.replace(b"carol@example.net", address.encode())
    envelope = Envelope(mail_from="", rcpt_to=["bounces@bounces.example.net"])
    stored = await IntakeStore(pg_env.services.db).store(
        mail_from=envelope.mail_from, rcpt_to=envelope.rcpt_to, peer=None, raw=raw
    )
    assert stored.id is not None
    item = BatchItem(stored.id, analyse_message(raw), envelope)
    [first] = await apply_batch(pg_env.services, [item])
    assert first.applied == 1

    # The crash: committed, never written through (the cache is a ready, complete replica, so a
    # missing key reads as "not suppressed").
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    client = aioredis.Redis.from_url(pg_env.settings.redis_url or "")
    try:
        assert await client.delete(cache.key(address)) == 1
    finally:
        await client.aclose()

    [again] = await apply_batch(pg_env.services, [item])  # the restart re-applies the row
    assert again.applied == 0 and again.ignored == 1  # idempotent: nothing written twice
    r = await pg_env.client.get(
        "/v1/check", params={"address": address}, headers=pg_env.auth("check")
    )
    assert r.status_code == 200
    assert r.json()["suppressed"] is True, r.json()


async def test_a_stopping_processor_hands_back_its_claims(pg_env: Env) -> None:
    """The intake child outlives a ``kill -9`` of its service (it leads a process group of its
    own), stops, and releases what it still holds, so the restarted service processes those rows
    at once instead of after ``intake_claim_timeout_s`` (300 s by default). Only its own pending
    rows are released: another processor's claims and finished rows stay as they are."""
    db = pg_env.services.db
    mine, other = IntakeStore(db, instance="child-a"), IntakeStore(db, instance="child-b")
    ids = []
    for n in range(4):
        stored = await mine.store(
            mail_from="", rcpt_to=[f"r{n}@b.example.net"], peer=None, raw=b"x"
        )
        assert stored.id is not None
        ids.append(stored.id)
    assert set(await mine.claim_ids(ids[:3], 300)) == set(ids[:3])
    assert set(await other.claim_ids(ids[3:], 300)) == {ids[3]}
    assert await mine.finish(ids[2], state=FAILED, error="done before the stop")

    assert await release_claims(mine, timeout_s=5) == 2

    async with db.read() as s:
        rows = {r.id: r for r in (await s.execute(select(InboundMessage))).scalars()}
    assert [(rows[i].state, rows[i].claimed_by) for i in ids] == [
        (PENDING, None),
        (PENDING, None),
        (FAILED, None),
        (PENDING, "child-b"),
    ]
    # Claimable at once by the next processor, though the claim timeout is far away.
    taken = await IntakeStore(db, instance="next").claim_pending(10, 300)
    assert [m.id for m in taken] == ids[:2]
