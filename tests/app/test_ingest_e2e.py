"""``stoplist ingest`` end to end on SQLite and on PostgreSQL + Redis: a hard bounce in each MTA's
log reads as suppressed on ``/v1/check``; a soft one and a delivery do not; the CLI reads a file,
reports its bad lines and resumes where it stopped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.db import run_migrations
from app.events.store import EventStore
from app.ingest import Progress, ingest_log
from app.models import DeliveryEvent
from app.settings import Settings
from tests.conftest import Env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

PMTA = (
    "type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta\n"
    "d,1767607200,bounces@mail.example.com,kept@example.org,relayed,2.0.0 (success),"
    "smtp;250 ok,mx.example.org (192.0.2.1),,vmta-1\n"
    "b,1767607201,bounces@mail.example.com,gone@example.org,failed,"
    '5.1.1 (bad destination mailbox address),"smtp;550 5.1.1 <gone@example.org>: Recipient '
    'address rejected: User unknown",mx.example.org (192.0.2.1),bad-mailbox,vmta-1\n'
    "b,1767607202,bounces@mail.example.com,full@example.org,failed,5.2.2 (mailbox full),"
    "smtp;552 5.2.2 Mailbox full,mx.example.org (192.0.2.1),quota-issues,vmta-1\n"
)
POSTFIX = (
    "2026-01-05T10:00:00.000000+00:00 mx1 postfix/qmgr[1100]: 4F9D1234AB: "
    "from=<bounces@mail.example.com>, size=4521, nrcpt=2 (queue active)\n"
    "2026-01-05T10:00:01.000000+00:00 mx1 postfix/smtp[1300]: 4F9D1234AB: to=<gone@example.org>, "
    "relay=mx.example.org[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.4/0.7, dsn=5.1.1, "
    "status=bounced (host mx.example.org[192.0.2.1] said: 550 5.1.1 <gone@example.org>: "
    "Recipient address rejected: User unknown (in reply to RCPT TO command))\n"
    "2026-01-05T10:00:01.000000+00:00 mx1 postfix/smtp[1300]: 4F9D1234AB: to=<kept@example.org>, "
    "relay=mx.example.org[192.0.2.1]:25, delay=1.2, delays=0.1/0/0.4/0.7, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok: queued as 1234)\n"
)
KUMOMTA = (
    '{"type":"Bounce","id":"a1","sender":"bounces@mail.example.com","recipient":"gone@example.org",'
    '"queue":"example.org","site":"mx.example.org","response":{"code":550,"enhanced_code":'
    '{"class":5,"subject":1,"detail":1},"content":"5.1.1 <gone@example.org>: Recipient address '
    'rejected: User unknown","command":"RCPT TO"},"timestamp":1767607201,"created":1767607190,'
    '"bounce_classification":"InvalidRecipient","meta":{},"headers":{}}\n'
    '{"type":"Delivery","id":"a2","sender":"bounces@mail.example.com","recipient":"kept@example.org",'
    '"queue":"example.org","site":"mx.example.org","response":{"code":250,"enhanced_code":null,'
    '"content":"ok","command":"."},"timestamp":1767607202,"created":1767607190,'
    '"bounce_classification":"Uncategorized","meta":{},"headers":{}}\n'
)
LOGS = {"pmta": PMTA, "postfix": POSTFIX, "kumomta": KUMOMTA}


async def check(env: Env, address: str) -> dict[str, object]:
    r = await env.client.get("/v1/check", params={"address": address}, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


@pytest.mark.parametrize("fast", [False, True], ids=["events", "counted-in-a-second-process"])
@pytest.mark.parametrize("source", list(LOGS))
async def test_a_hard_bounce_in_the_log_reads_as_suppressed(
    env: Env, tmp_path: Path, source: str, fast: bool
) -> None:
    """``fast``: as the CLI may run it (deliveries counted by key, parsing in a second process,
    the cache's refresh left running after each commit)."""
    path = tmp_path / f"{source}.log"
    path.write_text(LOGS[source])
    store = EventStore(env.services, defer_refresh=fast)
    mode = {"count_deliveries": fast, "parse_process": fast}
    totals = await ingest_log(
        source, str(path), db=env.services.db, sink=store, progress=Progress(quiet=True), **mode
    )
    assert totals.errors == 0
    assert totals.events_new == LOGS[source].count("\n") - (1 if source != "kumomta" else 0)
    gone = await check(env, "gone@example.org")
    assert gone["suppressed"] is True
    assert gone["outcome"] == "hard"
    assert (await check(env, "kept@example.org"))["suppressed"] is False
    if source == "pmta":
        assert (await check(env, "full@example.org"))["suppressed"] is False  # soft, once
    # Read again (a restart that lost its offset): no bounce new, nothing applied twice; the
    # one delivery is counted, not stored, so only the offset keeps it from counting twice.
    async with env.services.db.write() as s:
        await s.execute(text("DELETE FROM ingest_offsets"))
    again = await ingest_log(
        source, str(path), db=env.services.db, sink=store, progress=Progress(quiet=True), **mode
    )
    assert (again.events_new, again.duplicate) == (1, totals.events_new - 1)
    async with env.services.db.read() as s:
        stored = await s.scalar(select(func.count()).select_from(DeliveryEvent))
    assert stored == totals.events_new - 1
    history = await env.client.get(
        "/v1/suppressions/gone@example.org/history", headers=env.auth("read")
    )
    assert history.status_code == 200
    assert source in history.text


def test_the_cli_reads_a_file_reports_bad_lines_and_resumes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run_migrations(Settings(database_url=url))
    path = tmp_path / "acct.csv"
    path.write_text(PMTA + "d,1767607300,bounces@mail.example.com\n")
    env = os.environ | {"STOPLIST_DATABASE_URL": url}
    env.pop("STOPLIST_REDIS_URL", None)
    cmd = [str(BIN / "stoplist"), "ingest", "pmta", str(path)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0] == "acct.csv:5: 3 fields where the header names 10"
    assert lines[-1].startswith("5 lines (100.0 %)")
    assert lines[-1].endswith("events: 3 new, 0 duplicate; 1 bad lines")
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        kept = conn.execute("SELECT source, location, reason FROM delivery_event_errors").fetchall()
    assert kept == [("pmta", "acct.csv:5", "3 fields where the header names 10")]
    with path.open("a") as f:
        f.write(PMTA.splitlines(keepends=True)[1].replace("kept@", "more@"))
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stderr.splitlines()[-1].endswith("events: 1 new, 0 duplicate; 0 bad lines")
    quiet = subprocess.run([*cmd, "-q"], env=env, capture_output=True, text=True, timeout=120)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    missing = subprocess.run(
        [str(BIN / "stoplist"), "ingest", "pmta", str(tmp_path / "none.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2


def test_follow_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """A service stop: what committed stays committed, the summary is written, exit status 0."""
    child, _ = _follower(tmp_path)
    try:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert stderr.splitlines()[-1].endswith("events: 3 new, 0 duplicate; 0 bad lines")


def test_a_dead_parse_process_stops_the_cli_with_a_message(tmp_path: Path) -> None:
    """``--parse-process`` and its child killed (as the OOM killer would): the command says so
    and exits 1, no traceback; what was committed keeps its offset."""
    child, path = _follower(tmp_path, "--parse-process")
    try:
        workers = _grandchildren(child.pid)  # the fork server's child: the parse process
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        with path.open("a") as f:  # the next batch goes to the dead child
            f.write(PMTA.splitlines(keepends=True)[1].replace("kept@", "more@"))
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 1, stderr
    assert "the parse process stopped" in stderr
    assert "Traceback" not in stderr
    assert _offset(tmp_path / "cli.db") == len(PMTA.encode())


def _follower(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], Path]:
    """``stoplist ingest pmta FILE --follow`` on SQLite, once it has committed the whole file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run_migrations(Settings(database_url=url))
    path = tmp_path / "acct.csv"
    path.write_text(PMTA)
    env = os.environ | {"STOPLIST_DATABASE_URL": url}
    env.pop("STOPLIST_REDIS_URL", None)
    cmd = [str(BIN / "stoplist"), "ingest", "pmta", str(path), "--follow", *options]
    child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _offset(tmp_path / "cli.db") != path.stat().st_size:
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            pytest.fail("the follower never saved its offset")
        time.sleep(0.1)
    return child, path


def _grandchildren(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    children = {p for p, parent in parents.items() if parent == pid}
    return [p for p, parent in parents.items() if parent in children]


def _offset(db: Path) -> int | None:
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute('SELECT max("offset") FROM ingest_offsets').fetchone()
        except sqlite3.OperationalError:
            return None
    return None if row is None else row[0]


@pytest.mark.slow
async def test_kill_9_mid_file_on_postgresql_then_restart_records_every_line_once(
    pg_url: str, tmp_path: Path
) -> None:
    """The real command and store: SIGKILL while it works through a file, start it again; every
    bounce is stored once, every hard bounce applied once (one history event each), and every
    delivery (counted into the rates, not stored) counted exactly once."""
    import asyncio

    import asyncpg

    base, _, _ = pg_url.rpartition("/")
    name = f"stoplist_ingest_kill_{os.getpid()}"
    admin = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = f"{base}/{name}"
    try:
        await asyncio.to_thread(run_migrations, Settings(database_url=url))
        path = tmp_path / "acct.csv"
        rows = [PMTA.splitlines(keepends=True)[0]]
        for i in range(6000):
            line = PMTA.splitlines(keepends=True)[1 + (i % 3 == 0)]
            rows.append(line.replace("kept@", f"k{i}@").replace("gone@", f"g{i}@"))
        path.write_text("".join(rows))
        env = os.environ | {"STOPLIST_DATABASE_URL": url}
        env.pop("STOPLIST_REDIS_URL", None)
        cmd = [str(BIN / "stoplist"), "ingest", "pmta", str(path), "--batch-lines", "100", "-q"]
        db = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            child = subprocess.Popen(cmd, env=env)
            try:
                for _ in range(1200):
                    if await db.fetchval("SELECT count(*) FROM delivery_events") >= 300:
                        break
                    await asyncio.sleep(0.05)
                child.send_signal(signal.SIGKILL)
                assert child.wait(30) == -signal.SIGKILL
            finally:
                if child.poll() is None:
                    child.kill()
            stored = await db.fetchval("SELECT count(*) FROM delivery_events")
            assert 300 <= stored < 2000
            done = await asyncio.to_thread(subprocess.run, cmd, env=env, timeout=600)
            assert done.returncode == 0
            assert await db.fetchval("SELECT count(*) FROM delivery_events") == 2000
            counted = await db.fetchrow(
                "SELECT sum(sent) AS sent, sum(delivered) AS delivered, sum(hard) AS hard"
                " FROM rate_counts WHERE grain = '1d'"
            )
            assert (counted["sent"], counted["delivered"], counted["hard"]) == (6000, 4000, 2000)
            hard = await db.fetchval("SELECT count(*) FROM delivery_events WHERE outcome = 'hard'")
            assert hard == 2000
            applied = await db.fetch("SELECT address, count(*) AS n FROM events GROUP BY address")
            assert len(applied) == 2000
            assert {r["n"] for r in applied} == {1}
            assert await db.fetchval("SELECT count(*) FROM suppressions") == 2000
        finally:
            await db.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.mark.parametrize("parse_process", [False, True])
async def test_a_restart_between_qmgr_and_status_lines_keeps_the_postfix_sender(
    env: Env, tmp_path: Path, parse_process: bool
) -> None:
    """The join state (queue id -> from=) is saved with the offset: the status line read by the
    next run still gets its message's sender."""
    qmgr, bounced, _ = POSTFIX.splitlines(keepends=True)
    path = tmp_path / "mail.log"
    path.write_text(qmgr)
    store = EventStore(env.services)
    run = {"db": env.services.db, "sink": store, "progress": Progress(quiet=True)}
    first = await ingest_log("postfix", str(path), parse_process=parse_process, **run)  # type: ignore[arg-type]
    assert (first.lines, first.events_new) == (1, 0)
    with path.open("a") as f:
        f.write(bounced)
    second = await ingest_log("postfix", str(path), parse_process=parse_process, **run)  # type: ignore[arg-type]
    assert (second.lines, second.events_new) == (1, 1)
    async with env.services.db.read() as s:
        rows = (await s.execute(select(DeliveryEvent.recipient, DeliveryEvent.sender))).all()
    assert [tuple(r) for r in rows] == [("gone@example.org", "bounces@mail.example.com")]
