"""Outbound webhooks under load: suppression changes → signed events at a loopback receiver.

    .venv/bin/python bench/webhooks.py [--changes 100000] [--rate 1000] [--batch 10]
        [--slow-changes 10000] [--slow-rate 200] [--writers 16] [--slowdown-changes 2000]
        [--drain-changes 20000] [--worker LABEL=PATH|serve ...] [--rounds 1] [--pg-url URL]
        [--json]

On a fresh PostgreSQL database (created and dropped; the in-process cache, so Redis plays no part)
with one delivery worker (``stoplist deliver``, a process of its own) and a receiver (a plain
asyncio HTTP server in a process of its own, answering 200 at once):

1. **writer slowdown**, same run, phases interleaved (A B C… A B C…, medians): single-row
   changes through ``SuppressionService.suppress`` (what ``PUT /v1/suppressions/{address}``
   runs: one transaction per change) by ``--writers`` concurrent tasks, as fast as they go —
   *no outbox* (no outbound event made: the floor), *outbox, no subscription*, and, for
   each ``--worker``, *outbox + a subscription being delivered to* (that worker and the
   receiver busy beside the writer; the rows of the earlier phases are sequenced before the
   subscription exists, so it delivers this phase's changes only; the worker's CPU per event
   is reported), ``--slowdown-rounds`` rounds;
2. **drain**: ``--drain-changes`` written with the worker stopped, then the worker started: events
   per second it delivers from a backlog;
3. **lag**: ``--changes`` changes paced at ``--rate`` per second (``--batch`` per transaction,
   as the intake groups messages), then ``--slow-changes`` at ``--slow-rate``, with the worker
   running: the lag from each change's own timestamp (taken just before its transaction) to its
   event's receipt, p50 / p99 / max, and events per second delivered; every change must arrive
   (missing and duplicate ids are counted). Per event, the stages from the commit (the
   writer's return): *sequenced* (the delivery row's ``created_at``: the start of the worker's
   round that sequenced it), *claimed* (the start of the round that claimed it, from its lease),
   *received* (the receiver's clock: the request was written and read), *recorded* (the round
   that recorded the 200, ``finished_at``) — p50 / p99 of each step; and the worker's CPU time
   per event (user + system of the ``deliver`` process, from after its start to the last
   receipt; not separable for ``serve``).

A/B: ``--worker LABEL=PATH`` (repeatable) names the ``stoplist`` executable whose ``deliver`` is
the worker (another checkout's, e.g. ``--worker main=../main/.venv/bin/stoplist --worker
new=.venv/bin/stoplist``), or ``LABEL=serve`` for a worker inside this process beside the writer
(as in ``stoplist serve``: woken by the writer's commits); the drain and lag phases then run for
each worker in turn, ``--rounds`` times (A B A B), on the same database and receiver; the
writer-slowdown phase runs its subscribed phase once per worker in each of its rounds.

Figures go to docs/benchmarks.md (with the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
DB_NAME = "stoplist_bench_webhooks"

from app.container import build_services  # noqa: E402
from app.models import utcnow  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.suppression import SuppressRequest  # noqa: E402
from app.webhooks.service import WebhookService  # noqa: E402
from app.webhooks.worker import DeliveryWorker  # noqa: E402
from bench.outbox_cost import without_outbox  # noqa: E402
from bench.scratch_db import create_scratch_database, drop_scratch_database  # noqa: E402

# --------------------------------------------------------------------------------- receiver


def _receiver_main(port: int, conn: Connection) -> None:
    """Answer 200 to every POST; on request, send back (address, webhook-id, arrival, the
    change's own time) of each."""
    got: list[tuple[str, str, float, float]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, msg_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        msg_id = value.strip().decode()
                body = await reader.readexactly(length)
                now = time.time()
                data = orjson.loads(body)["data"]
                at = datetime.fromisoformat(data["at"].replace("Z", "+00:00")).timestamp()
                got.append((data.get("address") or "", msg_id, now, at))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the receiver is stopping
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=512)
        loop = asyncio.get_running_loop()
        async with server:
            while True:
                ask = await loop.run_in_executor(None, conn.recv)
                if ask == "stop":
                    return
                conn.send(got[:])
                got.clear()

    asyncio.run(main())


class Receiver:
    def __init__(self) -> None:
        self.port = _free_port()
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(
            target=_receiver_main, args=(self.port, child), daemon=True
        )
        self.proc.start()

    def take(self) -> list[tuple[str, str, float, float]]:
        """Everything received since the last call."""
        self.conn.send("take")
        got: list[tuple[str, str, float, float]] = self.conn.recv()
        return got

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------- writer


async def write_changes(
    services: Any, prefix: str, n: int, writers: int, rate: float | None, batch: int = 1
) -> tuple[float, dict[str, float]]:
    """``n`` changes by ``writers`` tasks, ``batch`` per transaction (1: what ``PUT
    /v1/suppressions/{address}`` does; more: what the intake's group of messages does), paced
    at ``rate`` changes/s when given; the elapsed time and each address's commit time."""
    committed: dict[str, float] = {}
    sup = services.suppressions
    start = time.perf_counter()
    wall0 = time.time()
    next_index = 0

    async def one_writer() -> None:
        nonlocal next_index
        while next_index < n:
            first = next_index
            next_index = min(n, first + batch)
            if rate is not None:
                delay = wall0 + first / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            addresses = [f"{prefix}{i}@example.com" for i in range(first, next_index)]
            reqs = [SuppressRequest(a, "hard", "user_unknown", "api") for a in addresses]
            if batch == 1:
                await sup.suppress(reqs[0])
                committed[addresses[0]] = time.time()
                continue
            async with services.db.write(addresses) as s:
                await sup.write_suppressions(s, reqs, utcnow())
            now = time.time()  # committed
            committed.update((a, now) for a in addresses)
            await sup.refresh_cache(addresses)

    await asyncio.gather(*(one_writer() for _ in range(writers)))
    return time.perf_counter() - start, committed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """One delivery worker under test: ``stoplist deliver`` from a given installation (its own
    process), or ``serve``: a ``DeliveryWorker`` in this process, on the writer's loop, as in
    ``stoplist serve`` (woken by the writer's commits)."""

    def __init__(self, spec: str) -> None:
        self.label, _, where = spec.partition("=")
        self.where = where or self.label
        self.proc: subprocess.Popen[bytes] | None = None
        self.inproc: Any = None

    async def start(self, services: Any, url: str, log: Path) -> None:
        if self.where == "serve":
            from app.webhooks.worker import DeliveryWorker

            self.inproc = DeliveryWorker(
                services.db, WebhookService(services.db, services.settings)
            )
            self.inproc.start()
            return
        env = {
            **os.environ,
            "STOPLIST_DATABASE_URL": url,
            "STOPLIST_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.where, "deliver"], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def cpu(self) -> float | None:
        """The worker process's CPU seconds so far (None: in this process, not separable)."""
        return cpu_seconds(self.proc.pid) if self.proc is not None else None

    async def stop(self) -> None:
        if self.inproc is not None:
            await self.inproc.stop()
            self.inproc = None
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 30)
            self.proc = None


async def wait_received(receiver: Receiver, want: set[str], timeout: float) -> dict[str, Any]:
    """Collect receipts until every address of ``want`` arrived (or ``timeout``)."""
    arrived: dict[str, float] = {}
    lags: dict[str, float] = {}
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    while want - arrived.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        for address, msg_id, at, changed_at in receiver.take():
            ids.append(msg_id)
            arrived.setdefault(address, at)
            lags.setdefault(address, at - changed_at)
    return {
        "arrived": arrived,
        "lags": lags,
        "missing": len(want - arrived.keys()),
        "duplicates": len(ids) - len(set(ids)),
    }


# --------------------------------------------------------------------------------- phases


async def slowdown(
    args: argparse.Namespace,
    services: Any,
    hooks: WebhookService,
    url: str,
    receiver: Receiver,
    log: Path,
    workers: list[Worker],
) -> dict[str, Any]:
    phases = ["no_outbox", "outbox"] + [f"subscribed_{w.label}" for w in workers]
    rates: dict[str, list[float]] = {k: [] for k in phases}
    cpu: dict[str, list[float]] = {w.label: [] for w in workers}
    n = args.slowdown_changes
    for round_ in range(args.slowdown_rounds):
        with without_outbox():
            elapsed, _ = await write_changes(services, f"floor{round_}-", n, args.writers, None)
        rates["no_outbox"].append(n / elapsed)
        elapsed, _ = await write_changes(services, f"plain{round_}-", n, args.writers, None)
        rates["outbox"].append(n / elapsed)
        for w in workers:
            # The rows written so far get their positions while no subscription wants them:
            # the subscribed phase delivers its own changes only.
            while await DeliveryWorker(services.db, hooks).sequence():
                pass
            sub, _ = await hooks.create(receiver_url(receiver), None, None, "bench")
            await w.start(services, url, log)
            try:
                await asyncio.sleep(1)  # the worker is up (its start is not the writer's cost)
                before = w.cpu()
                elapsed, done = await write_changes(
                    services, f"sub{round_}{w.label}-", n, args.writers, None
                )
                rates[f"subscribed_{w.label}"].append(n / elapsed)
                await wait_received(receiver, set(done), 300)
                after = w.cpu()
                if before is not None and after is not None:
                    cpu[w.label].append(1000 * (after - before) / n)
            finally:
                await w.stop()
                await hooks.delete(sub["id"])
        print(
            "slowdown round",
            round_,
            {k: round(v[-1]) for k, v in rates.items()},
            file=sys.stderr,
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "changes_per_phase": n,
        "writes_per_s": {k: round(v) for k, v in med.items()},
        "vs_floor_pct": {k: round(100 * (med[k] / med["no_outbox"] - 1), 1) for k in phases[1:]},
        "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
        "worker_cpu_ms_per_event": {k: [round(x, 3) for x in v] for k, v in cpu.items() if v},
    }


def receiver_url(receiver: Receiver) -> str:
    return f"http://127.0.0.1:{receiver.port}/hooks"


async def drain(
    args: argparse.Namespace,
    services: Any,
    hooks: WebhookService,
    url: str,
    receiver: Receiver,
    log: Path,
    worker: Worker,
    round_: int,
) -> dict[str, Any]:
    sub, _ = await hooks.create(receiver_url(receiver), None, None, "bench")
    prefix = f"drain{round_}{worker.label}-"
    _, done = await write_changes(services, prefix, args.drain_changes, args.writers, None)
    started = time.time()
    await worker.start(services, url, log)
    try:
        got = await wait_received(receiver, set(done), 600)
    finally:
        await worker.stop()
        await hooks.delete(sub["id"])
    last = max(got["arrived"].values(), default=started)
    return {
        "changes": args.drain_changes,
        "events_per_s": round(len(got["arrived"]) / max(last - started, 1e-9)),
        "missing": got["missing"],
        "duplicates": got["duplicates"],
    }


async def lag(
    services: Any,
    hooks: WebhookService,
    url: str,
    receiver: Receiver,
    log: Path,
    worker: Worker,
    *,
    prefix: str,
    changes: int,
    rate: float,
    writers: int,
    batch: int,
) -> dict[str, Any]:
    sub, _ = await hooks.create(receiver_url(receiver), None, None, "bench")
    await worker.start(services, url, log)
    try:
        await asyncio.sleep(2)  # the worker is up
        receiver.take()
        cpu0 = worker.cpu()
        elapsed, done = await write_changes(services, prefix, changes, writers, rate, batch)
        got = await wait_received(receiver, set(done), 900)
        cpu1 = worker.cpu()
        steps = await stages(services, sub["id"], done, got["arrived"])
    finally:
        await worker.stop()
        await hooks.delete(sub["id"])
    # From the change's own timestamp (taken just before its transaction: the figure includes
    # the transaction) to the receipt; both clocks are this machine's.
    lags = sorted(got["lags"][a] for a in done if a in got["lags"])
    first, last = min(done.values()), max(got["arrived"].values())
    return {
        "changes": changes,
        "batch": batch,
        "target_rate": rate,
        "achieved_write_rate": round(changes / elapsed),
        "events_per_s": round(len(lags) / max(last - first, 1e-9)),
        "lag_p50_s": round(lags[len(lags) // 2], 3),
        "lag_p99_s": round(lags[int(len(lags) * 0.99)], 3),
        "lag_max_s": round(lags[-1], 3),
        "stages_p50_p99_s": steps,
        "worker_cpu_ms_per_event": (
            round(1000 * (cpu1 - cpu0) / max(len(lags), 1), 3)
            if cpu0 is not None and cpu1 is not None
            else None
        ),
        "missing": got["missing"],
        "duplicates": got["duplicates"],
    }


async def stages(
    services: Any, sub_id: int, committed: dict[str, float], arrived: dict[str, float]
) -> dict[str, list[float]]:
    """p50 and p99 of each step of an event's way: commit → sequenced → claimed → received →
    recorded (seconds; from the delivery rows of subscription ``sub_id``, one per address)."""
    from sqlalchemy import select

    from app.models import WebhookDelivery as D

    # The claim leases a delivery for 2 x timeout + 30 s from the start of its round.
    lease = 2 * services.settings.webhook_timeout_s + 30
    async with services.db.read() as s:
        q = select(D.order_key, D.created_at, D.next_attempt_at, D.finished_at).where(
            D.subscription_id == sub_id, D.state == "sent"
        )
        rows = (await s.execute(q)).all()
    steps: dict[str, list[float]] = {
        "commit_to_sequenced": [],
        "sequenced_to_claimed": [],
        "claimed_to_received": [],
        "received_to_recorded": [],
    }
    for address, sequenced, leased, finished in rows:
        if address not in committed or address not in arrived:
            continue
        claimed = leased.timestamp() - lease
        steps["commit_to_sequenced"].append(sequenced.timestamp() - committed[address])
        steps["sequenced_to_claimed"].append(claimed - sequenced.timestamp())
        steps["claimed_to_received"].append(arrived[address] - claimed)
        steps["received_to_recorded"].append(finished.timestamp() - arrived[address])
    out = {}
    for name, values in steps.items():
        values.sort()
        out[name] = (
            [round(values[len(values) // 2], 3), round(values[int(len(values) * 0.99)], 3)]
            if values
            else []
        )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = await create_scratch_database(args.pg_url, DB_NAME)
    settings = Settings(database_url=url, redis_url=None, webhook_allowed_networks=["127.0.0.0/8"])
    services = build_services(settings)
    await services.suppressions.rebuild_cache()
    hooks = WebhookService(services.db, settings)
    receiver = Receiver()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-webhooks-deliver.log"
    workers = [Worker(spec) for spec in args.worker or [f"this={BIN / 'stoplist'}"]]
    result: dict[str, Any] = {"cpus": os.cpu_count(), "workers": [w.label for w in workers]}
    try:
        if args.slowdown_changes:
            result["slowdown"] = await slowdown(args, services, hooks, url, receiver, log, workers)
        drains: dict[str, list[dict[str, Any]]] = {w.label: [] for w in workers}
        lags: dict[str, list[list[dict[str, Any]]]] = {w.label: [] for w in workers}
        # Rounds interleave the workers (A B A B ...): the machine's load hits them alike.
        for round_ in range(args.rounds):
            for w in workers:
                if args.drain_changes:
                    drains[w.label].append(
                        await drain(args, services, hooks, url, receiver, log, w, round_)
                    )
                    print(w.label, "drain", drains[w.label][-1], file=sys.stderr, flush=True)
                phases = ((args.changes, args.rate), (args.slow_changes, args.slow_rate))
                lags[w.label].append(
                    [
                        await lag(
                            services,
                            hooks,
                            url,
                            receiver,
                            log,
                            w,
                            prefix=f"lag{round_}{w.label}{int(r)}-",
                            changes=n,
                            rate=r,
                            writers=args.writers,
                            batch=args.batch,
                        )
                        for n, r in phases
                        if n
                    ]
                )
                print(w.label, "lag", lags[w.label][-1], file=sys.stderr, flush=True)
        result["drain"] = drains
        result["lag"] = lags
    finally:
        receiver.stop()
        await services.db.dispose()
        await drop_scratch_database(args.pg_url, DB_NAME)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=10, help="changes per transaction (lag)")
    parser.add_argument("--slow-changes", type=int, default=10_000)
    parser.add_argument("--slow-rate", type=float, default=200.0)
    parser.add_argument("--slowdown-changes", type=int, default=2000)
    parser.add_argument(
        "--slowdown-rounds", type=int, default=2, help="rounds of the writer-slowdown phases"
    )
    parser.add_argument("--drain-changes", type=int, default=20_000)
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--worker",
        action="append",
        help="LABEL=PATH of a `stoplist` executable (its `deliver` is run), or LABEL=serve: the"
        " worker in this process beside the writer, as in `stoplist serve`; repeat for A/B"
        " (default: this checkout's `stoplist deliver`); 0 changes skips a phase",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the drain and lag phases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
