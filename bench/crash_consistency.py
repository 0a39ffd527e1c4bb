"""Crash consistency: ``kill -9`` the service mid-stream, restart it, and prove that every message
the SMTP sink acknowledged with 250 is stored and, after the restart, processed.

    .venv/bin/python bench/crash_consistency.py [--messages 3000] [--connections 16]
        [--kill-at 0.1,0.5,0.9] [--no-backlog-kill] [--mode both|separate|inline]
        [--kill-target group|pid] [--claim-timeout 5] [--sqlite] [--json]

The property (RFC 5321 §6.1: with the 250 after DATA the receiver takes responsibility for the
message): a 250 is sent only once the message is committed (``app.intake``), so a crash at any
point loses nothing acknowledged; a message that got no 250 may be missing, and its sender retries
it; the same envelope and bytes delivered again are stored once (digest); a message stored but not
processed when the service died is processed after the restart, exactly once.

For each mode (``STOPLIST_INTAKE_PROCESS=separate``: processing in a child process, the default on
PostgreSQL; ``inline``; SQLite is always inline) the script:

1. makes a fresh PostgreSQL database (``app.db.run_migrations``) and uses Redis db 12 under a
   prefix of its own (or, with ``--sqlite``, a SQLite file and the in-process cache);
2. starts ``stoplist serve`` leading a session of its own (SMTP and HTTP on free loopback ports);
3. sends ``--messages`` distinct Postfix DSNs (``samples/bounce/postfix-01.eml``, recipient
   ``crash<i>@example.net``, envelope ``crash-<i>@bounces.example.net``) over ``--connections``
   concurrent SMTP sessions, recording exactly which got a 250;
4. kills the service with SIGKILL the moment the k-th 250 arrives (``--kill-at``: fractions of the
   stream; the other sessions are mid-transaction) and, unless ``--no-backlog-kill``, once more
   after the last 250, as soon as processing has finished some rows but not all; the signal goes
   to the service's process group, or with ``--kill-target pid`` to its main process only (as the
   OOM killer would). Each time it restarts the service at once on the same ports, and the client
   resends every message that did not get a 250;
5. watches every process of a killed service's session (the intake child leads a process group
   of its own, so a group kill leaves it to notice its service is gone): anything still alive
   after ``--orphan-grace`` seconds is an orphan, reported, killed, and fails the run;
6. waits until no stored row is pending (claims a dead processor did not hand back expire after
   ``--claim-timeout``, ``STOPLIST_INTAKE_CLAIM_TIMEOUT_S``), then checks in the database and
   through ``POST /v1/check`` (bootstrap admin key) that every acknowledged message is stored
   once, finished ``processed``, its recipient suppressed ``hard`` with exactly one event (from
   that message), and suppressed on the check; then stops the service with SIGTERM.

Prints per kill point what was in flight, what was pending and what outlived the kill, then the
counts: sent, acked, stored, processed, lost-acked, unprocessed-acked, duplicates, check-clear
(acked, yet ``/v1/check`` says not suppressed), never-acked, orphans: all must be 0, and the
SIGTERM stop must not hang; exits 1 otherwise. Cleans up its database, SQLite file and Redis keys
(``--keep`` keeps them and the service's log). ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the service's own modules
    sys.path.insert(0, str(ROOT))

STOPLIST = str(Path(sys.executable).parent / "stoplist")
TEMPLATE = (ROOT / "samples" / "bounce" / "postfix-01.eml").read_bytes()
TEMPLATE = TEMPLATE.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
DOMAIN = "bounces.example.net"
# Not the test suite's Redis database (15) nor the other benchmarks' (13, 14).
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
DEFAULT_PG = os.environ.get(
    "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REPLY_TIMEOUT_S = 60.0  # a live service answers long before; a dead one resets the connection
ENVELOPE_RE = re.compile(r"^crash-(\d+)@")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def recipient(i: int) -> str:
    """The bounced recipient of message ``i``: suppressed once the message is processed."""
    return f"crash{i}@example.net"


def envelope_rcpt(i: int) -> str:
    """A per-message envelope recipient (as a VERP return path would be): the stored row names it."""
    return f"crash-{i}@{DOMAIN}"


def message(i: int) -> bytes:
    return TEMPLATE.replace(b"carol@example.net", recipient(i).encode()).replace(
        b"4A1B2C3D", b"Q%08d" % i
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------- processes


@dataclasses.dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    cmd: str


def session_processes(sid: int) -> list[ProcInfo]:
    """Live (not zombie) processes of session ``sid``, however they were re-parented: the
    service leads a session, and everything it starts stays in it (the intake child only takes a
    process group of its own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, ppid, pgid, session = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
        if session == sid and state not in ("Z", "X"):
            found.append(
                ProcInfo(int(entry), ppid, pgid, state, cmd.decode(errors="replace")[:160])
            )
    return found


def describe(p: ProcInfo, main_pid: int) -> str:
    """Spawned children all look alike on the command line: tell them apart by process group
    (the intake child leads a group of its own, with its parse workers in it)."""
    if p.pid == main_pid:
        return "service"
    if "resource_tracker" in p.cmd:
        return "resource tracker"
    if p.pgid == main_pid:
        return "spawned child"  # the service's parse workers, or an intake child still starting
    if p.pgid == p.pid:
        return "intake child"
    return "intake parse worker"


class Service:
    """``stoplist serve`` as a subprocess leading its own session (hence process group)."""

    def __init__(self, env: dict[str, str], smtp_port: int, http_port: int, log_path: Path):
        self.env = env
        self.smtp_port = smtp_port
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [STOPLIST, "serve", "--no-migrate", "--log-level", "warning"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    async def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Until the sink greets and ``/readyz`` answers: seconds since the call."""
        import httpx

        started = time.monotonic()
        deadline = started + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the service exited with {self.proc.returncode}: see {self.log_path}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the service was not ready in {timeout_s:.0f} s")
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.smtp_port)
                    greeting = await asyncio.wait_for(reader.readline(), 5)
                    writer.close()
                    if greeting.startswith(b"220"):
                        r = await http.get(f"http://127.0.0.1:{self.http_port}/readyz")
                        if r.status_code == 200:
                            return time.monotonic() - started
                except (OSError, TimeoutError, httpx.HTTPError):
                    pass
                await asyncio.sleep(0.1)

    def kill(self, target: str) -> list[ProcInfo]:
        """SIGKILL now (the group, or the main process only); returns the session's processes
        as they were at the moment of the kill."""
        before = session_processes(self.pid)
        if target == "group":
            os.killpg(self.pid, signal.SIGKILL)
        else:
            os.kill(self.pid, signal.SIGKILL)
        return before

    def reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> str:
        """SIGTERM (uvicorn shuts down: sink closed, intake child stopped); SIGKILL if stuck."""
        if self.proc is None:
            return "not started"
        if self.proc.poll() is not None:
            return f"had exited ({self.proc.returncode})"
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            # uvicorn re-raises the signal once it has shut down: -15 is a clean stop.
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return f"stuck: killed after {timeout_s:.0f} s"
        return f"exit {code} in {time.monotonic() - started:.1f} s"


@dataclasses.dataclass
class KillReport:
    label: str
    acked_at_kill: int
    in_flight: int
    pending_rows: int = -1  # stored, not yet finished, right after the kill
    claimed_rows: int = -1  # of which claimed (by the killed processor, or a survivor)
    processes: list[str] = dataclasses.field(default_factory=list)
    survivors: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> seconds
    orphans: list[str] = dataclasses.field(default_factory=list)
    restart_s: float = 0.0


async def watch_survivors(sid: int, main_pid: int, report: KillReport, grace_s: float) -> None:
    """Record how long each process of the killed session outlived it; kill any still there
    after ``grace_s`` (they are ours) and report them as orphans."""
    started = time.monotonic()
    first_seen: dict[int, str] = {}
    while True:
        alive = session_processes(sid)
        now = time.monotonic() - started
        for p in alive:
            first_seen.setdefault(p.pid, f"{describe(p, main_pid)} {p.pid}")
        live = {p.pid for p in alive}
        for pid, name in first_seen.items():
            if pid in live:
                report.survivors[name] = round(now, 2)
        if not alive:
            return
        if now > grace_s:
            for p in alive:
                report.orphans.append(f"{describe(p, main_pid)} {p.pid}: {p.cmd}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
            return
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------- the client


class Ledger:
    """What the client knows: which messages got a 250, which must be sent (again)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.queue: collections.deque[int] = collections.deque(range(n))
        self.acked: dict[int, str] = {}  # index -> the 250 reply line
        self.in_flight: set[int] = set()
        self.sent: set[int] = set()  # DATA sent at least once
        self.transmissions = 0
        self.replies: collections.Counter[str] = collections.Counter()
        self.unanswered = 0  # DATA sent, connection lost before the final reply
        self.on_ack: Callable[[int], None] | None = None

    def take(self) -> int | None:
        if not self.queue:
            return None
        i = self.queue.popleft()
        self.in_flight.add(i)
        return i

    def retry_later(self, i: int) -> None:
        self.in_flight.discard(i)
        self.queue.append(i)

    def answered(self, i: int, reply: bytes) -> None:
        self.in_flight.discard(i)
        line = reply.decode(errors="replace").strip()
        self.replies[line[:3]] += 1
        if line.startswith("250"):
            if i not in self.acked:
                self.acked[i] = line
                if self.on_ack is not None:
                    self.on_ack(len(self.acked))
        else:
            self.queue.append(i)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT_S)
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def smtp_session(port: int, ledger: Ledger, stop: asyncio.Event) -> None:
    """One client connection, as an MTA keeps one: many transactions until the queue is empty,
    the connection breaks, or ``stop`` (the service was killed)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        return
    current: int | None = None
    data_sent = False
    try:
        if not (await _reply(reader)).startswith(b"220"):
            return
        writer.write(b"EHLO crash.example.com\r\n")
        await _reply(reader)
        while not stop.is_set():
            current = ledger.take()
            if current is None:
                break
            data_sent = False
            ledger.transmissions += 1
            writer.write(b"MAIL FROM:<>\r\n")
            if not (await _reply(reader)).startswith(b"250"):
                ledger.retry_later(current)
                return
            writer.write(f"RCPT TO:<{envelope_rcpt(current)}>\r\n".encode())
            if not (await _reply(reader)).startswith(b"250"):
                ledger.retry_later(current)
                return
            writer.write(b"DATA\r\n")
            if not (await _reply(reader)).startswith(b"354"):
                ledger.retry_later(current)
                return
            writer.write(message(current) + b".\r\n")
            data_sent = True
            ledger.sent.add(current)
            final = await _reply(reader)
            i, current = current, None
            ledger.answered(i, final)
            if final[:1] == b"4":
                await asyncio.sleep(0.05)  # a 451 is "try again later"
        if not stop.is_set():
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(Exception):
                await _reply(reader)
    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        if current is not None:
            if data_sent:
                ledger.unanswered += 1
            ledger.retry_later(current)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def drive(service: Service, ledger: Ledger, connections: int, stop: asyncio.Event) -> None:
    """Run sessions until every message has its 250, or until ``stop``."""
    port = service.smtp_port
    while ledger.queue and not stop.is_set():
        await asyncio.gather(*(smtp_session(port, ledger, stop) for _ in range(connections)))
        if ledger.queue and not stop.is_set():
            if service.proc is not None and service.proc.poll() is not None:
                raise RuntimeError(f"the service died by itself: see {service.log_path}")
            await asyncio.sleep(0.2)  # every session failed: the service is not there yet


# ------------------------------------------------------------------------------- storage


class Storage:
    """The run's own database (and Redis keys): made, inspected and dropped here."""

    def __init__(self, args: argparse.Namespace, tag: str) -> None:
        self.args = args
        self.sqlite = bool(args.sqlite)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"stoplist-crash-{tag}-"))
        self.redis_prefix = f"crash{os.getpid()}{tag}:"
        self._engine: Any = None
        if self.sqlite:
            self.url = f"sqlite+aiosqlite:///{self.tmp / 'stoplist.db'}"
            self.db_name = ""
        else:
            self.db_name = f"stoplist_crash_{os.getpid()}_{tag}"
            self.url = f"{args.pg_url.rsplit('/', 1)[0]}/{self.db_name}"

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            self.args.pg_url.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self) -> None:
        from app.db import run_migrations
        from app.settings import Settings

        if not self.sqlite:
            await self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            await self._admin(f'CREATE DATABASE "{self.db_name}"')
        await asyncio.to_thread(run_migrations, Settings(database_url=self.url))

    def engine(self) -> Any:
        from sqlalchemy.ext.asyncio import create_async_engine

        if self._engine is None:
            self._engine = create_async_engine(self.url, pool_size=1)
        return self._engine

    async def drop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if not self.sqlite:
            with contextlib.suppress(Exception):
                await self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            with contextlib.suppress(Exception):
                self._drop_redis_keys()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _drop_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        try:
            keys = list(client.scan_iter(match=self.redis_prefix + "*", count=10_000))
            for start in range(0, len(keys), 10_000):
                client.unlink(*keys[start : start + 10_000])
        finally:
            client.close()

    async def pending(self) -> tuple[int, int]:
        """(rows not finished, of which claimed)."""
        from sqlalchemy import func, select

        from app.models import InboundMessage as T

        q = select(func.count(), func.count(T.claimed_at)).where(T.state == "pending")
        async with self.engine().connect() as conn:
            pending, claimed = (await conn.execute(q)).one()
        return int(pending), int(claimed)

    async def finished(self) -> int:
        from sqlalchemy import func, select

        from app.models import InboundMessage as T

        async with self.engine().connect() as conn:
            q = select(func.count()).where(T.state != "pending")
            return int((await conn.execute(q)).scalar_one())

    async def snapshot(
        self,
    ) -> tuple[dict[int, list[tuple[int, str, int]]], dict[str, Any], dict[str, list[int]]]:
        """(index -> [(row id, state, attempts)], address -> active hard suppression, address ->
        message ids of its events)."""
        from sqlalchemy import select

        from app.models import Event, InboundMessage, Suppression

        rows: dict[int, list[tuple[int, str, int]]] = collections.defaultdict(list)
        suppressed: dict[str, Any] = {}
        events: dict[str, list[int]] = collections.defaultdict(list)
        async with self.engine().connect() as conn:
            q = select(
                InboundMessage.id,
                InboundMessage.rcpt_to,
                InboundMessage.state,
                InboundMessage.attempts,
            )
            for row_id, rcpt_to, state, attempts in (await conn.execute(q)).all():
                if isinstance(rcpt_to, str):
                    rcpt_to = json.loads(rcpt_to)
                m = ENVELOPE_RE.match(rcpt_to[0]) if rcpt_to else None
                if m:
                    rows[int(m.group(1))].append((int(row_id), str(state), int(attempts)))
            q2 = select(Suppression.address, Suppression.outcome).where(
                Suppression.removed_at.is_(None)
            )
            for address, outcome in (await conn.execute(q2)).all():
                suppressed[str(address)] = outcome
            q3 = select(Event.address, Event.message_id)
            for address, message_id in (await conn.execute(q3)).all():
                events[str(address)].append(int(message_id or 0))
        return rows, suppressed, events


async def check_api(http_port: int, key: str, addresses: list[str]) -> dict[str, bool]:
    """``POST /v1/check`` in batches: address -> suppressed."""
    import httpx

    out: dict[str, bool] = {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http_port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=60.0,
    ) as http:
        for start in range(0, len(addresses), 5000):
            chunk = addresses[start : start + 5000]
            r = await http.post("/v1/check", json={"addresses": chunk})
            r.raise_for_status()
            for item in r.json()["results"]:
                out[item["address"]] = bool(item["suppressed"])
    return out


# ------------------------------------------------------------------------------- one run


@dataclasses.dataclass
class RunResult:
    mode: str
    database: str
    messages: int
    connections: int
    kills: list[KillReport]
    sent: int = 0  # distinct messages the client sent DATA for at least once
    transmissions: int = 0
    acked: int = 0
    acked_duplicate: int = 0  # 250 "already received": a redelivery after an unanswered DATA
    unanswered: int = 0
    stored: int = 0
    stored_not_acked: int = 0
    processed: int = 0
    reclaimed: int = 0  # rows claimed more than once (their processor died)
    lost_acked: int = 0
    unprocessed_acked: int = 0
    duplicates: int = 0
    check_clear: int = 0
    never_acked: int = 0
    orphans: int = 0
    replies: dict[str, int] = dataclasses.field(default_factory=dict)
    stop: str = ""
    drain_s: float = 0.0
    seconds: float = 0.0
    examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost_acked
            or self.unprocessed_acked
            or self.duplicates
            or self.check_clear
            or self.never_acked
            or self.orphans
            or self.stop.startswith("stuck")
        )


async def stream_until_kill(
    service: Service, ledger: Ledger, args: argparse.Namespace, k: int | None, label: str | None
) -> KillReport | None:
    """Send until every message has its 250; with ``k``, SIGKILL the service the moment the
    k-th 250 arrives (the other sessions mid-transaction) and return what was in flight."""
    stop = asyncio.Event()
    reports: list[KillReport] = []

    def on_ack(count: int) -> None:
        if k is None or count < k or stop.is_set():
            return
        procs = service.kill(args.kill_target)
        stop.set()
        reports.append(
            KillReport(
                label=str(label),
                acked_at_kill=count,
                in_flight=len(ledger.in_flight),
                processes=[f"{describe(p, service.pid)} {p.pid}" for p in procs],
            )
        )

    ledger.on_ack = on_ack
    try:
        await drive(service, ledger, args.connections, stop)
    finally:
        ledger.on_ack = None
    return reports[0] if reports else None


async def kill_during_backlog(
    service: Service, storage: Storage, ledger: Ledger, args: argparse.Namespace
) -> KillReport | None:
    """Every message has its 250: SIGKILL the service as soon as processing has finished some
    rows but not all (claims in progress die with it). None if processing was already done."""
    deadline = time.monotonic() + args.claim_timeout + 120.0
    while time.monotonic() < deadline:
        pending, _ = await storage.pending()
        if pending == 0:
            return None
        if await storage.finished() > 0:
            procs = service.kill(args.kill_target)
            return KillReport(
                label="processing backlog",
                acked_at_kill=len(ledger.acked),
                in_flight=0,
                processes=[f"{describe(p, service.pid)} {p.pid}" for p in procs],
            )
        await asyncio.sleep(0.02)
    raise TimeoutError("processing did not start")


async def run_mode(args: argparse.Namespace, mode: str) -> RunResult:
    from app.keys import generate_key

    started = time.monotonic()
    storage = Storage(args, mode)
    key = generate_key()
    smtp_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOPLIST_")}
    env.update(
        {
            "STOPLIST_DATABASE_URL": storage.url,
            "STOPLIST_SMTP_ENABLED": "1",
            "STOPLIST_SMTP_HOST": "127.0.0.1",
            "STOPLIST_SMTP_PORT": str(smtp_port),
            "STOPLIST_SMTP_DOMAINS": DOMAIN,
            "STOPLIST_HTTP_HOST": "127.0.0.1",
            "STOPLIST_HTTP_PORT": str(http_port),
            "STOPLIST_BOOTSTRAP_ADMIN_KEY": key,
            "STOPLIST_INTAKE_PROCESS": mode,
            # A killed process's claims are anyone's after this (default 300 s).
            "STOPLIST_INTAKE_CLAIM_TIMEOUT_S": str(args.claim_timeout),
            "STOPLIST_INTAKE_SWEEP_INTERVAL_S": "1",
            "STOPLIST_PARSE_WORKERS": str(args.parse_workers),
        }
    )
    if not args.sqlite:
        env["STOPLIST_REDIS_URL"] = args.redis_url
        env["STOPLIST_REDIS_PREFIX"] = storage.redis_prefix
    for kv in args.env:
        name, _, value = kv.partition("=")
        env[name] = value
    result = RunResult(
        mode=mode,
        database="sqlite" if args.sqlite else "postgresql+redis",
        messages=args.messages,
        connections=args.connections,
        kills=[],
    )
    ledger = Ledger(args.messages)
    n = args.messages
    points = sorted({max(1, min(n, round(f * n))) for f in args.kill_at})
    service = Service(env, smtp_port, http_port, storage.tmp / "serve.log")
    watchers: list[asyncio.Task[None]] = []

    async def restart(report: KillReport) -> None:
        killed = service.pid
        service.reap()
        report.pending_rows, report.claimed_rows = await storage.pending()
        # At once, as a supervisor would: what survived of the old session (if anything) and
        # the new service run side by side.
        service.start()
        watchers.append(
            asyncio.create_task(watch_survivors(killed, killed, report, args.orphan_grace))
        )
        report.restart_s = round(await service.wait_ready(), 2)
        result.kills.append(report)
        log(
            f"{mode}: killed at {report.label}: {report.acked_at_kill} acked, "
            f"{report.in_flight} in flight, {report.pending_rows} rows pending "
            f"({report.claimed_rows} claimed); back in {report.restart_s:.1f} s"
        )

    try:
        await storage.create()
        service.start()
        await service.wait_ready()
        log(f"{mode}: service up (pid {service.pid}); {n} messages, kill at {points} acks")
        for k in points:
            report = await stream_until_kill(service, ledger, args, k, f"stream {k / n:.0%}")
            if report is None:  # the stream ended first
                log(f"{mode}: kill point {k} not reached ({len(ledger.acked)} acked)")
                continue
            await restart(report)
        await stream_until_kill(service, ledger, args, None, None)
        if args.backlog_kill:
            report = await kill_during_backlog(service, storage, ledger, args)
            if report is None:
                log(f"{mode}: no backlog left to kill the service in")
            else:
                await restart(report)
        # Everything has its 250: wait for processing (stale claims expire first).
        drain_started = time.monotonic()
        deadline = drain_started + args.claim_timeout + max(60.0, n / 20)
        while (left := (await storage.pending())[0]) > 0:
            if time.monotonic() > deadline:
                log(f"{mode}: {left} rows still pending after {deadline - drain_started:.0f} s")
                break
            await asyncio.sleep(0.25)
        result.drain_s = round(time.monotonic() - drain_started, 2)
        await asyncio.gather(*watchers)
        await verify(result, ledger, storage, http_port, key)
    finally:
        result.stop = service.stop()
        for task in watchers:
            task.cancel()
        if service.proc is not None:
            # Its children (the intake child, parse workers, multiprocessing's resource
            # tracker) stop with it: give them a moment, then count what is left.
            final = KillReport(label="SIGTERM", acked_at_kill=len(ledger.acked), in_flight=0)
            await watch_survivors(service.pid, service.pid, final, args.orphan_grace)
            result.examples += [f"left running after SIGTERM: {o}" for o in final.orphans]
            result.orphans += len(final.orphans)
        if args.keep:
            log(f"{mode}: kept {storage.url} and {storage.tmp}")
        else:
            await storage.drop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


async def verify(
    result: RunResult, ledger: Ledger, storage: Storage, http_port: int, key: str
) -> None:
    rows, suppressed, events = await storage.snapshot()
    acked = set(ledger.acked)
    result.sent = len(ledger.sent)
    result.transmissions = ledger.transmissions
    result.acked = len(acked)
    result.acked_duplicate = sum(1 for line in ledger.acked.values() if "already" in line)
    result.unanswered = ledger.unanswered
    result.replies = dict(sorted(ledger.replies.items()))
    result.never_acked = ledger.n - len(acked)
    result.stored = len(rows)
    result.stored_not_acked = len(set(rows) - acked)
    result.orphans = sum(len(k.orphans) for k in result.kills)
    check = await check_api(http_port, key, [recipient(i) for i in sorted(acked)])
    for i in sorted(acked):
        address = recipient(i)
        mine = rows.get(i, [])
        problem = None
        if not mine:
            result.lost_acked += 1
            problem = "acked but not stored"
        elif len(mine) > 1:
            result.duplicates += 1
            problem = f"stored {len(mine)} times"
        else:
            row_id, state, attempts = mine[0]
            result.reclaimed += attempts > 1
            if state != "processed" or suppressed.get(address) != "hard":
                result.unprocessed_acked += 1
                problem = f"row {row_id} {state}, suppression {suppressed.get(address)}"
            elif events.get(address) != [row_id]:
                result.duplicates += 1
                problem = f"events from messages {events.get(address)} (want [{row_id}])"
            else:
                result.processed += 1
        if not check.get(address):
            result.check_clear += 1
            problem = (problem + "; " if problem else "") + "/v1/check says not suppressed"
        if problem and len(result.examples) < 10:
            result.examples.append(f"message {i} ({address}): {problem}")


# ------------------------------------------------------------------------------- output


def print_summary(results: Iterable[RunResult]) -> None:
    for r in results:
        print(
            f"\n== {r.mode} on {r.database}: {r.messages} DSNs over {r.connections} connections, "
            f"{len(r.kills)} kills, {r.seconds:.1f} s"
        )
        for k in r.kills:
            lived = ", ".join(f"{name} {s:.1f}s" for name, s in k.survivors.items()) or "none"
            print(
                f"  kill at {k.label:<19} acked {k.acked_at_kill:>6}  in flight {k.in_flight:>3}  "
                f"pending rows {k.pending_rows:>5}  processes {len(k.processes)}  "
                f"outlived the kill: {lived}  restart {k.restart_s:.1f}s"
            )
            for o in k.orphans:
                print(f"    ORPHAN killed after the grace period: {o}")
        print(
            f"  sent {r.sent}  transmissions {r.transmissions}  acked {r.acked} "
            f"(of which 'already received' {r.acked_duplicate})  unanswered DATA {r.unanswered}"
        )
        print(
            f"  stored {r.stored} (not acked {r.stored_not_acked})  processed {r.processed}  "
            f"reclaimed after a crash {r.reclaimed}  backlog drained in {r.drain_s:.1f} s"
        )
        print(
            f"  lost-acked {r.lost_acked}  unprocessed-acked {r.unprocessed_acked}  "
            f"duplicates {r.duplicates}  check-clear {r.check_clear}  never-acked {r.never_acked}  "
            f"orphans {r.orphans}  replies {r.replies}  SIGTERM: {r.stop}"
        )
        for e in r.examples:
            print(f"    {e}")
        print(f"  {'PASS' if r.ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--kill-at",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[0.1, 0.5, 0.9],
        help="Fractions of the stream's 250s at which to kill (comma-separated)",
    )
    parser.add_argument(
        "--backlog-kill",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also kill at the last 250, while processing has a backlog",
    )
    parser.add_argument(
        "--mode",
        choices=["both", "separate", "inline"],
        default="both",
        help="STOPLIST_INTAKE_PROCESS (SQLite: always inline)",
    )
    parser.add_argument(
        "--kill-target",
        choices=["group", "pid"],
        default="group",
        help="SIGKILL the service's process group (a supervisor) or its main process (OOM killer)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite file + in-process cache")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="An admin URL on the server")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--claim-timeout", type=float, default=5.0)
    parser.add_argument("--parse-workers", type=int, default=1)
    parser.add_argument("--orphan-grace", type=float, default=20.0)
    parser.add_argument("--env", action="append", default=[], help="Extra NAME=value")
    parser.add_argument("--keep", action="store_true", help="Keep the database and logs")
    parser.add_argument("--json", action="store_true", help="One JSON object on stdout")
    args = parser.parse_args()
    if args.sqlite:
        modes = ["inline"]
    else:
        modes = ["separate", "inline"] if args.mode == "both" else [args.mode]

    async def go() -> list[RunResult]:
        return [await run_mode(args, mode) for mode in modes]

    results = asyncio.run(go())
    ok = all(r.ok for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "runs": [dataclasses.asdict(r) for r in results]}))
    else:
        print_summary(results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
