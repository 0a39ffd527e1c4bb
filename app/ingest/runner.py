"""The ingest loop: batches of lines -> events -> the event sink (one commit) -> the saved offset.

Up to ``PARSE_AHEAD`` batches are decoded, and prepared by the sink (``EventSink.prepare``: its
work that needs no database), while the one before them is being committed (the database works
while this process parses; the decoding pauses every ``FEED_LINES`` lines, the preparing every
few hundred events, so the commit's statements go on meanwhile); offsets are saved in order, each
in its batch's transaction (deliveries are counted, not stored, so the offset is what makes a
batch count once). When storage is down the batch is retried with backoff, forever: the offset
never moves past uncommitted lines, and the outage is logged once (and its end once). What the
sink leaves running after a commit (``EventSink.settle``: the cache's refresh) is waited for
before the loop ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import DB_ERRORS
from app.ingest.decoders import Decoder
from app.ingest.offsets import OffsetStore
from app.ingest.pipeline import DecoderProcess
from app.ingest.progress import Progress, Totals
from app.ingest.sink import CommitHook, EventSink
from app.ingest.source import LineBatch, OpenedFile, Position
from events import Batch

log = logging.getLogger("app.ingest")
T = TypeVar("T")

RETRY_FIRST_S: Final = 0.2
RETRY_MAX_S: Final = 30.0
# Batches handed to the decoder process ahead of the one being committed (memory: lines of each).
PIPE_DEPTH: Final = 4
# Batches parsed in-process ahead of the one being committed, and lines parsed between two looks
# at the commit's statements.
PARSE_AHEAD: Final = 2
FEED_LINES: Final = 500
# How long a stop waits for the batch whose transaction is in flight: a commit takes
# milliseconds, a retry against a database that is down does not.
STOP_GRACE_S: Final = 5.0


class Reader(Protocol):
    def batches(self) -> AsyncIterator[LineBatch]: ...


class Ingestor:
    """Reads one log through ``decoder`` into ``sink``, saving offsets in ``offsets`` (files)."""

    def __init__(
        self,
        decoder: Decoder,
        sink: EventSink,
        offsets: OffsetStore | None,
        progress: Progress,
        *,
        retry_max_s: float = RETRY_MAX_S,
        process: DecoderProcess | None = None,
    ) -> None:
        self.decoder = decoder
        self.process = process
        self.sink = sink
        self.offsets = offsets
        self.progress = progress
        self.retry_max_s = retry_max_s
        self.totals = Totals()
        self._down_since: float | None = None

    async def run(self, reader: Reader) -> Totals:
        """Until the reader ends (a file read, a pipe closed) or the task is cancelled."""
        if self.process is not None:
            return await self._run_piped(reader, self.process)
        queue: asyncio.Queue[tuple[Batch, LineBatch, Position, Any] | None] = asyncio.Queue()
        room = asyncio.Semaphore(PARSE_AHEAD)

        async def produce() -> None:
            current: OpenedFile | None = None
            try:
                async for lines in reader.batches():
                    await room.acquire()
                    if lines.file is not current:
                        current = lines.file
                        self.decoder.context = current.start.context
                    batch = Batch()
                    await self._feed(lines, batch)
                    end = Position(lines.end.offset, lines.end.line, self.decoder.context)
                    prepared = await self.sink.prepare(batch, count_deliveries=True)
                    queue.put_nowait((batch, lines, end, prepared))
            finally:
                queue.put_nowait(None)  # unbounded (``room`` bounds it): never blocks

        producer = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not None:
                room.release()
                await self._commit(*item)
            await producer  # the reader's error, if it stopped on one
            await self.sink.settle()
        finally:
            if not producer.done():
                producer.cancel()
            await self._settle_on_stop()
        return self.totals

    async def _feed(self, lines: LineBatch, batch: Batch) -> None:
        """Decode ``lines`` into ``batch`` a slice at a time, letting the commit in flight read
        its answers and send its next statement in between (parsing holds the event loop)."""
        feed = self.decoder.feed
        text = lines.lines
        for start in range(0, len(text), FEED_LINES):
            if start:
                await asyncio.sleep(0)
            feed(text[start : start + FEED_LINES], lines.first_line + start, batch)

    async def _run_piped(self, reader: Reader, process: DecoderProcess) -> Totals:
        """``run`` with the decoder in ``process``: up to ``PIPE_DEPTH`` batches are being
        decoded there while this process commits the one before (in order, as in-process)."""
        queue: asyncio.Queue[tuple[LineBatch, asyncio.Future[tuple[Batch, str | None]]] | None]
        queue = asyncio.Queue()
        room = asyncio.Semaphore(PIPE_DEPTH)

        async def produce() -> None:
            current: OpenedFile | None = None
            try:
                async for lines in reader.batches():
                    await room.acquire()
                    reset = lines.file is not current
                    current = lines.file
                    decoded = process.submit(
                        lines.lines, lines.first_line, reset, current.start.context
                    )
                    queue.put_nowait((lines, decoded))
            finally:
                queue.put_nowait(None)  # unbounded: never blocks

        producer = asyncio.create_task(produce())
        pending: asyncio.Task[None] | None = None
        try:
            while (item := await queue.get()) is not None:
                room.release()
                lines, decoded = item
                batch, context = await decoded
                end = Position(lines.end.offset, lines.end.line, context)
                prepared = await self.sink.prepare(batch, count_deliveries=True)
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self._commit(batch, lines, end, prepared))
            await producer  # the reader's error, if it stopped on one
            if pending is not None:
                await pending
                pending = None
            await self.sink.settle()
        finally:
            for task in (producer, pending):
                if task is not None and not task.done():
                    task.cancel()
            if pending is not None:  # a commit in flight finishes first (see ``_commit``)
                await asyncio.gather(pending, return_exceptions=True)
            while not queue.empty():  # decodes never awaited: a child that died fails them all
                left = queue.get_nowait()
                if left is not None:
                    left[1].add_done_callback(_retrieved)
            await self._settle_on_stop()
        return self.totals

    async def _commit(self, batch: Batch, lines: LineBatch, end: Position, prepared: Any) -> None:
        """``_write`` one batch. A stop (the task cancelled) while it is in flight lets it end
        for up to ``STOP_GRACE_S``, so that a batch that committed is counted in the summary
        (before, a stop between the commit and its answer left it out); then the stop goes on."""
        write = asyncio.ensure_future(self._write(batch, lines, end, prepared))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            done, _ = await asyncio.wait({write}, timeout=STOP_GRACE_S)
            if not done:
                write.cancel()
            elif not write.cancelled():
                write.exception()  # retrieved: the stop is what is reported
            raise

    async def _settle_on_stop(self) -> None:
        """After an error or a stop, what the sink left running after its last commit (a cache
        refresh) gets up to ``STOP_GRACE_S`` to end; an error of its own is not the one
        reported. Nothing to wait for when the run ended normally (settled already)."""
        settle = asyncio.ensure_future(self.sink.settle())
        await asyncio.wait({settle}, timeout=STOP_GRACE_S)
        if not settle.done():
            settle.cancel()
        elif not settle.cancelled():
            settle.exception()  # retrieved

    async def _write(self, batch: Batch, lines: LineBatch, end: Position, prepared: Any) -> None:
        totals = self.totals
        offsets = self.offsets
        if batch.events or batch.errors or batch.deliveries:
            hook: CommitHook | None = None
            if offsets is not None:
                hook = _offset_hook(offsets, lines, end)
            counts = await self._retrying(
                lambda: self.sink.record(
                    batch, count_deliveries=True, before_commit=hook, prepared=prepared
                )
            )
            totals.events_new += counts.new
            totals.duplicate += counts.duplicate
        elif offsets is not None:
            await self._retrying(lambda: offsets.save(lines.file, end))
        totals.lines += len(lines.lines)
        totals.errors += len(batch.errors)
        totals.offset = end.offset
        totals.size = lines.file.size
        self.progress.errors(batch.errors)
        self.progress.update(totals)

    async def _retrying(self, step: Callable[[], Awaitable[T]]) -> T:
        delay = RETRY_FIRST_S
        while True:
            try:
                result = await step()
            except DB_ERRORS as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "storage unavailable (%s); retrying with backoff up to %.0f s, "
                        "the read offset does not advance meanwhile",
                        type(exc).__name__,
                        self.retry_max_s,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self._down_since is not None:
                log.warning("storage back after %.1f s", time.monotonic() - self._down_since)
                self._down_since = None
            return result


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a future nobody awaits as seen (asyncio logs an unseen error)."""
    if not future.cancelled():
        future.exception()


def _offset_hook(offsets: OffsetStore, lines: LineBatch, end: Position) -> CommitHook:
    """Saves ``end`` as the read offset of ``lines``' file inside the batch's transaction."""

    async def save(s: AsyncSession) -> None:
        await offsets.save_in(s, lines.file, end)

    return save
