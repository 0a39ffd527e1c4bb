"""End-to-end intake throughput: SMTP in, suppression out.

    .venv/bin/python bench/intake_e2e.py [--messages 20000] [--connections 16]

1. The floor: a do-nothing aiosmtpd server (its own process, answers 250 to every DATA) receives
   the messages; messages/s from the first connection to the last 250.
2. The service: ``stoplist serve`` (subprocess) on a fresh PostgreSQL database and Redis, holding
   ``--preload`` suppressions (default 100,000, loaded by ``COPY`` and analyzed: a list in use, not
   an empty table whose cached plans scan it whole), with the sink enabled, receives the same number of messages: hard-bounce DSNs to the bounce domain and,
   every ``--complaint-every``-th message (default 10), an RFC 5965 abuse report to the feedback
   address (one recipient each, all distinct); messages/s from the first connection until every
   row in ``inbound_messages`` is finished (polled in the database), i.e. stored, parsed, applied
   (suppressed) and marked.
3. The check: every bounce recipient is suppressed with outcome ``hard`` and every complaint
   recipient with ``complaint`` (read from ``suppressions``); the counts are printed and a miss
   fails the run.

Prints both rates, the ratio (goal: the service reaches >= 30 % of the floor), and the service's own
timing counters (store / claim / parse / apply / finish, logged by the intake when it stops).
``--profile`` runs the service under cProfile and prints its top functions. The CPU time the
service process, its processing child with the parse workers, and the PostgreSQL backends of its
database used while the messages were sent and processed is printed per message: on a shared
machine it moves much less than the rates.

PostgreSQL and Redis come from ``--pg-url`` / ``--redis-url`` (defaults: the test servers, see
tests/conftest.py). The client is a small asyncio SMTP client in this process that reuses each
connection for many transactions, as an MTA does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPLATE = (ROOT / "samples" / "bounce" / "postfix-01.eml").read_bytes()
TEMPLATE = TEMPLATE.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
ARF = (ROOT / "samples" / "arf" / "rfc5965-01.eml").read_bytes()
ARF = ARF.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
RCPT = b"bounces@bounces.example.net"
FEEDBACK = b"fbl@feedback.example.net"  # an address entry in the sink's domains
DOMAINS = "bounces.example.net," + FEEDBACK.decode()

# A sibling benchmark (bench/ is this script's directory, hence on sys.path): its preload.
from check_api import address, load_rows  # noqa: E402


def is_complaint(i: int, every: int) -> bool:
    return every > 0 and i % every == every - 1


def bounce_address(i: int) -> str:
    return f"user{i}@example.net"


def complaint_address(i: int) -> str:
    return f"complainer{i}@example.com"


def message(i: int, every: int) -> tuple[bytes, bytes, bytes]:
    """(reverse path, recipient, content) of message ``i``."""
    if is_complaint(i, every):
        who = complaint_address(i).encode()
        body = (
            ARF.replace(b"Alice@Example.com", who)
            .replace(b"alice@example.com", who)
            .replace(b"b+alice=example.com", b"b+complainer%d=example.com" % i)
            .replace(b"report-0001@", b"report-%d@" % i)
        )
        return b"abusedesk@example.com", FEEDBACK, body
    return b"", RCPT, TEMPLATE.replace(b"carol@example.net", bounce_address(i).encode())


def _drop_keys(url: str, prefix: str) -> None:
    """Leave Redis as the run found it."""
    import redis

    client = redis.Redis.from_url(url)
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------- client


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def client(port: int, indices: list[int], every: int, failures: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.example.com\r\n")
    await _reply(reader)
    for i in indices:
        sender, rcpt, body = message(i, every)
        writer.write(b"MAIL FROM:<" + sender + b">\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"RCPT TO:<" + rcpt + b">\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await _reply(reader)).startswith(b"354")
        writer.write(body + b".\r\n")
        final = await _reply(reader)
        if not final.startswith(b"250"):
            failures.append(final)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


async def blast(port: int, n: int, connections: int, every: int, first: int = 0) -> list[bytes]:
    """Messages ``first`` … ``first + n - 1`` over ``connections`` connections."""
    failures: list[bytes] = []
    await asyncio.gather(
        *(
            client(port, list(range(first + c, first + n, connections)), every, failures)
            for c in range(connections)
        )
    )
    return failures


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


# ------------------------------------------------------------------------------- the floor


def floor_server(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    class Nothing:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Nothing(), hostname="floor", loop=loop), "127.0.0.1", port
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def measure_floor(n: int, connections: int, every: int) -> float:
    port = free_port()
    proc = subprocess.Popen([PYTHON, __file__, "--floor-server", str(port)])
    try:
        wait_port(port)
        started = time.perf_counter()
        failures = asyncio.run(blast(port, n, connections, every))
        elapsed = time.perf_counter() - started
        assert not failures, failures[:3]
        return n / elapsed
    finally:
        proc.terminate()
        proc.wait()


# ------------------------------------------------------------------------------- the service


async def _admin(pg_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def load_history(dsn: str, rows: int) -> None:
    """The history of the preloaded list: the bounce that suppressed each address (a list in use
    has one event per suppression at least), then ANALYZE. Without it the events table is new and
    never analysed during the run, and the applier's read of the events a batch already wrote
    (by address) is planned as a scan of the whole table: 620 us of PostgreSQL time a message by
    pg_stat_statements, growing with the run, a state a running service leaves within a minute."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        same = {
            "created_at": datetime.now(UTC),
            "scope": "global",
            "kind": "bounce",
            "outcome": "hard",
            "reason": "user_unknown",
            "source": "smtp",
            "verified": False,
            "detail": "{}",
        }
        for start in range(0, rows, 100_000):
            await conn.copy_records_to_table(
                "events",
                records=[
                    (address(i), *same.values()) for i in range(start, min(rows, start + 100_000))
                ],
                columns=["address", *same],
            )
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()


async def _wait_finished(db_url: str, stored: int, *, analyze: bool = False) -> None:
    """Wait until the ``stored`` messages (every one acknowledged, so every one in the table) are
    no longer pending. One connection, and a count of the pending rows only (the state index):
    a full count per poll would read the whole table 20 times a second, on the cores the service
    is measured on. ``analyze``: then ANALYZE, as autovacuum does on a live database within its
    first minute; without statistics the plans cached on the empty tables (sequential scans) stay
    for the whole run, and the database's cost per message grows with the table."""
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        while True:
            total = await conn.fetchval("SELECT count(*) FROM inbound_messages")
            if total >= stored:
                break
            await asyncio.sleep(0.05)
        while await conn.fetchval("SELECT count(*) FROM inbound_messages WHERE state = 'pending'"):
            await asyncio.sleep(0.05)
        if analyze:
            await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) a live process has used, in seconds (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        children = [p for p, pp in parent.items() if pp == todo[-1]]
        todo.pop()
        found += children
        todo += children
    return found


async def _backend_pids(db_url: str) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


def cpu_used(pid: int, db_url: str) -> tuple[float, float, float]:
    """CPU seconds used so far by the service's process, by its descendants (the processing
    child and the parse workers) and by the PostgreSQL backends connected to its database (a
    backend that ended meanwhile is not counted): a measure of the work per message that a busy
    machine's scheduling changes much less than the rates."""
    backends = asyncio.run(_backend_pids(db_url))
    return (
        _cpu_s(pid),
        sum(_cpu_s(p) for p in _descendants(pid)),
        sum(_cpu_s(p) for p in backends),
    )


async def _outcomes(db_url: str) -> dict[str, set[str]]:
    """Every suppressed address (not removed) with its outcomes, over all scopes."""
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT address, outcome FROM suppressions WHERE removed_at IS NULL"
        )
    finally:
        await conn.close()
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["address"], set()).add(row["outcome"])
    return out


def verify(outcomes: dict[str, set[str]], n: int, every: int) -> tuple[int, int, list[str]]:
    """(bounces suppressed hard, complaints suppressed complaint, up to 5 misses)."""
    hard = complaints = 0
    misses: list[str] = []
    for i in range(n):
        if is_complaint(i, every):
            address, want = complaint_address(i), "complaint"
        else:
            address, want = bounce_address(i), "hard"
        if outcomes.get(address) == {want}:
            hard, complaints = (
                (hard, complaints + 1) if want == "complaint" else (hard + 1, complaints)
            )
        elif len(misses) < 5:
            misses.append(f"{address}: want {want}, got {sorted(outcomes.get(address, ()))}")
    return hard, complaints, misses


def measure_service(args: argparse.Namespace) -> tuple[float, str, dict[str, set[str]]]:
    name = f"stoplist_bench_{os.getpid()}"
    base = args.pg_url.rsplit("/", 1)[0]
    db_url = f"{base}/{name}"
    asyncio.run(_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_admin(args.pg_url, f'CREATE DATABASE "{name}"'))
    smtp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "STOPLIST_DATABASE_URL": db_url,
        "STOPLIST_REDIS_URL": args.redis_url,
        "STOPLIST_REDIS_PREFIX": f"bench{os.getpid()}:",
        "STOPLIST_SMTP_ENABLED": "1",
        "STOPLIST_SMTP_PORT": str(smtp_port),
        "STOPLIST_SMTP_DOMAINS": DOMAINS,
        "STOPLIST_HTTP_PORT": str(http_port),
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": "sl_" + "b" * 40,
        "STOPLIST_INTAKE_SWEEP_INTERVAL_S": "2",
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    profile = Path(tempfile.mkdtemp()) / "serve.prof"
    stoplist = str(Path(PYTHON).parent / "stoplist")
    if args.preload:
        subprocess.run([stoplist, "migrate"], env=env, check=True, cwd=ROOT)
        dsn = db_url.replace("postgresql+asyncpg://", "postgresql://")
        asyncio.run(load_rows(dsn, args.preload))
        asyncio.run(load_history(dsn, args.preload))
    cmd = [stoplist, "serve", "--log-level", "warning"]
    if args.profile:
        cmd = [PYTHON, "-m", "cProfile", "-o", str(profile), *cmd]
    log_path = Path(tempfile.mkdtemp()) / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(smtp_port, timeout=120)
        warm = args.warmup
        if warm:  # recipients of their own (after the timed ones), processed before timing
            assert not asyncio.run(blast(smtp_port, warm, args.connections, 0, args.messages))
            asyncio.run(_wait_finished(db_url, warm, analyze=True))
        cpu_before = cpu_used(proc.pid, db_url)
        started = time.perf_counter()
        failures = asyncio.run(
            blast(smtp_port, args.messages, args.connections, args.complaint_every)
        )
        sent = time.perf_counter() - started
        assert not failures, failures[:3]
        asyncio.run(_wait_finished(db_url, args.messages + warm))
        elapsed = time.perf_counter() - started
        service_s, children_s, backends_s = (
            after - before
            for after, before in zip(cpu_used(proc.pid, db_url), cpu_before, strict=True)
        )
        print(
            f"  service: all {args.messages} accepted after {sent:.1f} s "
            f"({args.messages / sent:.0f}/s), all processed after {elapsed:.1f} s",
            flush=True,
        )
        per = 1e6 / args.messages
        print(
            f"  CPU: service process {service_s:.1f} s, processing child + parse workers "
            f"{children_s:.1f} s, PostgreSQL backends {backends_s:.1f} s; per message "
            f"{service_s * per:.0f} + {children_s * per:.0f} + {backends_s * per:.0f} = "
            f"{(service_s + children_s + backends_s) * per:.0f} µs",
            flush=True,
        )
        outcomes = asyncio.run(_outcomes(db_url))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        asyncio.run(_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        _drop_keys(args.redis_url, env["STOPLIST_REDIS_PREFIX"])
    output = log_path.read_text(errors="replace")
    stats = "\n".join(line for line in output.splitlines() if "intake stats" in line)
    if args.profile and profile.exists():
        print("\n  top functions in the service process (cumulative):")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)
    if not stats and output:
        print(output[-3000:])
    return args.messages / elapsed, stats, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--complaint-every",
        type=int,
        default=10,
        help="Every Nth message is an ARF abuse report (0: bounces only)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url",
        # Not the test suite's database (15): a benchmark's keys must never slow the tests.
        default="redis://127.0.0.1:6379/13",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the service")
    parser.add_argument(
        "--preload",
        type=int,
        default=100_000,
        help="suppressions in the database before the run (COPY, then ANALYZE)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="DSNs sent and processed before timing starts (the processing child started, "
        "its parse workers and connections warm)",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="Extra NAME=value for the service"
    )
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server)
        return

    n, every = args.messages, args.complaint_every
    n_complaints = sum(is_complaint(i, every) for i in range(n))
    print(
        f"{n} messages ({n - n_complaints} DSNs, {n_complaints} ARF complaints) over "
        f"{args.connections} connections, {os.cpu_count()} CPUs"
    )
    floor = measure_floor(n, args.connections, every)
    print(f"  floor (do-nothing aiosmtpd): {floor:.0f} messages/s", flush=True)
    rate, stats, outcomes = measure_service(args)
    hard, complaints, misses = verify(outcomes, n, every)
    print(f"  service end to end: {rate:.0f} messages/s")
    print(
        f"  suppressed: {hard}/{n - n_complaints} bounce recipients hard, "
        f"{complaints}/{n_complaints} complaint recipients complaint "
        f"({len(outcomes)} addresses in all)"
    )
    print(f"  ratio: {rate / floor:.0%} of the floor (goal >= 30%)")
    if stats:
        print("  " + re.sub(r"^.*?intake stats", "intake stats", stats))
    if misses:
        sys.exit("suppressions missing or wrong:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    main()
