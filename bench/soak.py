"""Soak: pre-send checks, SMTP intake and a bulk import together on PostgreSQL + Redis.

    .venv/bin/python bench/soak.py                          # 30 s warm-up + 5 minutes measured
    .venv/bin/python bench/soak.py --redis-down-seconds 30  # with Redis unreachable for 30 s
    .venv/bin/python bench/soak.py --duration 20 --warmup 5 --dsn-rate 50 --check-rate 50

``stoplist serve`` runs as a subprocess (API + SMTP sink, intake processing in its child; with
``--topology split``, three: ``--role api`` takes the checks, ``--role intake`` the SMTP sink
and ``--role worker`` the imports, as in docs/deployment.md's default topology) on a
fresh PostgreSQL database and its own Redis database (11) and key prefix, preloaded with
``--preload`` suppressions by ``COPY`` (as ``bench/check_api.py`` does). Three load processes,
each on its own event loop so that one cannot stall another's clock, run for a warm-up
(``--warmup``, not in the figures, its errors still count) and then ``--duration`` seconds:

* **checks**: ``GET /v1/check`` at ``--check-rate`` per second and ``POST /v1/check`` with
  ``--batch-size`` addresses at ``--batch-rate`` per second, open loop (each request leaves at
  its scheduled time whatever the others do, and its latency is counted from that time, so a
  stalled service cannot hide its stall by slowing the client). Half the addresses are preloaded
  suppressions, half never suppressed; every answer is compared with that.
* **SMTP intake**: RFC 3464 DSNs at ``--dsn-rate`` per second plus one RFC 5965 ARF complaint in
  every ``--complaint-every`` messages, each to a distinct recipient, over
  ``--smtp-connections`` connections that each send one transaction after another as an MTA
  does; open loop too (a scheduled message waits for a free connection). DATA->250 is the time
  from the end-of-data dot to the final reply.
* **bulk import**: ``--import-rows`` rows (default 1,000 per second of the run) through
  ``POST /v1/suppressions/import`` in requests of ``--import-chunk`` rows, spread evenly over
  the warm-up and the window, as a periodic list sync would.

The rates are a steady, realistic load, not a saturation test: the defaults (231 SMTP messages/s,
200 single checks/s, 5 batches/s of 100, ~1,000 imported rows/s) are a third or less of what
each part reached alone on this 2-core machine (``docs/benchmarks.md``: ~600-800 messages/s end
to end, ~6,400 checks/s, ~30,000 rows/s). The machine's CPU use in the window is printed, with a
warning above 90 %: a saturated run measures contention, not the service.

``--redis-down-seconds N`` puts a small TCP proxy (its own process) between the service and Redis
and, half-way through the window, makes it refuse new connections and reset the open ones for N
seconds (the real Redis keeps running). The checks in the outage and in every second after it in
which ``/readyz`` does not report the cache ``ok`` (the rebuild) are measured apart: they are
answered from the database.

Printed: the offered rates, error counts (a non-2xx answer, a transport error, a wrong answer,
an SMTP reply other than 250, a failed import request; an SMTP 4xx during the injected fault is
listed but excused), sustained DSNs/s, DATA->250 p50/p99, ``/v1/check`` p50/p99 (normal and with
Redis down), import rows/s, the RSS of the service's process tree (service, intake child, parse
workers) after the warm-up and at the end, a timeline, and PASS/FAIL for each goal:

* error rate 0;
* >= 200 DSNs/s sustained with DATA->250 p99 < 250 ms;
* ``/v1/check`` p99 < 50 ms (single and batch), < 200 ms with Redis down;
* memory growth < 10 % (end of the run against the end of the warm-up);
* correctness at the end: every acknowledged message processed and its recipient suppressed
  (hard for a DSN, complaint for an ARF report) in the database, every imported row suppressed,
  and ``POST /v1/check`` (the cache path) answering right for all of them and for samples of
  the preloaded and never-suppressed addresses.

Exit status 1 when a goal fails. The database and the Redis keys are removed at the end
(``--keep`` leaves them for inspection); the service's log is kept and its error lines counted.
A small run does not fit the test suite's time (start-up and preload alone take ~10 s), so this
stays a command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import multiprocessing.context
import os
import platform
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import redis
import uvloop

# Sibling benchmarks (bench/ is this script's directory, hence on sys.path, also in the
# spawned load processes): the preload and the messages are theirs.
from check_api import address as preload_address
from check_api import load_rows
from intake_e2e import DOMAINS, bounce_address, complaint_address, is_complaint, message

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "sl_" + "soak" * 10  # the sl_ + 40 characters shape
DB_NAME = "stoplist_soak"
SMTP_REPLY_TIMEOUT_S = 60.0  # well past the sink's storage timeout (10 s): a hang is an error
HTTP_TIMEOUT_S = 10.0
IMPORT_TIMEOUT_S = 300.0
QUIET = ["--log-level", "warning"]
DRAIN_S = 30.0  # after the run, messages still queued get this long to be sent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def imported_address(i: int) -> str:
    return f"imported{i}@d{i % 2000}.example.org"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Plan:
    """Everything a load process needs. Times are ``time.monotonic()`` values: on Linux that is
    CLOCK_MONOTONIC, one clock for every process on the machine, so they can be handed over."""

    http_port: int
    smtp_port: int
    import_port: int  # http_port, or the worker's port in the split topology
    t0: float  # load starts (warm-up)
    w0: float  # measured window starts
    w1: float  # measured window ends: no new work is scheduled after it
    preload: int
    check_rate: float
    batch_rate: float
    batch_size: int
    dsn_rate: float
    complaint_every: int
    smtp_connections: int
    import_rows: int
    import_chunk: int

    @property
    def smtp_rate(self) -> float:
        """All SMTP messages per second: the DSNs plus one complaint in every ``complaint_every``."""
        every = self.complaint_every
        return self.dsn_rate * every / (every - 1) if every > 1 else self.dsn_rate


# ------------------------------------------------------------------------------- HTTP client


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client. It costs far less CPU a request than httpx (the
    whole check load, answers parsed and compared, used ~0.04 of a core at 205 requests/s), so
    a client sharing two cores with the service measures the service more than itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                data += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readuntil(b"\r\n")
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        self.reusable = headers.get("connection") != "close"
        return status, data

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Keep-alive connections, at most ``size`` requests in flight (the rest wait their turn,
    and the wait counts in their latency)."""

    # uvicorn closes a connection idle for 5 s (``timeout_keep_alive``); one idle for longer
    # than this is not reused, or a request could cross the server's close and fail.
    MAX_IDLE_S = 2.0

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: list[tuple[float, HttpConnection]] = []
        self.slots = asyncio.Semaphore(size)

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        async with self.slots:
            conn = None
            while self.idle and conn is None:
                used, candidate = self.idle.pop()
                if time.monotonic() - used < self.MAX_IDLE_S:
                    conn = candidate
                else:
                    candidate.close()
            conn = conn or await HttpConnection.open(self.port)
            try:
                result = await conn.request(method, target, body, content_type)
            except BaseException:
                conn.close()
                raise
            if conn.reusable:
                self.idle.append((time.monotonic(), conn))
            else:
                conn.close()
            return result

    def close(self) -> None:
        for _, conn in self.idle:
            conn.close()


TRANSPORT_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)
ANSWER_ERRORS = (ValueError, KeyError, TypeError)  # a 200 whose body is not the documented answer


async def pace(rate: float, start: float, end: float, fire: Callable[[int, float], None]) -> None:
    """Call ``fire(n, t)`` at t = start + n / rate for every t before ``end`` (open loop: late
    calls are made at once, never skipped)."""
    if rate <= 0:
        return
    n = 0
    while (t := start + n / rate) < end:
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        fire(n, t)
        n += 1


# ------------------------------------------------------------------------------- load: checks


async def check_load(plan: Plan) -> dict[str, Any]:
    """Single and batch checks at fixed rates; every answer compared with what was loaded:
    preloaded address i < preload is suppressed (globally), any other is not."""
    pool = HttpPool(plan.http_port, size=64)
    rng = random.Random(1)
    single: list[tuple[float, float, int, int]] = []  # (t_sched - t0, latency ms, status, wrong)
    batch: list[tuple[float, float, int, int]] = []
    errors: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def one(t: float) -> None:
        i = rng.randrange(2 * plan.preload)
        # Half ask for a stream: a global suppression blocks every stream.
        stream = "&stream=marketing" if i % 2 else ""
        status, wrong = 0, 0
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                status, body = await pool.request(
                    "GET", f"/v1/check?address={preload_address(i)}{stream}"
                )
            if status == 200:
                wrong = int(orjson.loads(body)["suppressed"] != (i < plan.preload))
            else:
                errors[f"GET {status}: {body[:120]!r}"] += 1
        except (*TRANSPORT_ERRORS, *ANSWER_ERRORS) as exc:
            errors[f"GET {type(exc).__name__}: {exc}"[:160]] += 1
            status = status if status != 200 else 0  # a 200 that is not an answer is an error
        single.append((t - plan.t0, (time.monotonic() - t) * 1000, status, wrong))

    async def many(t: float) -> None:
        ids = [rng.randrange(2 * plan.preload) for _ in range(plan.batch_size)]
        payload = orjson.dumps({"addresses": [preload_address(i) for i in ids]})
        status, wrong = 0, 0
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_S):
                status, body = await pool.request("POST", "/v1/check", payload, "application/json")
            if status == 200:
                results = orjson.loads(body)["results"]
                wrong = sum(
                    r["suppressed"] != (i < plan.preload) for i, r in zip(ids, results, strict=True)
                )
            else:
                errors[f"POST {status}: {body[:120]!r}"] += 1
        except (*TRANSPORT_ERRORS, *ANSWER_ERRORS) as exc:
            errors[f"POST {type(exc).__name__}: {exc}"[:160]] += 1
            status = status if status != 200 else 0
        batch.append((t - plan.t0, (time.monotonic() - t) * 1000, status, wrong))

    await asyncio.gather(
        pace(plan.check_rate, plan.t0, plan.w1, lambda _n, t: spawn(one(t))),
        pace(plan.batch_rate, plan.t0, plan.w1, lambda _n, t: spawn(many(t))),
    )
    while tasks:
        await asyncio.gather(*tasks)
    pool.close()
    return {"single": single, "batch": batch, "errors": dict(errors)}


# ------------------------------------------------------------------------------- load: SMTP


def data_payload(body: bytes) -> bytes:
    """The DATA section on the wire: CRLF lines, dot-stuffed (RFC 5321 §4.5.2), then the dot."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return body + b".\r\n"


async def smtp_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3]), line.rstrip()


async def smtp_load(plan: Plan) -> dict[str, Any]:
    """Messages at a fixed rate onto a queue; ``smtp_connections`` sessions send them."""
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    # (k, t_sched - t0, t_reply - t0, DATA->250 ms, sched->250 ms, code): code 0 = no reply
    records: list[tuple[int, float, float, float, float, int]] = []
    replies: Counter[str] = Counter()
    every = plan.complaint_every
    unsent: list[int] = []

    def fail(k: int, t: float, code: int, why: str) -> None:
        now = time.monotonic()
        records.append((k, t - plan.t0, now - plan.t0, math.nan, (now - t) * 1000, code))
        replies[why[:160]] += 1

    async def session() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", plan.smtp_port)
            except OSError as exc:
                replies[f"connect: {exc}"[:160]] += 1
                if time.monotonic() > plan.w1 + DRAIN_S:
                    # The service is gone: what is left was never sent. Stop at this
                    # session's own end marker (the markers are queued last).
                    while not queue.empty() and (left := queue.get_nowait()) is not None:
                        unsent.append(left[0])
                    return
                await asyncio.sleep(0.5)
                continue
            item: tuple[int, float] | None = None
            try:
                async with asyncio.timeout(SMTP_REPLY_TIMEOUT_S):
                    code, line = await smtp_reply(reader)
                    if code != 220:
                        raise ConnectionError(line.decode(errors="replace"))
                    writer.write(b"EHLO soak.example.com\r\n")
                    await smtp_reply(reader)
                while True:
                    item = await queue.get()
                    if item is None:
                        writer.write(b"QUIT\r\n")
                        with contextlib.suppress(*TRANSPORT_ERRORS, ConnectionError):
                            async with asyncio.timeout(5):
                                await smtp_reply(reader)
                        writer.close()
                        return
                    k, t = item
                    if time.monotonic() > plan.w1 + DRAIN_S:
                        unsent.append(k)  # the backlog the service did not take in time
                        continue
                    sender, rcpt, body = message(k, every)
                    async with asyncio.timeout(SMTP_REPLY_TIMEOUT_S):
                        writer.write(b"MAIL FROM:<" + sender + b">\r\n")
                        code, line = await smtp_reply(reader)
                        if code == 250:
                            writer.write(b"RCPT TO:<" + rcpt + b">\r\n")
                            code, line = await smtp_reply(reader)
                        if code == 250:
                            writer.write(b"DATA\r\n")
                            code, line = await smtp_reply(reader)
                        if code == 354:
                            writer.write(data_payload(body))
                            sent = time.monotonic()
                            code, line = await smtp_reply(reader)
                            now = time.monotonic()
                            records.append(
                                (
                                    k,
                                    t - plan.t0,
                                    now - plan.t0,
                                    (now - sent) * 1000,
                                    (now - t) * 1000,
                                    code,
                                )
                            )
                            if code != 250:
                                replies[line.decode(errors="replace")[:160]] += 1
                        else:
                            fail(k, t, code, line.decode(errors="replace"))
                            item = None  # counted: a broken RSET below must not count it again
                            writer.write(b"RSET\r\n")
                            await smtp_reply(reader)
                    item = None
            except (*TRANSPORT_ERRORS, ConnectionError) as exc:
                if item is not None:
                    fail(item[0], item[1], 0, f"{type(exc).__name__}: {exc}")
                writer.close()
                await asyncio.sleep(0.2)

    def enqueue(k: int, t: float) -> None:
        queue.put_nowait((k, t))

    sessions = [asyncio.ensure_future(session()) for _ in range(plan.smtp_connections)]
    await pace(plan.smtp_rate, plan.t0, plan.w1, enqueue)
    for _ in sessions:
        queue.put_nowait(None)
    await asyncio.gather(*sessions)
    return {"records": records, "replies": dict(replies), "unsent": unsent}


# ------------------------------------------------------------------------------- load: import


async def import_load(plan: Plan) -> dict[str, Any]:
    """``import_rows`` rows in requests of ``import_chunk``, started evenly from the start of
    the warm-up (so the warm-up has seen an import too) to the end of the window."""
    chunks = math.ceil(plan.import_rows / plan.import_chunk) if plan.import_rows else 0
    # (first row, rows, t_start - t0, seconds, status, summary or error text)
    records: list[tuple[int, int, float, float, int, Any]] = []
    for j in range(chunks):
        at = plan.t0 + j * (plan.w1 - plan.t0) / chunks
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        first = j * plan.import_chunk
        rows = min(plan.import_chunk, plan.import_rows - first)
        body = "address,outcome,reason\n" + "".join(
            f"{imported_address(i)},hard,user_unknown\n" for i in range(first, first + rows)
        )
        started = time.monotonic()
        status, result = 0, None
        # A connection of its own per request: between requests it would sit idle past the
        # server's keep-alive timeout.
        try:
            conn = await HttpConnection.open(plan.import_port)
        except OSError as exc:
            result = f"connect: {exc}"
        else:
            try:
                async with asyncio.timeout(IMPORT_TIMEOUT_S):
                    status, data = await conn.request(
                        "POST", "/v1/suppressions/import", body.encode(), "text/csv"
                    )
                result = (
                    orjson.loads(data) if status == 200 else data[:200].decode(errors="replace")
                )
            except (*TRANSPORT_ERRORS, *ANSWER_ERRORS) as exc:
                status, result = 0, f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
        records.append((first, rows, started - plan.t0, time.monotonic() - started, status, result))
    return {"records": records}


LOADS: dict[str, Callable[[Plan], Coroutine[Any, Any, dict[str, Any]]]] = {
    "checks": check_load,
    "smtp": smtp_load,
    "import": import_load,
}


def load_process(kind: str, plan: Plan, out: Queue[tuple[str, dict[str, Any]]]) -> None:
    """Entry point of a load process (spawned): run one load, hand back its records."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
    started, cpu = time.monotonic(), time.process_time()
    result = uvloop.run(LOADS[kind](plan))
    result["cores"] = (time.process_time() - cpu) / max(time.monotonic() - started, 1e-3)
    out.put((kind, result))


# ------------------------------------------------------------------------------- Redis proxy


def redis_proxy(listen_port: int, target_host: str, target_port: int) -> None:
    """A TCP proxy to Redis (spawned). SIGUSR1: down (stop listening, so new connections are
    refused, and reset every open one); SIGUSR2: up again. The real Redis is never touched."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        server: asyncio.Server | None = None
        stopped = asyncio.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # RuntimeError: uvloop's answer to a write on a transport that down() aborted.
            with contextlib.suppress(OSError, RuntimeError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
            except OSError:
                writer.close()
                return
            pair = (writer, up_writer)
            pairs.add(pair)
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                pairs.discard(pair)

        async def listen() -> None:
            nonlocal server
            server = await asyncio.start_server(
                handle, "127.0.0.1", listen_port, reuse_address=True
            )

        def down() -> None:
            nonlocal server
            if server is not None:
                server.close()
                server = None
            for pair in list(pairs):
                for w in pair:
                    sock = w.get_extra_info("socket")
                    if sock is not None:  # linger 0: close() sends RST, not FIN
                        with contextlib.suppress(OSError):
                            linger = struct.pack("ii", 1, 0)
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    w.transport.abort()
            pairs.clear()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, down)
        loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(listen()))
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        await listen()
        await stopped.wait()

    uvloop.run(main())


# ------------------------------------------------------------------------------- the service


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (the intake child and the parse workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_by_process(roots: list[int]) -> dict[str, float]:
    """VmRSS in MB of each process of the trees, keyed "pid command" (shared pages are counted
    in each process, as ps does)."""
    out: dict[str, float] = {}
    for pid in (pid for root in roots for pid in process_tree(root)):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[f"{pid} {cmd[:70].strip()}"] = int(line.split()[1]) / 1024
    return out


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_share(since: tuple[float, float]) -> float:
    busy, total = cpu_times()
    return (busy - since[0]) / (total - since[1])


@dataclass
class Timeline:
    """What the orchestrator saw while the load ran."""

    rss: list[tuple[float, float]] = field(default_factory=list)  # (t - t0, MB)
    rss_detail: list[dict[str, float]] = field(default_factory=list)  # per process, same times
    ready: list[tuple[float, str]] = field(default_factory=list)  # (t - t0, /readyz cache)
    down: tuple[float, float] | None = None  # Redis unreachable from, to (monotonic)
    cpu_busy: float = math.nan  # share of the machine's CPU in the measured window


async def watch(
    plan: Plan,
    service_pids: list[int],
    proxy_pid: int | None,
    down_s: float,
    timeline: Timeline,
    done: asyncio.Event,
) -> None:
    """Sample RSS and /readyz every second until the loads are done; break Redis if asked
    (centred on the middle of the window)."""
    base = f"http://127.0.0.1:{plan.http_port}"
    down_at = plan.w0 + (plan.w1 - plan.w0 - down_s) / 2 if proxy_pid else math.inf
    restored = False
    cpu_start: tuple[float, float] | None = None
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while not done.is_set():
            now = time.monotonic()
            if proxy_pid and timeline.down is None and now >= down_at:
                os.kill(proxy_pid, signal.SIGUSR1)
                timeline.down = (now, now + down_s)
                log(f"Redis made unreachable for {down_s:.0f} s")
            if proxy_pid and timeline.down and not restored and now >= timeline.down[1]:
                os.kill(proxy_pid, signal.SIGUSR2)
                timeline.down, restored = (timeline.down[0], now), True
                log("Redis reachable again")
            if cpu_start is None and now >= plan.w0:
                cpu_start = cpu_times()
            if cpu_start and math.isnan(timeline.cpu_busy) and now >= plan.w1:
                timeline.cpu_busy = cpu_share(cpu_start)
            detail = rss_by_process(service_pids)
            timeline.rss.append((now - plan.t0, sum(detail.values())))
            timeline.rss_detail.append(detail)
            try:
                state = str((await client.get("/readyz")).json().get("cache"))
            except (httpx.HTTPError, ValueError) as exc:
                state = f"error: {type(exc).__name__}"
            timeline.ready.append((now - plan.t0, state))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, 1.0 - (time.monotonic() - now)))
    if cpu_start and math.isnan(timeline.cpu_busy):  # the loads ended within the last second
        timeline.cpu_busy = cpu_share(cpu_start)


def collect(
    results: Queue[tuple[str, dict[str, Any]]], procs: list[BaseProcess], deadline: float
) -> dict[str, dict[str, Any]]:
    """Each load process's records (read before joining it: a process that put a large
    result on a queue cannot exit until it is read)."""
    got: dict[str, dict[str, Any]] = {}
    while len(got) < len(procs):
        try:
            kind, result = results.get(timeout=1)
            got[kind] = result
        except queue.Empty:
            dead = [p.name for p in procs if not p.is_alive() and p.exitcode != 0]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"load processes failed or hung: {dead}") from None
    return got


async def run_load(
    plan: Plan,
    ctx: multiprocessing.context.SpawnContext,
    procs: list[BaseProcess],
    service_pids: list[int],
    proxy_pid: int | None,
    down_s: float,
) -> tuple[dict[str, dict[str, Any]], Timeline]:
    results: Queue[tuple[str, dict[str, Any]]] = ctx.Queue()
    for kind in LOADS:
        p = ctx.Process(target=load_process, args=(kind, plan, results), name=f"soak-{kind}")
        p.start()
        procs.append(p)
    timeline, done = Timeline(), asyncio.Event()
    watcher = asyncio.create_task(watch(plan, service_pids, proxy_pid, down_s, timeline, done))
    try:
        deadline = plan.w1 + DRAIN_S + IMPORT_TIMEOUT_S
        got = await asyncio.to_thread(collect, results, procs, deadline)
    finally:
        done.set()
        await watcher
    for proc in procs:
        proc.join(10)
    return got, timeline


async def admin_sql(pg_url: str, sql: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def drop_keys(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    dropped = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            dropped += int(client.unlink(*batch))
            batch.clear()
    if batch:
        dropped += int(client.unlink(*batch))
    client.close()
    return dropped


def wait_ready(base: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(base + "/readyz", timeout=2).json()
            if predicate(last):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"service not ready after {timeout:.0f} s: {last}")


# ------------------------------------------------------------------------------- verification


async def settle(db_url: str, timeout: float) -> dict[str, int]:
    """Wait until no stored message is pending; return the count per state."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(db_url)
    try:
        while True:
            rows = await conn.fetch("SELECT state, count(*) AS n FROM inbound_messages GROUP BY 1")
            states = {r["state"]: int(r["n"]) for r in rows}
            if not states.get("pending") or time.monotonic() > deadline:
                return states
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def outcomes_in_db(db_url: str, addresses: list[str]) -> dict[str, set[str]]:
    """The outcomes of each address's active suppressions, over all scopes."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT address, outcome FROM suppressions "
            "WHERE removed_at IS NULL AND address = ANY($1::text[])",
            addresses,
        )
    finally:
        await conn.close()
    found: dict[str, set[str]] = {}
    for r in rows:
        found.setdefault(r["address"], set()).add(r["outcome"])
    return found


def check_via_api(base: str, expected: dict[str, bool]) -> list[str]:
    """Ask ``POST /v1/check`` (the cache path) about every address; return the wrong ones."""
    wrong: list[str] = []
    addresses = list(expected)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for start in range(0, len(addresses), 10_000):
            chunk = addresses[start : start + 10_000]
            r = client.post("/v1/check", json={"addresses": chunk}, timeout=60)
            r.raise_for_status()
            for a, res in zip(chunk, r.json()["results"], strict=True):
                if res["suppressed"] != expected[a]:
                    wrong.append(a)
    return wrong


def recipient(k: int, every: int) -> tuple[str, str]:
    """Message ``k``'s recipient and the outcome it must be suppressed with."""
    if is_complaint(k, every):
        return complaint_address(k), "complaint"
    return bounce_address(k), "hard"


@dataclass
class Verdict:
    """The state at the end, against what the load was told."""

    states: dict[str, int]  # stored messages per processing state
    acked: int
    not_acked: int  # no 250 (the sender would retry): may be missing
    expected_in_db: int
    missing: list[str]  # acknowledged recipients or imported rows not suppressed as expected
    imported: int
    import_failures: list[str]
    checked: int
    wrong_api: list[str]  # addresses POST /v1/check answered wrongly
    wrong_acked_at: list[float]  # when the messages among them were acknowledged (s in window)
    cache_wait_s: float

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.wrong_api
            or self.states.get("pending")
            or self.states.get("failed")
        )


def verify(plan: Plan, got: dict[str, dict[str, Any]], db_url: str, settle_s: float) -> Verdict:
    """Every acknowledged message processed and its recipient suppressed, every imported row
    suppressed (in the database, then through ``POST /v1/check`` once the cache is ready), and
    samples of the preloaded and never-suppressed addresses answered right."""
    states = asyncio.run(settle(db_url, settle_s))
    every = plan.complaint_every
    smtp = got["smtp"]
    acked = [r for r in smtp["records"] if r[5] == 250]
    want = dict(recipient(r[0], every) for r in acked)
    acked_at = {recipient(r[0], every)[0]: r[2] - (plan.w0 - plan.t0) for r in acked}
    imported: list[str] = []
    failures: list[str] = []
    for first, rows, _t, _s, status, summary in got["import"]["records"]:
        if status == 200 and isinstance(summary, dict) and summary.get("inserted") == rows:
            imported += [imported_address(i) for i in range(first, first + rows)]
        else:
            failures.append(f"rows {first}..{first + rows - 1}: {status} {summary}"[:200])
    found = asyncio.run(outcomes_in_db(db_url, [*want, *imported]))
    missing = [
        f"{a}: want {o}, got {sorted(found.get(a, ()))}"
        for a, o in [*want.items(), *((a, "hard") for a in imported)]
        if found.get(a) != {o}
    ]
    # The cache path: wait for a complete replica (a rebuild after a Redis outage), then ask.
    started = time.monotonic()
    try:
        wait_ready(f"http://127.0.0.1:{plan.http_port}", lambda r: r.get("cache") == "ok", 300)
        cache_wait = time.monotonic() - started
    except RuntimeError as exc:  # still checked: from the database, answers must be right too
        log(f"the cache did not become ready: {exc}")
        cache_wait = math.nan
    rng = random.Random(5)
    sample = [rng.randrange(2 * plan.preload) for _ in range(4000)]
    expected = dict.fromkeys([*want, *imported], True)
    expected |= {preload_address(i): i < plan.preload for i in sample}
    wrong = check_via_api(f"http://127.0.0.1:{plan.http_port}", expected)
    return Verdict(
        states=states,
        acked=len(acked),
        not_acked=len(smtp["records"]) - len(acked) + len(smtp["unsent"]),
        expected_in_db=len(want) + len(imported),
        missing=missing,
        imported=len(imported),
        import_failures=failures,
        checked=len(expected),
        wrong_api=[f"{a}: suppressed={not expected[a]}, want {expected[a]}" for a in wrong],
        wrong_acked_at=sorted(acked_at[a] for a in wrong if a in acked_at),
        cache_wait_s=cache_wait,
    )


# ------------------------------------------------------------------------------- report

Sample = tuple[float, float, int, int]  # (t_sched - t0, latency ms, HTTP status, wrong answers)
SmtpRecord = tuple[int, float, float, float, float, int]  # see smtp_load


def window_stats(samples: list[Sample]) -> dict[str, float]:
    ok = [lat for _, lat, status, _ in samples if status == 200]
    return {
        "requests": len(samples),
        "p50_ms": round(pct(ok, 50), 2),
        "p99_ms": round(pct(ok, 99), 2),
        "max_ms": round(max(ok, default=math.nan), 2),
        "errors": sum(status != 200 for _, _, status, _ in samples),
        "wrong": sum(wrong for *_, wrong in samples),
    }


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def degraded_spans(plan: Plan, timeline: Timeline) -> list[tuple[float, float]]:
    """When checks were answered from the database because of the injected fault: the outage,
    and every later second in which /readyz did not report the cache ``ok`` (the replica being
    rebuilt). Empty without a fault: then nothing is set apart from the normal figures."""
    if timeline.down is None:
        return []
    start, end = timeline.down[0] - plan.t0, timeline.down[1] - plan.t0
    spans = [(start, end)]
    for t, state in timeline.ready:
        if t >= start and state != "ok":
            spans.append((t - 1.0, t + 1.0))  # /readyz is sampled once a second
    return spans


def report(
    args: argparse.Namespace,
    plan: Plan,
    offered: str,
    got: dict[str, dict[str, Any]],
    timeline: Timeline,
    verdict: Verdict,
) -> list[tuple[bool, str]]:
    """Print the figures, the timeline and the goals; write the JSON summary; return the goals."""
    w0, w1 = plan.w0 - plan.t0, plan.w1 - plan.t0
    every = plan.complaint_every
    spans = degraded_spans(plan, timeline)

    def degraded(t: float) -> bool:
        return any(lo <= t < hi for lo, hi in spans)

    checks = got["checks"]
    window = {k: [s for s in checks[k] if w0 <= s[0] < w1] for k in ("single", "batch")}
    normal = {k: window_stats([s for s in v if not degraded(s[0])]) for k, v in window.items()}
    during = {k: window_stats([s for s in v if degraded(s[0])]) for k, v in window.items()}
    whole = {k: window_stats(checks[k]) for k in ("single", "batch")}  # warm-up included

    smtp = got["smtp"]
    records: list[SmtpRecord] = smtp["records"]
    dsn_acks = [r for r in records if r[5] == 250 and not is_complaint(r[0], every)]
    dsn_rate = sum(w0 <= r[2] < w1 for r in dsn_acks) / args.duration
    per_10s = [
        sum(w0 + s <= r[2] < w0 + s + 10 for r in dsn_acks) / 10
        for s in range(0, int(args.duration) - 9, 10)
    ]
    # By the time of the reply, as the sustained rate (a message scheduled during the warm-up
    # may be sent in the window when the sink is behind).
    acked_in_window = [r for r in records if r[5] == 250 and w0 <= r[2] < w1]
    data_ms = [r[3] for r in acked_in_window]
    total_ms = [r[4] for r in acked_in_window]
    down = (timeline.down[0] - plan.t0, timeline.down[1] - plan.t0) if timeline.down else None

    def excused(r: SmtpRecord) -> bool:
        # A 4xx while Redis is down is allowed by the goal (the sink should not need Redis).
        return down is not None and 400 <= r[5] < 500 and down[0] <= r[2] < down[1] + 2

    smtp_errors = [r for r in records if r[5] != 250 and not excused(r)]
    smtp_excused = len(records) - len(smtp_errors) - sum(r[5] == 250 for r in records)
    imports = got["import"]["records"]
    rows_done = sum(rows for _f, rows, _t, _s, status, _ in imports if status == 200)
    import_busy = sum(s for _f, _r, _t, s, status, _ in imports if status == 200)
    # RSS after the warm-up and at the end of the window (the last sample before it ends).
    first = next((i for i, (t, _) in enumerate(timeline.rss) if t >= w0), 0)
    last = max((i for i, (t, _) in enumerate(timeline.rss) if t <= w1), default=first)
    rss_start, rss_end = timeline.rss[first][1], timeline.rss[last][1]
    growth = (rss_end - rss_start) / rss_start * 100
    http_errors = sum(whole[k]["errors"] + whole[k]["wrong"] for k in whole)
    operations = sum(len(checks[k]) for k in whole) + len(records) + len(smtp["unsent"])
    operations += len(imports)
    errors = http_errors + len(smtp_errors) + len(smtp["unsent"]) + len(verdict.import_failures)

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; CPU busy in the window {timeline.cpu_busy:.0%}; load "
        f"average at the end {os.getloadavg()[0]:.1f}"
    )
    print(
        "load processes' CPU: "
        + ", ".join(f"{k} {v['cores']:.2f} cores" for k, v in sorted(got.items()))
    )
    if timeline.cpu_busy > 0.9:
        print(
            "WARNING: the machine's CPU was saturated in the window: the latencies measure "
            "contention as much as the service (run it on a quiet machine)"
        )
    print(f"offered: {offered}")
    line = f"window: {args.duration:.0f} s after a {args.warmup:.0f} s warm-up"
    line += f"; Redis {'through the fault proxy' if spans else 'direct'}"
    if down:
        recovered = max(hi for _, hi in spans) - 1.0
        line += (
            f", unreachable {down[1] - down[0]:.0f} s from t={down[0] - w0:.0f} s; cache ok "
            f"for good {max(0.0, recovered - down[1]):.0f} s after it came back"
        )
    print(line)
    print()
    print(f"{'':36}{'requests':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>7}{'wrong':>6}")
    table = [
        ("GET /v1/check", normal["single"]),
        (f"POST /v1/check x{plan.batch_size}", normal["batch"]),
    ]
    if spans:
        table += [
            ("GET /v1/check, Redis down *", during["single"]),
            (f"POST /v1/check x{plan.batch_size}, Redis down *", during["batch"]),
        ]
    for label, st in table:
        print(
            f"{label:36}{st['requests']:>9}{fmt_ms(st['p50_ms']):>8}{fmt_ms(st['p99_ms']):>8}"
            f"{fmt_ms(st['max_ms']):>8}{st['errors']:>7}{st['wrong']:>6}"
        )
    if spans:
        print("  * the outage and every second after it in which /readyz did not say cache ok")
    for text, n in sorted(checks["errors"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"  check error: {n} x {text}")
    print()
    scheduled = len(records) + len(smtp["unsent"])
    print(
        f"SMTP: {verdict.acked:,} of {scheduled:,} messages acknowledged; sustained "
        f"{dsn_rate:.1f} DSNs/s in the window"
        + (f" (10-s windows: {min(per_10s):.1f} .. {max(per_10s):.1f})" if per_10s else "")
    )
    print(
        f"  DATA->250 p50 {fmt_ms(pct(data_ms, 50))} ms, p99 {fmt_ms(pct(data_ms, 99))} ms, "
        f"max {fmt_ms(max(data_ms, default=math.nan))} ms; scheduled->250 p99 "
        f"{fmt_ms(pct(total_ms, 99))} ms"
    )
    print(
        f"  not 250: {len(smtp_errors)} (+{smtp_excused} 4xx while Redis was down); never sent "
        f"(backlog at the end): {len(smtp['unsent'])}"
    )
    for text, n in sorted(smtp["replies"].items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n} x {text}")
    print(
        f"import: {rows_done:,} of {plan.import_rows:,} rows in {len(imports)} requests, "
        f"{len(verdict.import_failures)} failed; {rows_done / w1:,.0f} rows/s over the run, "
        f"{rows_done / import_busy if import_busy else math.nan:,.0f} rows/s while a request ran"
    )
    for failure in verdict.import_failures[:3]:
        print(f"    {failure}")
    print(
        f"service RSS (process tree): {rss_start:.0f} MB after the warm-up, {rss_end:.0f} MB at "
        f"the end ({growth:+.1f} %), peak {max(mb for _, mb in timeline.rss):.0f} MB"
    )
    before, after = timeline.rss_detail[first], timeline.rss_detail[last]
    for name in sorted(before.keys() | after.keys()):
        print(f"    {before.get(name, 0):>5.0f} -> {after.get(name, 0):>4.0f} MB  {name}")
    print()
    print(
        f"verification: stored messages by state {verdict.states}; {verdict.not_acked} not "
        f"acknowledged (may be missing: the sender retries them)"
    )
    print(
        f"  database: {verdict.expected_in_db - len(verdict.missing):,}/{verdict.expected_in_db:,} "
        f"acknowledged recipients and imported rows suppressed as expected"
    )
    print(
        f"  POST /v1/check (cache ready {verdict.cache_wait_s:.1f} s after the load): "
        f"{len(verdict.wrong_api)} wrong of {verdict.checked:,} addresses"
    )
    for text in (verdict.missing + verdict.wrong_api)[:5]:
        print(f"    {text}")
    if verdict.wrong_acked_at:
        at = verdict.wrong_acked_at
        print(
            f"    the wrong answers include {len(at)} acknowledged messages, acknowledged at "
            f"t = {at[0]:.1f} .. {at[-1]:.1f} s"
        )

    print()
    step = max(5, int(args.duration // 20))
    print(
        f"{'t s':>6}{'DSN/s':>7}{'DATA p99':>9}{'GET p99':>9}{'POST p99':>9}{'errors':>7}"
        f"{'RSS MB':>7}  cache (t: start of the step, from the start of the window)"
    )
    for lo in range(0, int(w1), step):
        hi = lo + step
        rec = [r for r in records if lo <= r[2] < hi]
        g = [x for x in checks["single"] if lo <= x[0] < hi]
        b = [x for x in checks["batch"] if lo <= x[0] < hi]
        errs = sum(r[5] != 250 for r in rec) + sum(x[2] != 200 or x[3] for x in g + b)
        mem = [mb for t, mb in timeline.rss if lo <= t < hi]
        cache = Counter(st for t, st in timeline.ready if lo <= t < hi).most_common(1)
        print(
            f"{lo - w0:>6.0f}"
            f"{sum(r[5] == 250 and not is_complaint(r[0], every) for r in rec) / step:>7.1f}"
            f"{fmt_ms(pct([r[3] for r in rec if r[5] == 250], 99)):>9}"
            f"{fmt_ms(pct([x[1] for x in g if x[2] == 200], 99)):>9}"
            f"{fmt_ms(pct([x[1] for x in b if x[2] == 200], 99)):>9}{errs:>7}"
            f"{(mem[-1] if mem else math.nan):>7.0f}  {cache[0][0][:60] if cache else '-'}"
        )

    data_p99 = pct(data_ms, 99)
    goals: list[tuple[bool, str]] = [
        (errors == 0, f"error rate 0: {errors} errors in {operations:,} operations"),
        (
            dsn_rate >= 200 and data_p99 < 250,
            f">= 200 DSNs/s sustained ({dsn_rate:.1f}) with DATA->250 p99 < 250 ms "
            f"({fmt_ms(data_p99)})",
        ),
        (
            max(normal["single"]["p99_ms"], normal["batch"]["p99_ms"]) < 50,
            f"/v1/check p99 < 50 ms: GET {fmt_ms(normal['single']['p99_ms'])}, POST "
            f"{fmt_ms(normal['batch']['p99_ms'])}",
        ),
    ]
    if spans:
        goals.append(
            (
                max(during["single"]["p99_ms"], during["batch"]["p99_ms"]) < 200,
                f"/v1/check p99 < 200 ms with Redis down: GET "
                f"{fmt_ms(during['single']['p99_ms'])}, POST {fmt_ms(during['batch']['p99_ms'])}",
            )
        )
    goals += [
        (
            growth < 10,
            f"memory growth < 10 %: {rss_start:.0f} -> {rss_end:.0f} MB ({growth:+.1f} %)",
        ),
        (
            verdict.ok,
            "correct at the end: every acknowledged message processed and suppressed, every "
            "imported row suppressed, every /v1/check answer right",
        ),
    ]
    print()
    for ok, text in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "args": {k: str(v) for k, v in vars(args).items()},
        "plan": asdict(plan) | {"smtp_rate": plan.smtp_rate},
        "cpu_busy": timeline.cpu_busy,
        "check": normal,
        "check_redis_down": during if spans else None,
        "redis_down_s": down,
        "dsn_per_s": dsn_rate,
        "dsn_per_s_10s": per_10s,
        "data_to_250_ms": {"p50": pct(data_ms, 50), "p99": data_p99},
        "smtp_errors": len(smtp_errors),
        "smtp_4xx_during_fault": smtp_excused,
        "import_rows": rows_done,
        "import_rows_per_s_while_running": rows_done / import_busy if import_busy else None,
        "rss_mb": {"start": rss_start, "end": rss_end, "growth_pct": growth},
        "verification": asdict(verdict) | {"ok": verdict.ok},
        "goals": [{"pass": ok, "goal": text} for ok, text in goals],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str))
    return goals


# ------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=300, help="measured seconds (default 300)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=30,
        help="seconds of load before measuring (parse workers' caches fill, pools open)",
    )
    ap.add_argument("--preload", type=int, default=100_000, help="suppressions loaded by COPY")
    ap.add_argument("--check-rate", type=float, default=200, help="GET /v1/check per second")
    ap.add_argument("--batch-rate", type=float, default=5, help="POST /v1/check per second")
    ap.add_argument("--batch-size", type=int, default=100, help="addresses per POST /v1/check")
    ap.add_argument("--dsn-rate", type=float, default=210, help="DSNs per second offered")
    ap.add_argument(
        "--complaint-every", type=int, default=11, help="one message in N is an ARF complaint"
    )
    ap.add_argument("--smtp-connections", type=int, default=16)
    ap.add_argument(
        "--import-rows", type=int, default=None, help="rows to import (default 1,000 x duration)"
    )
    ap.add_argument("--import-chunk", type=int, default=10_000, help="rows per import request")
    ap.add_argument(
        "--redis-down-seconds", type=float, default=0, help="make Redis unreachable this long"
    )
    ap.add_argument("--settle-timeout", type=float, default=300, help="for processing at the end")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get(
            "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
        help="an existing database to administer from; the soak creates its own",
    )
    # Not the tests' Redis database (15) nor the other benchmarks' (12, 13, 14).
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    ap.add_argument(
        "--topology",
        choices=["all", "split"],
        default="all",
        help="all: one `stoplist serve`; split: --role api, intake and worker (docs/deployment.md)",
    )
    ap.add_argument("--env", action="append", default=[], help="extra NAME=value for the service")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "soak.json")
    ap.add_argument(
        "--keep", action="store_true", help="keep the database and the Redis keys to inspect"
    )
    args = ap.parse_args()
    if args.import_rows is None:
        args.import_rows = int(1000 * args.duration)
    if args.complaint_every == 1:
        ap.error("--complaint-every must be 0 (no complaints) or at least 2")
    return args


def start_topology(
    topology: str, env: dict[str, str], log_dir: Path, started: list[subprocess.Popen[bytes]]
) -> int:
    """Start the service as ``topology`` says (appending to ``started``); returns the port that
    takes the imports. ``all``: one ``stoplist serve``. ``split``: the default topology of
    docs/deployment.md, ``serve --role api`` (the checks, on ``STOPLIST_HTTP_PORT``), ``--role
    intake`` (the SMTP sink) and ``--role worker`` (the imports, on a port of its own)."""
    roles = {"all": ["all"], "split": ["api", "intake", "worker"]}[topology]
    import_port = int(env["STOPLIST_HTTP_PORT"])
    for role in roles:
        role_env = dict(env)
        if role == "worker":
            import_port = free_port()
            role_env["STOPLIST_HTTP_PORT"] = str(import_port)
        with (log_dir / f"{role}.log").open("wb") as out:
            started.append(
                subprocess.Popen(
                    [str(BIN / "stoplist"), "serve", "--no-migrate", "--role", role, *QUIET],
                    env=role_env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    for port in sorted({int(env["STOPLIST_HTTP_PORT"]), import_port}):
        wait_ready(f"http://127.0.0.1:{port}", lambda r: r.get("cache") == "ok", 300)
    # The intake role has no HTTP: wait until its sink listens (the load must not start while
    # a process is still starting).
    deadline = time.monotonic() + 300
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(env["STOPLIST_SMTP_PORT"])), 2).close()
            return import_port
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the SMTP sink did not listen within 300 s") from None
            time.sleep(0.2)


def main() -> None:
    args = parse_args()
    # A SIGTERM (a timeout, kill) unwinds like Ctrl-C, so the finally below stops the service and
    # drops the database instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    admin_url = args.pg_url.replace("postgresql+asyncpg://", "postgresql://")
    db_url = f"{admin_url.rsplit('/', 1)[0]}/{DB_NAME}"
    redis_prefix = f"soak{os.getpid()}:"
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    proxy: BaseProcess | None = None
    services: list[subprocess.Popen[bytes]] = []
    log_dir = Path(tempfile.mkdtemp(prefix="stoplist-soak-"))
    goals: list[tuple[bool, str]] = []
    try:
        asyncio.run(admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        asyncio.run(admin_sql(admin_url, f'CREATE DATABASE "{DB_NAME}"'))
        redis_url = args.redis_url
        if args.redis_down_seconds > 0:
            target = urlsplit(args.redis_url)
            proxy_port = free_port()
            proxy = ctx.Process(
                target=redis_proxy,
                args=(proxy_port, target.hostname or "127.0.0.1", target.port or 6379),
                name="soak-proxy",
            )
            proxy.start()
            redis_url = f"redis://127.0.0.1:{proxy_port}/{target.path.lstrip('/') or '0'}"
        http_port, smtp_port = free_port(), free_port()
        env = {
            **os.environ,
            "STOPLIST_DATABASE_URL": db_url.replace("postgresql://", "postgresql+asyncpg://"),
            "STOPLIST_REDIS_URL": redis_url,
            "STOPLIST_REDIS_PREFIX": redis_prefix,
            "STOPLIST_SMTP_ENABLED": "1",
            "STOPLIST_SMTP_PORT": str(smtp_port),
            "STOPLIST_SMTP_DOMAINS": DOMAINS,
            "STOPLIST_HTTP_PORT": str(http_port),
            "STOPLIST_BOOTSTRAP_ADMIN_KEY": KEY,
        }
        env.update(dict(kv.split("=", 1) for kv in args.env))
        subprocess.run(
            [str(BIN / "stoplist"), "migrate"], env=env, check=True, cwd=ROOT, capture_output=True
        )
        log(f"preloading {args.preload:,} suppressions with COPY")
        asyncio.run(load_rows(db_url, args.preload))
        import_port = start_topology(args.topology, env, log_dir, services)
        log(f"service ready ({args.topology}: pids {[p.pid for p in services]}, logs {log_dir})")

        start = time.monotonic() + 3  # the load processes need a moment to start
        plan = Plan(
            http_port=http_port,
            smtp_port=smtp_port,
            import_port=import_port,
            t0=start,
            w0=start + args.warmup,
            w1=start + args.warmup + args.duration,
            preload=args.preload,
            check_rate=args.check_rate,
            batch_rate=args.batch_rate,
            batch_size=args.batch_size,
            dsn_rate=args.dsn_rate,
            complaint_every=args.complaint_every,
            smtp_connections=args.smtp_connections,
            import_rows=args.import_rows,
            import_chunk=args.import_chunk,
        )
        chunks = math.ceil(plan.import_rows / plan.import_chunk)
        offered = (
            f"SMTP {plan.dsn_rate:.0f} DSNs/s + {plan.smtp_rate - plan.dsn_rate:.0f} ARF "
            f"reports/s over {plan.smtp_connections} connections; GET /v1/check "
            f"{plan.check_rate:.0f}/s + POST /v1/check {plan.batch_rate:.0f}/s x "
            f"{plan.batch_size}; import {plan.import_rows:,} rows in {chunks} requests of "
            f"{plan.import_chunk:,}; preload {plan.preload:,}"
        )
        log(f"offered: {offered}")
        log(f"warm-up {args.warmup:.0f} s, then {args.duration:.0f} s measured")
        got, timeline = asyncio.run(
            run_load(
                plan,
                ctx,
                procs,
                [p.pid for p in services],
                proxy.pid if proxy else None,
                args.redis_down_seconds,
            )
        )
        log("load finished; waiting for the intake to process everything")
        verdict = verify(plan, got, db_url, args.settle_timeout)
        goals = report(args, plan, offered, got, timeline, verdict)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
        for service in services:
            service.send_signal(signal.SIGINT)
        for service in services:
            try:
                service.wait(60)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        if proxy is not None:
            proxy.terminate()
            proxy.join(5)
        if args.keep:
            log(f"kept: database {DB_NAME}, Redis keys {redis_prefix}* in {args.redis_url}")
        else:
            asyncio.run(admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
            dropped = drop_keys(args.redis_url, redis_prefix)
            log(f"cleaned up: database {DB_NAME} dropped, {dropped:,} Redis keys deleted")
        problems = [
            line
            for service_log in sorted(log_dir.glob("*.log"))
            for line in service_log.read_text(errors="replace").splitlines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]
        print(f"service logs {log_dir}: {len(problems)} error lines")
        for line in problems[:5]:
            print(f"    {line[:200]}")
    if not goals or not all(ok for ok, _ in goals):
        sys.exit(1)


if __name__ == "__main__":
    main()
