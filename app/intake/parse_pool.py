"""Bounded parse workers: ``dsn.analysis.analyse_message`` in separate processes.

Bounce mail comes from strangers, so parsing one must never stall the event loop that answers SMTP
and HTTP, nor exhaust the service's memory:

* each worker caps its own address space (``RLIMIT_AS``: its size after start-up plus
  ``parse_memory_mb``), so a decompression-style bomb ends in ``MemoryError`` inside the worker;
* each parse runs under an interval timer in the worker (``parse_timeout_s``), which interrupts
  Python code; a parse stuck inside C code is caught by a wall timeout in the parent, which kills
  the workers and starts a fresh pool;
* a worker that dies (killed, out of memory at the C level) breaks the pool: the pool is recreated
  and the messages that were in flight are reported as retryable, so an innocent message that
  shared the pool with a crashing one is parsed again and the culprit fails after a few attempts.

Workers are started with ``spawn``: forking a process that runs an event loop and database pools
is unsafe, and a fresh interpreter keeps the address-space cap meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import FrameType
from typing import Final

from dsn.analysis import analyse_message
from dsn.model import DEFAULT_OPTIONS, AnalysisOptions, MessageAnalysis

log = logging.getLogger("app.parsing_pool")


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    """One parse: an analysis, or a final ``error`` for this message, or ``retry`` (the pool died
    under it, which says nothing about the message itself)."""

    analysis: MessageAnalysis | None = None
    error: str | None = None
    retry: bool = False
    seconds: float = 0.0


class _ParseTimeout(Exception):
    pass


def _vm_size_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# A small RFC 3464 bounce: parsing it loads and compiles what a real message needs (the
# delivery-status parser and the classification rules, ~0.5 s), which a message that is not a
# bounce never reaches.
_WARM_UP: Final = (
    b"From: MAILER-DAEMON@example.com\r\nTo: b@example.net\r\nSubject: Undelivered Mail\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="w"'
    b"\r\n\r\n--w\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--w\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.com\r\n\r\n"
    b"Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--w--\r\n"
)


def _exit_with_parent(parent: int) -> None:
    """A worker whose service was SIGKILLed would wait on its call queue forever (it holds the
    queue's write end too, so it never reads end of file): leave once the parent is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


# How much lower than the service the processing runs (parse workers; the intake child): when the
# CPU is short, the pre-send check and the SMTP acknowledgement come first.
PROCESSING_NICE: Final = 10


_START_FAILED: Final = "parse workers failed to start"


def _worker_init(memory_mb: int) -> None:
    """Runs once in each worker: load the parser, then cap the address space."""
    if os.nice(0) < PROCESSING_NICE:  # not already below the service (the intake child's workers)
        os.nice(PROCESSING_NICE - os.nice(0))
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="exit-with-parent", daemon=True
    ).start()
    # Warm the rule set and parsers so the first real message is not charged for them: its
    # parse timeout would be spent on loading them (a restarted pool's first message, say).
    with contextlib.suppress(Exception):
        analyse_message(_WARM_UP)
    gc.freeze()  # the loaded parsers and rules: out of the cyclic GC's scans for good
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        import resource
    except ImportError:  # not POSIX: no cap, the wall timeout still applies
        return
    base = _vm_size_bytes()
    if base is None:
        return
    limit = base + memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _ParseTimeout


ParseFn = Callable[..., MessageAnalysis]  # analyse_message(raw, options=..., envelope_rcpt=...)


def _worker_parse(
    parse_fn: ParseFn,
    raw: bytes,
    envelope_rcpt: str | None,
    options: AnalysisOptions,
    timeout_s: float,
) -> tuple[MessageAnalysis | None, str | None]:
    """Runs in a worker: returns (analysis, None) or (None, reason)."""
    from dsn.errors import ParseError

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return parse_fn(raw, options=options, envelope_rcpt=envelope_rcpt), None
    except _ParseTimeout:
        return None, f"parse timeout after {timeout_s:g} s"
    except MemoryError:
        return None, "parse memory limit exceeded"
    except RecursionError:
        return None, "message nested too deeply"
    except ParseError as exc:
        return None, f"unreadable: {exc}"
    except Exception as exc:  # a parser bug: keep the worker, report the message
        return None, f"parser error: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _worker_parse_many(
    parse_fn: ParseFn,
    items: list[tuple[bytes, str | None]],
    options: AnalysisOptions,
    timeout_s: float,
) -> list[tuple[MessageAnalysis | None, str | None, float]]:
    """Runs in a worker: several messages, each under its own timer, in one task."""
    out = []
    for raw, envelope_rcpt in items:
        started = time.perf_counter()
        analysis, error = _worker_parse(parse_fn, raw, envelope_rcpt, options, timeout_s)
        out.append((analysis, error, time.perf_counter() - started))
    return out


def inline_parse(
    raw: bytes,
    envelope_rcpt: str | None,
    options: AnalysisOptions = DEFAULT_OPTIONS,
    parse_fn: ParseFn = analyse_message,
) -> ParseOutcome:
    """Parse in this process (no isolation): for small messages when so configured, and tools."""
    from dsn.errors import ParseError

    started = time.perf_counter()
    try:
        analysis = parse_fn(raw, options=options, envelope_rcpt=envelope_rcpt)
    except RecursionError:
        return ParseOutcome(error="message nested too deeply")
    except MemoryError:
        return ParseOutcome(error="parse memory limit exceeded")
    except ParseError as exc:
        return ParseOutcome(error=f"unreadable: {exc}")
    except Exception as exc:
        # A parser bug fails this message, as in a worker: raised, it would take the intake's
        # whole batch down with it, and that batch would be claimed again and again.
        log.exception("parser error on a %d-byte message", len(raw))
        return ParseOutcome(error=f"parser error: {type(exc).__name__}: {str(exc)[:200]}")
    return ParseOutcome(analysis=analysis, seconds=time.perf_counter() - started)


def worker_processes(executor: ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """The executor's live worker processes. ProcessPoolExecutor has no public way to stop a busy
    worker; its private ``_processes`` (a dict by pid, CPython 3.11+) is read here only, and
    tests/app/test_library_internals.py checks it on a real pool."""
    processes = getattr(executor, "_processes", None)
    if not isinstance(processes, dict):
        raise RuntimeError("ProcessPoolExecutor keeps its workers elsewhere: see worker_processes")
    return list(processes.values())


class ParsingPool:
    """A process pool for ``analyse_message`` with the bounds described in the module docstring."""

    def __init__(
        self,
        *,
        workers: int = 0,
        timeout_s: float = 10.0,
        memory_mb: int = 512,
        inline_max_bytes: int = 0,
        options: AnalysisOptions = DEFAULT_OPTIONS,
        parse_fn: ParseFn = analyse_message,
        backstop_grace_s: float = 5.0,
    ) -> None:
        """``parse_fn`` must be importable by name in a fresh interpreter (workers are spawned)."""
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.inline_max_bytes = inline_max_bytes
        self.options = options
        self.parse_fn = parse_fn
        self.backstop_s = timeout_s * 2 + backstop_grace_s
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        self._ready_generation = -1
        self._warming: tuple[int, asyncio.Future[list[int]]] | None = None
        # Two in flight per worker keeps workers busy across the IPC round trip while bounding
        # how long a task can wait behind others (the backstop below allows for one).
        self._slots = asyncio.Semaphore(self.workers * 2)
        self.restarts = 0
        self.parsed = 0
        self.parse_seconds = 0.0

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.memory_mb,),
        )

    async def start(self) -> None:
        """Start the workers now (instead of on the first message) and wait until they are up."""
        await self._ready()

    async def _ready(self) -> tuple[ProcessPoolExecutor, int]:
        """The current pool once its workers are up: a parse's timeout must not be spent on
        starting interpreters (after a restart, say)."""
        if self._executor is None:
            self._executor = self._new_executor()
        executor, generation = self._executor, self._generation
        if self._ready_generation != generation:
            if self._warming is None or self._warming[0] != generation:
                loop = asyncio.get_running_loop()
                warm = asyncio.gather(
                    *(loop.run_in_executor(executor, os.getpid) for _ in range(self.workers))
                )
                self._warming = (generation, warm)
            await asyncio.shield(self._warming[1])
            self._ready_generation = generation
        return executor, generation

    async def _ready_or_restart(self) -> tuple[ProcessPoolExecutor, int] | None:
        """The running pool, or None after restarting one whose workers failed to start."""
        try:
            return await self._ready()
        except BrokenProcessPool:
            log.error("parse workers failed to start: restarting the pool")
            self._restart(self._generation, kill=False)
            return None

    async def parse(self, raw: bytes, envelope_rcpt: str | None = None) -> ParseOutcome:
        if len(raw) <= self.inline_max_bytes:
            outcome = inline_parse(raw, envelope_rcpt, self.options, self.parse_fn)
            self._count(outcome)
            return outcome
        async with self._slots:
            ready = await self._ready_or_restart()
            if ready is None:
                return ParseOutcome(retry=True, error=_START_FAILED)
            executor, generation = ready
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            future = loop.run_in_executor(
                executor,
                _worker_parse,
                self.parse_fn,
                raw,
                envelope_rcpt,
                self.options,
                self.timeout_s,
            )
            try:
                analysis, error = await asyncio.wait_for(future, timeout=self.backstop_s)
            except TimeoutError:
                log.error("parse worker stuck past %.1f s: restarting the pool", self.timeout_s)
                self._restart(generation, kill=True)
                return ParseOutcome(error=f"parse timeout after {self.timeout_s:g} s (killed)")
            except BrokenProcessPool:
                log.warning("parse pool broke (a worker died): restarting it")
                self._restart(generation, kill=False)
                return ParseOutcome(retry=True, error="parse worker died")
            except Exception as exc:
                # Raised around the parse, not in it (the result could not be sent back, say):
                # this message fails alone instead of taking the intake's batch down.
                log.exception("parse worker failed outside the parse")
                return ParseOutcome(error=f"parse worker error: {type(exc).__name__}")
            outcome = ParseOutcome(
                analysis=analysis, error=error, seconds=time.perf_counter() - started
            )
            self._count(outcome)
            return outcome

    async def parse_many(
        self, items: Sequence[tuple[bytes, str | None]], *, chunk: int = 16
    ) -> list[ParseOutcome]:
        """Several messages, up to ``chunk`` per worker task: one round trip to a worker instead
        of one per message. Each message keeps its own timer in the worker; if a chunk's worker
        dies or is stuck past the backstop, every message of that chunk comes back retryable, so
        callers parse retried messages one at a time (``parse``), which isolates the culprit."""
        out: list[ParseOutcome | None] = [None] * len(items)
        pooled: list[int] = []
        for i, (raw, rcpt) in enumerate(items):
            if len(raw) <= self.inline_max_bytes:
                out[i] = inline_parse(raw, rcpt, self.options, self.parse_fn)
                self._count(out[i])  # type: ignore[arg-type]
            else:
                pooled.append(i)
        groups = [pooled[k : k + chunk] for k in range(0, len(pooled), chunk)]
        done = await asyncio.gather(*(self._parse_chunk([items[i] for i in g]) for g in groups))
        for group, outcomes in zip(groups, done, strict=True):
            for i, outcome in zip(group, outcomes, strict=True):
                out[i] = outcome
        return [o for o in out if o is not None]

    async def _parse_chunk(self, items: list[tuple[bytes, str | None]]) -> list[ParseOutcome]:
        async with self._slots:
            ready = await self._ready_or_restart()
            if ready is None:
                return [ParseOutcome(retry=True, error=_START_FAILED)] * len(items)
            executor, generation = ready
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                executor, _worker_parse_many, self.parse_fn, items, self.options, self.timeout_s
            )
            try:
                results = await asyncio.wait_for(
                    future, timeout=self.timeout_s * len(items) + self.backstop_s
                )
            except TimeoutError:
                log.error("parse worker stuck in a batch of %d: restarting the pool", len(items))
                self._restart(generation, kill=True)
                return [ParseOutcome(retry=True, error="parse worker stuck (killed)")] * len(items)
            except BrokenProcessPool:
                log.warning("parse pool broke (a worker died): restarting it")
                self._restart(generation, kill=False)
                return [ParseOutcome(retry=True, error="parse worker died")] * len(items)
            except Exception as exc:
                # As in ``parse``; retryable, so each message is then parsed alone and only the
                # one at fault fails.
                log.exception("parse worker failed outside the parse (a batch of %d)", len(items))
                error = f"parse worker error: {type(exc).__name__}"
                return [ParseOutcome(retry=True, error=error)] * len(items)
        outcomes = [ParseOutcome(analysis=a, error=e, seconds=t) for a, e, t in results]
        for outcome in outcomes:
            self._count(outcome)
        return outcomes

    def _count(self, outcome: ParseOutcome) -> None:
        self.parsed += 1
        self.parse_seconds += outcome.seconds

    def _restart(self, generation: int, *, kill: bool) -> None:
        # Several in-flight parses see the same broken pool; only the first replaces it.
        if generation != self._generation or self._executor is None:
            return
        old = self._executor
        self._generation += 1
        self.restarts += 1
        self._executor = self._new_executor()
        if kill:
            for proc in worker_processes(old):
                with contextlib.suppress(Exception):
                    proc.kill()
        old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            for proc in worker_processes(executor):
                with contextlib.suppress(Exception):
                    proc.terminate()
            executor.shutdown(wait=True, cancel_futures=True)
