"""The intake pipeline behind the sink: store, claim, process states, reprocess, purge, and the
bounded parse workers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DataError, OperationalError
from typer.testing import CliRunner

from app.db import Database
from app.feedback import ApplyResult
from app.intake import (
    Intake,
    IntakeProcessor,
    IntakeStore,
    StoredMessage,
    envelope_digest,
    policy_applier,
    policy_batch_applier,
    reprocess,
)
from app.intake.parse_pool import ParsingPool
from app.models import InboundMessage
from dsn.analysis import analyse_message
from dsn.model import MessageAnalysis
from tests.app.test_smtp import HARD_BOUNCE, sample
from tests.conftest import Env

RCPT = ["bounce@bounces.example.net"]


# Parse functions for the worker tests: module level, so spawned workers can import them.
def hog_memory(raw: bytes, **_: Any) -> MessageAnalysis:
    blocks = [bytearray(64 * 1024 * 1024) for _ in range(64)]  # 4 GiB: over any sane cap
    raise AssertionError(f"allocated {len(blocks)} blocks")


def sleep_through_alarm(raw: bytes, **_: Any) -> MessageAnalysis:
    # A parse stuck where the in-worker timer cannot reach it: only the parent's backstop can.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
    raise AssertionError("not killed")


def slow(raw: bytes, **_: Any) -> MessageAnalysis:
    time.sleep(60)
    raise AssertionError("not interrupted")


async def store_one(store: IntakeStore, raw: bytes = HARD_BOUNCE, rcpt: list[str] = RCPT) -> int:
    result = await store.store(mail_from="", rcpt_to=rcpt, peer="192.0.2.1", raw=raw)
    assert result.id is not None
    return result.id


async def row(env: Env, message_id: int) -> InboundMessage:
    async with env.services.db.read() as session:
        return (
            await session.execute(select(InboundMessage).where(InboundMessage.id == message_id))
        ).scalar_one()


def test_digest_covers_envelope_and_bytes() -> None:
    base = envelope_digest("", ["a@x.example"], b"data")
    assert base == envelope_digest("", ["a@x.example"], b"data")
    assert base != envelope_digest("", ["b@x.example"], b"data")
    assert base != envelope_digest("x@y.example", ["a@x.example"], b"data")
    assert base != envelope_digest("", ["a@x.example"], b"data ")
    assert envelope_digest("", ["a@x", "b@x"], b"d") == envelope_digest("", ["b@x", "a@x"], b"d")


# ---------------------------------------------------------------------------------- claims


async def test_a_claim_is_exclusive_until_stale(env: Env) -> None:
    one, two = IntakeStore(env.services.db), IntakeStore(env.services.db)
    mid = await store_one(one)
    assert await one.claim_ids([mid], claim_timeout_s=300) == {mid: 1}
    assert await two.claim_ids([mid], claim_timeout_s=300) == {}
    assert await two.claim_pending(10, claim_timeout_s=300) == []
    # The first holder died: after the timeout anyone may take it, and it counts an attempt.
    [msg] = await two.claim_pending(10, claim_timeout_s=0)
    assert (msg.id, msg.attempts, msg.raw) == (mid, 2, HARD_BOUNCE)
    # The old holder cannot finish what it no longer holds.
    assert not await one.finish(mid, state="processed")
    assert await two.finish(mid, state="processed", kind="bounce")
    r = await row(env, mid)
    assert (r.state, r.claimed_by, r.attempts) == ("processed", None, 2)


async def test_concurrent_sweeps_share_rows_without_overlap(env: Env) -> None:
    ids = [
        await store_one(IntakeStore(env.services.db), HARD_BOUNCE + b"%d" % i) for i in range(40)
    ]
    stores = [IntakeStore(env.services.db) for _ in range(4)]
    batches = await asyncio.gather(*(s.claim_pending(15, claim_timeout_s=300) for s in stores))
    claimed = [m.id for b in batches for m in b]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= set(ids)
    more = await stores[0].claim_pending(100, claim_timeout_s=300)
    assert sorted(claimed + [m.id for m in more]) == ids


# ---------------------------------------------------------------------------------- states


async def run_one(
    env: Env, raw: bytes, applier: Any = None, pool: ParsingPool | None = None, **settings: Any
) -> tuple[InboundMessage, IntakeProcessor]:
    cfg = env.settings.model_copy(update={"intake_max_attempts": 2, **settings})
    services = dataclasses.replace(env.services, settings=cfg)
    intake = Intake(
        services, applier=applier, pool=pool or ParsingPool(workers=1, inline_max_bytes=1 << 20)
    )
    mid = await store_one(intake.store, raw)
    claimed = await intake.store.claim_ids([mid], 300)
    msg = StoredMessage(mid, raw, "", RCPT, None, claimed[mid])
    await intake.processor.process(msg)
    return await row(env, mid), intake.processor


async def test_apply_error_fails_the_message_with_the_reason(env: Env) -> None:
    async def broken(msg: StoredMessage, analysis: MessageAnalysis, dry_run: bool) -> ApplyResult:
        raise ValueError("policy bug")

    r, proc = await run_one(env, HARD_BOUNCE, broken)
    assert (r.state, r.kind, r.error) == ("failed", "bounce", "apply: ValueError: policy bug")
    assert proc.stats.failed == 1


async def test_storage_error_retries_then_fails(env: Env) -> None:
    async def db_down(msg: StoredMessage, analysis: MessageAnalysis, dry_run: bool) -> ApplyResult:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("db down"))

    r, proc = await run_one(env, HARD_BOUNCE, db_down)
    assert (r.state, r.attempts, r.claimed_at) == ("pending", 1, None)  # free for a retry
    assert r.error is not None and r.error.startswith("storage:")
    # The retry is the last allowed attempt (intake_max_attempts=2): then it fails for good.
    store = proc.store
    [msg] = await store.claim_pending(10, claim_timeout_s=300)
    await proc.process(msg)
    r = await row(env, msg.id)
    assert (r.state, r.attempts) == ("failed", 2)
    assert r.error is not None and "after 2 attempts" in r.error


async def test_an_overlong_stream_header_is_dropped_not_a_stuck_message(env: Env) -> None:
    """X-Stoplist-Stream comes from mail we do not control: a value the stream column cannot hold
    (over 64 characters) is stored as no stream; before, finishing the row failed on PostgreSQL
    and the message stayed pending for ever."""
    raw = HARD_BOUNCE.replace(
        b"Return-Path: <news@example.com>\r\n",
        b"Return-Path: <news@example.com>\r\nX-Stoplist-Stream: " + b"s" * 80 + b"\r\n",
    )
    assert raw != HARD_BOUNCE
    r, _ = await run_one(env, raw, policy_applier(env.services))
    assert (r.state, r.stream) == ("processed", None)


async def test_a_message_the_database_refuses_fails_alone(env: Env) -> None:
    """A statement refused for one message's content (a DataError: it would fail the same way on
    every retry) fails that message at once; the rest of its batch is applied."""
    real = policy_batch_applier(env.services)

    async def refuses_poison(
        items: Sequence[tuple[StoredMessage, MessageAnalysis]], db: Database
    ) -> list[ApplyResult]:
        if any(b"poison" in msg.raw for msg, _ in items):
            raise DataError("INSERT INTO events", {}, ValueError("invalid byte sequence"))
        return await real(items, db)

    intake = Intake(env.services, pool=ParsingPool(workers=1, inline_max_bytes=1 << 20))
    intake.processor.batch_applier = refuses_poison
    raws = [
        HARD_BOUNCE.replace(b"carol@example.net", b"good1@example.net"),
        HARD_BOUNCE.replace(b"carol@example.net", b"good2@example.net") + b"poison",
        HARD_BOUNCE.replace(b"carol@example.net", b"good3@example.net"),
    ]
    ids = [await store_one(intake.store, raw) for raw in raws]
    claimed = await intake.store.claim_ids(ids, 300)
    msgs = [
        StoredMessage(i, raw, "", RCPT, None, claimed[i]) for i, raw in zip(ids, raws, strict=True)
    ]
    await intake.processor.process_many(msgs)
    good1, poison, good3 = [await row(env, i) for i in ids]
    assert (good1.state, good3.state) == ("processed", "processed")
    assert (poison.state, poison.attempts) == ("failed", 1)
    assert poison.error is not None and "refused by the database" in poison.error


async def test_unreadable_message_fails(env: Env) -> None:
    r, _ = await run_one(env, b"\r\n\r\n")
    assert r.state == "failed"
    assert r.error is not None and r.error.startswith("unreadable")


async def test_delivery_report_is_ignored(env: Env) -> None:
    r, _ = await run_one(
        env, sample("negative/delivery-report-01.eml"), policy_applier(env.services)
    )
    assert (r.state, r.kind) == ("ignored", "delivery_report")


async def test_read_receipt_is_ignored(env: Env) -> None:
    r, _ = await run_one(env, sample("negative/receipt-01.eml"), policy_applier(env.services))
    assert (r.state, r.kind) == ("ignored", "receipt")


# ---------------------------------------------------------------------------------- reprocess


async def test_reprocess_reports_and_applies_changes(env: Env) -> None:
    applier = policy_applier(env.services)
    pool = ParsingPool(workers=1, inline_max_bytes=1 << 20)
    first, _ = await run_one(env, HARD_BOUNCE, applier, pool)
    assert first.state == "processed"
    # Pretend an older rule set had called this a soft bounce, and another message had failed.
    old_summary = json.loads(json.dumps(first.summary))
    old_summary["results"][0].update(outcome="soft", reason="mailbox_full", rule_id="old-rule")
    async with env.services.db.write() as session:
        await session.execute(
            update(InboundMessage).where(InboundMessage.id == first.id).values(summary=old_summary)
        )
    broken, _ = await run_one(env, sample("bounce/exim-01.eml"), _raise_value_error, pool)
    assert broken.state == "failed"

    store = IntakeStore(env.services.db)
    report = await reprocess(store, pool, applier, dry_run=True)
    assert report.examined == 2
    by_id = {c.id: c for c in report.changes}
    change = by_id[first.id].changes[0]
    assert change["recipient"] == "carol@example.net"
    assert change["before"]["outcome"] == "soft" and change["after"]["outcome"] == "hard"
    assert (by_id[broken.id].old_state, by_id[broken.id].new_state) == ("failed", "processed")
    assert (await row(env, broken.id)).state == "failed"  # dry run: nothing written

    only_failed = await reprocess(store, pool, applier, failed_only=True)
    assert only_failed.examined == 1
    assert (await row(env, broken.id)).state == "processed"
    future = await reprocess(store, pool, applier, since=datetime.now(UTC) + timedelta(hours=1))
    assert future.examined == 0


async def _raise_value_error(
    msg: StoredMessage, analysis: MessageAnalysis, dry_run: bool
) -> ApplyResult:
    raise ValueError("broken rule")


# ---------------------------------------------------------------------------------- retention


async def test_purge_drops_old_raw_bytes_but_keeps_rows(env: Env) -> None:
    store = IntakeStore(env.services.db)
    old_done, old_pending, new_done = [
        await store_one(store, HARD_BOUNCE + b"%d" % i) for i in range(3)
    ]
    long_ago = datetime.now(UTC) - timedelta(days=40)
    async with env.services.db.write() as session:
        await session.execute(
            update(InboundMessage)
            .where(InboundMessage.id.in_([old_done, old_pending]))
            .values(received_at=long_ago)
        )
        await session.execute(
            update(InboundMessage)
            .where(InboundMessage.id.in_([old_done, new_done]))
            .values(state="processed")
        )
    assert await store.purge_raw(30) == 1
    assert (await row(env, old_done)).raw is None
    assert (await row(env, old_done)).state == "processed"
    assert (await row(env, old_pending)).raw is not None  # not processed yet: never dropped
    assert (await row(env, new_done)).raw is not None
    assert await store.purge_raw(30) == 0


def test_cli_reprocess_and_purge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import app

    runner = CliRunner()
    monkeypatch.setenv("STOPLIST_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("STOPLIST_REDIS_URL", raising=False)
    monkeypatch.setenv("STOPLIST_PARSE_WORKERS", "1")
    assert runner.invoke(app, ["migrate"]).exit_code == 0

    result = runner.invoke(app, ["reprocess", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "examined": 0,
        "changed": 0,
        "dry_run": True,
        "changes": [],
    }
    result = runner.invoke(app, ["reprocess", "--failed", "--since", "2026-01-01T00:00:00"])
    assert result.exit_code == 0, result.output
    assert "examined 0 messages" in result.output
    result = runner.invoke(app, ["purge", "--days", "7", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"days": 7.0, "purged": 0}


# ---------------------------------------------------------------------------------- workers


async def test_worker_memory_cap() -> None:
    pool = ParsingPool(workers=1, memory_mb=128, parse_fn=hog_memory)
    try:
        outcome = await pool.parse(HARD_BOUNCE)
        assert outcome.error == "parse memory limit exceeded"
        assert pool.restarts == 0  # the worker survived its MemoryError
    finally:
        pool.close()


async def test_worker_timeout_interrupts_the_parse() -> None:
    pool = ParsingPool(workers=1, timeout_s=0.3, parse_fn=slow)
    try:
        # Warm the worker first (spawning it and importing this module to unpickle ``slow`` is not
        # what is measured), then time a second parse.
        await pool.parse(HARD_BOUNCE)
        started = time.monotonic()
        outcome = await pool.parse(HARD_BOUNCE)
        assert outcome.error == "parse timeout after 0.3 s"
        assert time.monotonic() - started < 2
        assert pool.restarts == 0
    finally:
        pool.close()


async def test_stuck_worker_is_killed_and_the_pool_recreated() -> None:
    pool = ParsingPool(workers=1, timeout_s=0.2, backstop_grace_s=0.3, parse_fn=sleep_through_alarm)
    try:
        await pool.start()
        outcome = await pool.parse(HARD_BOUNCE)
        assert outcome.error == "parse timeout after 0.2 s (killed)"
        assert pool.restarts == 1
        # The new pool works (a real parse, through the normal parser).
        pool.parse_fn = analyse_message
        again = await pool.parse(HARD_BOUNCE)
        assert again.analysis is not None and again.analysis.kind == "bounce"
    finally:
        pool.close()


async def test_dead_worker_makes_in_flight_messages_retryable() -> None:
    pool = ParsingPool(workers=1, timeout_s=5, parse_fn=slow)
    try:
        await pool.start()
        task = asyncio.create_task(pool.parse(HARD_BOUNCE))
        await asyncio.sleep(0.5)
        assert pool._executor is not None
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        outcome = await task
        assert outcome.retry and outcome.analysis is None
        pool.parse_fn = analyse_message
        assert (await pool.parse(HARD_BOUNCE)).analysis is not None
    finally:
        pool.close()


# -------------------------------------------------------------------------------- explanations


async def test_history_and_message_explain_the_decision(env: Env) -> None:
    """Support staff see why an address was suppressed: the history event names the rule with its
    source, and the stored message explains which parser and which lines gave the recipient."""
    processed, _ = await run_one(env, HARD_BOUNCE, policy_applier(env.services))
    assert processed.state == "processed"
    r = await env.client.get("/v1/suppressions/carol@example.net/history", headers=env.auth("read"))
    assert r.status_code == 200, r.text
    (event,) = [i for i in r.json()["items"] if i["type"] == "event"]
    assert event["message_id"] == processed.id
    rule = event["explanation"]
    assert rule["id"] == event["rule_id"]
    assert rule["outcome"] == "hard" and rule["file"].endswith(".toml")
    assert rule["source"] and rule["examples"]

    r = await env.client.get(f"/v1/messages/{processed.id}/explanation", headers=env.auth("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["message_id"], body["kind"], body["mta"]) == (processed.id, "bounce", "rfc3464")
    (recipient,) = body["recipients"]
    assert recipient["recipient"] == "carol@example.net"
    assert recipient["decision"]["rule_id"] == event["rule_id"]
    assert any("Final-Recipient" in line["text"] for line in recipient["lines"])

    missing = await env.client.get("/v1/messages/999999/explanation", headers=env.auth("read"))
    assert missing.status_code == 404
    async with env.services.db.write() as session:
        await session.execute(
            update(InboundMessage).where(InboundMessage.id == processed.id).values(raw=None)
        )
    purged = await env.client.get(
        f"/v1/messages/{processed.id}/explanation", headers=env.auth("read")
    )
    assert purged.status_code == 410
    assert purged.json()["error"] == "gone"


async def test_a_restarted_process_takes_back_claims_whose_owner_is_gone(env: Env) -> None:
    """A process killed with ``kill -9`` leaves its claims behind; the next process on the host
    takes them back at once (the owner named in the claim no longer exists) instead of after
    ``intake_claim_timeout_s``. Claims of a live process, of another of this process's intakes
    and of another host are left alone."""
    import socket
    import subprocess
    import sys

    from app.intake.store import instance_name

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    host = socket.gethostname()[:40]
    owners = {
        "dead": f"{host}:{dead.stdout.strip()}:0badc0de",
        "earlier-me": f"{host}:{os.getpid()}:0ldc0de0",  # this pid, before a restart
        "live": f"{host}:{os.getppid()}:11ve11ve",
        "here": instance_name(),
        "elsewhere": f"another-host.example:{dead.stdout.strip()}:e1sewere",
    }
    db = env.services.db
    ids = {}
    for n, (who, owner) in enumerate(owners.items()):
        store = IntakeStore(db, instance=owner)
        stored = await store.store(mail_from="", rcpt_to=[f"r{n}@example.net"], peer=None, raw=b"x")
        assert stored.id is not None
        assert set(await store.claim_ids([stored.id], 300)) == {stored.id}
        ids[who] = stored.id

    restarted = IntakeStore(db)
    assert await restarted.release_orphaned_claims() >= 2  # (and any left by dead test runs)
    taken = await restarted.claim_pending(10_000, 300)
    assert {m.id for m in taken} & set(ids.values()) == {ids["dead"], ids["earlier-me"]}
