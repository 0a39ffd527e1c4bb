"""Intake processing in a process of its own (``STOPLIST_INTAKE_PROCESS=separate``, PostgreSQL).

The service's process then only runs the SMTP dialogue, the group commits and the HTTP API; one
child process (``spawn``) runs the processing loop with its own engine, cache client and parse
workers, taking the stored rows with the sweep, so nothing is handed over in memory. The sink wakes
it through a pipe; it stops when the pipe closes (also when the service dies), releases its claims
on the way out, and is restarted when it dies. In detail: docs/architecture.md ("The intake
pipeline").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from app.container import Services, build_services, housekeeping
from app.db import DB_ERRORS
from app.intake import Intake, IntakeStore
from app.intake.parse_pool import PROCESSING_NICE, ParsingPool
from app.logs import configure_logging
from app.settings import Settings

log = logging.getLogger("app.intake_process")

_RESTART_MIN_S = 1.0
_RESTART_MAX_S = 30.0
_STOP_TIMEOUT_S = 15.0
# The child's own bound on stopping: shorter, so it releases its claims before the service
# (if still alive) gives up waiting and kills it.
_CHILD_STOP_TIMEOUT_S = 10.0


class ProcessorChild:
    """Starts, wakes, restarts and stops the processing child (in the service's process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: BaseProcess | None = None
        self.restarts = 0
        self._wake_fd: int | None = None
        self._writer: Connection | None = None
        self._wake_pending = False
        self._task: asyncio.Task[None] | None = None
        self._exited: asyncio.Event | None = None

    async def start(self) -> None:
        if self._task is None:
            self._spawn()
            self._task = asyncio.create_task(self._supervise(), name="intake-process-supervisor")

    def wake(self) -> None:
        """Ask the child to sweep (coalesced: one byte per loop iteration at most)."""
        if self._wake_pending or self._wake_fd is None:
            return
        self._wake_pending = True
        asyncio.get_running_loop().call_soon(self._write_wake)

    def _write_wake(self) -> None:
        self._wake_pending = False
        if self._wake_fd is None:
            return
        # A full pipe already holds a wake-up; a child that died is restarted by the supervisor.
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wake_fd, b"\x01")

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        proc = ctx.Process(
            target=child_main, args=(self.settings, reader, level), name="stoplist-intake"
        )
        proc.start()
        reader.close()  # the child holds the only reader; ours would hide its end of file
        os.set_blocking(writer.fileno(), False)
        self.process, self._writer, self._wake_fd = proc, writer, writer.fileno()
        log.info("intake processing runs in process %s", proc.pid)

    @staticmethod
    def _reap(proc: BaseProcess) -> None:
        """Kill what a dead child left behind in its process group (its parse workers)."""
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _close_pipe(self) -> None:
        writer, self._writer, self._wake_fd = self._writer, None, None
        if writer is not None:
            writer.close()

    async def _wait_exit(self, proc: BaseProcess) -> None:
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        loop.add_reader(proc.sentinel, exited.set)
        try:
            await exited.wait()
        finally:
            loop.remove_reader(proc.sentinel)
        await asyncio.to_thread(proc.join)

    async def _supervise(self) -> None:
        delay = _RESTART_MIN_S
        while True:
            proc = self.process
            assert proc is not None
            started = time.monotonic()
            await self._wait_exit(proc)
            self._close_pipe()
            self._reap(proc)
            if time.monotonic() - started > 60:
                delay = _RESTART_MIN_S
            log.error(
                "intake processing process %s exited (code %s); starting another in %.0f s",
                proc.pid,
                proc.exitcode,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)
            self.restarts += 1
            self._spawn()

    async def close(self) -> None:
        """Close the pipe (the child finishes what it is doing and exits), then wait for it;
        terminate, then kill, a child that does not stop in time."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close_pipe()
        proc, self.process = self.process, None
        if proc is None:
            return
        await asyncio.to_thread(proc.join, _STOP_TIMEOUT_S)
        if proc.is_alive():
            log.warning("intake processing process %s did not stop: terminating it", proc.pid)
            proc.terminate()
            await asyncio.to_thread(proc.join, 5.0)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join)
        self._reap(proc)


# ------------------------------------------------------------------------------------ the child


def child_main(settings: Settings, wake: Connection, log_level: int) -> None:
    """The child's entry point (``spawn``): run the processing loop until the pipe closes."""
    # A process group of its own, with its parse workers: if it is killed, the service kills
    # the workers it leaves behind (``_reap``).
    os.setpgid(0, 0)
    # Processing is background work: when the CPU is short, the pre-send check and the SMTP
    # acknowledgement (the service's own process) come first. Its parse workers inherit this.
    os.nice(PROCESSING_NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    configure_logging(log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the server
        asyncio.run(_child(settings, wake))
    else:
        uvloop.run(_child(settings, wake))


async def _child(settings: Settings, wake: Connection) -> None:
    from app.intake import Intake

    services = build_services(settings)
    intake = Intake(services)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    fd = wake.fileno()
    os.set_blocking(fd, False)

    def on_wake() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            intake.processor.wake()
        else:  # the service closed the pipe, or died
            loop.remove_reader(fd)
            stop.set()

    # This process writes suppressions too: when a write-through to Redis fails here, this
    # process must mark the replica cold and rebuild it once Redis is back (the service's own
    # housekeeping knows nothing of this process's failed writes).
    keeper = asyncio.create_task(housekeeping(services))
    try:
        await intake.processor.start()
        # What start-up built lives as long as the process: out of the cyclic GC's scans, as in
        # the service (``app.main``), so the full collections that processing's allocations
        # trigger do not walk every imported module again.
        gc.freeze()
        loop.add_reader(fd, on_wake)
        await stop.wait()
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        # Bounded: the service may be gone (``kill -9``), and nothing else would ever stop a
        # child whose processing does not end when cancelled (a task that swallowed the
        # cancellation and waits on a queue no one fills).
        closing = asyncio.ensure_future(intake.close())
        await asyncio.wait({closing}, timeout=_CHILD_STOP_TIMEOUT_S)
        await release_claims(intake.store, timeout_s=settings.database_timeout_s)
        if not closing.done():
            log.error(
                "intake processing did not stop within %.0f s: killing it and its parse workers",
                _CHILD_STOP_TIMEOUT_S,
            )
            os.killpg(os.getpgrp(), signal.SIGKILL)
        closing.result()
        await services.suppressions.wait_rebuild()
        await services.keys.close()
        await services.cache.close()
        await services.db.dispose()


async def release_claims(store: IntakeStore, *, timeout_s: float) -> int:
    """Hand back the rows this processor still holds (its processing has stopped): they become
    claimable at once. Safe if one of them was applied but not finished: applying a message again
    writes nothing twice (``app.feedback``). Best effort: if the database is away, the claims expire
    by themselves after ``intake_claim_timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            released = await store.release_claims()
    except (TimeoutError, *DB_ERRORS) as exc:
        log.warning("intake: could not release claims on the way out (%s); they expire", exc)
        return 0
    if released:
        log.info("intake: released %d claimed messages on the way out", released)
    return released


def open_intake(
    services: Services, *, pool: ParsingPool | None = None, separate: bool | None = None
) -> Intake:
    """The intake the settings describe: processing in a child process of its own when
    ``intake_process = "separate"`` on PostgreSQL (SQLite has one writer per process file lock and
    the embedded mode is a single process), on this loop otherwise."""
    if separate is None:
        separate = services.settings.intake_process == "separate"
    child = None
    if separate and services.db.dialect == "postgresql":
        child = ProcessorChild(services.settings)
    return Intake(services, pool=pool, child=child)
