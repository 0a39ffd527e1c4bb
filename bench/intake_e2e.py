"""End-to-end intake throughput: SMTP in, suppression out.

    .venv/bin/python bench/intake_e2e.py [--messages 20000] [--connections 16]

1. The floor: a do-nothing aiosmtpd server (its own process, answers 250 to every DATA) receives
   the messages; messages/s from the first connection to the last 250.
2. The service: ``stoplist serve`` (subprocess) on a fresh PostgreSQL database and Redis, with the
   sink enabled, receives the same number of hard-bounce DSNs (one recipient each, all distinct);
   messages/s from the first connection until every row in ``inbound_messages`` is finished
   (polled in the database), i.e. stored, parsed, applied (suppressed) and marked.

Prints both, the ratio (goal: the service reaches >= 30 % of the floor), and the service's own
timing counters (store / claim / parse / apply / finish, logged by the intake when it stops).
``--profile`` runs the service under cProfile and prints its top functions.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TEMPLATE = (ROOT / "samples" / "bounce" / "postfix-01.eml").read_bytes()
TEMPLATE = TEMPLATE.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
RCPT = b"bounces@bounces.example.net"


def message(i: int) -> bytes:
    return TEMPLATE.replace(b"carol@example.net", b"user%d@example.net" % i)


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


async def client(port: int, indices: list[int], failures: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.example.com\r\n")
    await _reply(reader)
    for i in indices:
        body = message(i)
        writer.write(b"MAIL FROM:<>\r\n")
        assert (await _reply(reader)).startswith(b"250")
        writer.write(b"RCPT TO:<" + RCPT + b">\r\n")
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


async def blast(port: int, n: int, connections: int) -> list[bytes]:
    failures: list[bytes] = []
    await asyncio.gather(
        *(client(port, list(range(c, n, connections)), failures) for c in range(connections))
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


def measure_floor(n: int, connections: int) -> float:
    port = free_port()
    proc = subprocess.Popen([PYTHON, __file__, "--floor-server", str(port)])
    try:
        wait_port(port)
        started = time.perf_counter()
        failures = asyncio.run(blast(port, n, connections))
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


async def _finished(db_url: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE state <> 'pending') AS done, count(*) AS total "
            "FROM inbound_messages"
        )
        assert row is not None
        return int(row["done"]), int(row["total"])
    finally:
        await conn.close()


async def _suppressed(db_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM suppressions WHERE outcome='hard'"))
    finally:
        await conn.close()


def measure_service(args: argparse.Namespace) -> tuple[float, str, int]:
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
        "STOPLIST_SMTP_DOMAINS": "bounces.example.net",
        "STOPLIST_HTTP_PORT": str(http_port),
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": "sl_" + "b" * 40,
        "STOPLIST_INTAKE_SWEEP_INTERVAL_S": "2",
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    profile = Path(tempfile.mkdtemp()) / "serve.prof"
    stoplist = str(Path(PYTHON).parent / "stoplist")
    cmd = [stoplist, "serve", "--log-level", "warning"]
    if args.profile:
        cmd = [PYTHON, "-m", "cProfile", "-o", str(profile), *cmd]
    log_path = Path(tempfile.mkdtemp()) / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(smtp_port, timeout=120)
        started = time.perf_counter()
        failures = asyncio.run(blast(smtp_port, args.messages, args.connections))
        sent = time.perf_counter() - started
        assert not failures, failures[:3]
        while True:
            done, _total = asyncio.run(_finished(db_url))
            if done >= args.messages:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        print(
            f"  service: all {args.messages} accepted after {sent:.1f} s "
            f"({args.messages / sent:.0f}/s), all processed after {elapsed:.1f} s",
            flush=True,
        )
        suppressed = asyncio.run(_suppressed(db_url))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        asyncio.run(_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    output = log_path.read_text(errors="replace")
    stats = "\n".join(line for line in output.splitlines() if "intake stats" in line)
    if args.profile and profile.exists():
        print("\n  top functions in the service process (cumulative):")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)
    if not stats and output:
        print(output[-3000:])
    return args.messages / elapsed, stats, suppressed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("STOPLIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the service")
    parser.add_argument(
        "--env", action="append", default=[], help="Extra NAME=value for the service"
    )
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server)
        return

    print(f"{args.messages} DSNs over {args.connections} connections, {os.cpu_count()} CPUs")
    floor = measure_floor(args.messages, args.connections)
    print(f"  floor (do-nothing aiosmtpd): {floor:.0f} messages/s", flush=True)
    rate, stats, suppressed = measure_service(args)
    print(f"  service end to end: {rate:.0f} messages/s ({suppressed} hard suppressions)")
    print(f"  ratio: {rate / floor:.0%} of the floor (goal >= 30%)")
    if stats:
        print("  " + re.sub(r"^.*?intake stats", "intake stats", stats))


if __name__ == "__main__":
    main()
