"""Group commit: the sink's messages share one INSERT and one COMMIT; each is answered 250 only
after the commit that holds it returned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from app.db import DB_ERRORS
from app.intake.stats import IntakeStats
from app.intake.store import IncomingMessage, IntakeStore, StoreResult

log = logging.getLogger("app.intake")


class GroupCommit:
    """Sessions that finish DATA at the same time share one INSERT and one COMMIT.

    One commit is in flight at a time; messages arriving meanwhile wait, and the next commit takes
    all of them (up to ``max_messages`` / ``max_bytes``). Each waiter gets the result of the
    commit that held its message, only after that commit returned, or that commit's exception:
    nobody is acknowledged before their bytes are durable, and a failed commit fails every session
    in it. A waiter that gave up before its commit started (the storage timeout) is left out.
    """

    def __init__(
        self,
        store: IntakeStore,
        stats: IntakeStats,
        after_commit: Callable[[IncomingMessage, StoreResult], None],
        *,
        max_messages: int = 256,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.stats = stats
        self.after_commit = after_commit
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._waiting: list[tuple[IncomingMessage, asyncio.Future[StoreResult]]] = []
        self._committing: list[tuple[IncomingMessage, asyncio.Future[StoreResult]]] = []
        self._task: asyncio.Task[None] | None = None

    async def store_message(self, msg: IncomingMessage) -> StoreResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreResult] = loop.create_future()
        self._waiting.append((msg, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="intake-group-commit")
        return await future

    def _take(self) -> list[tuple[IncomingMessage, asyncio.Future[StoreResult]]]:
        size = 0
        n = 0
        for msg, _ in self._waiting:
            if n and (n >= self.max_messages or size + len(msg.raw) > self.max_bytes):
                break
            size += len(msg.raw)
            n += 1
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        return [(m, f) for m, f in batch if not f.done()]

    async def _run(self) -> None:
        while self._waiting:
            batch = self._committing = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                try:
                    results = await self.store.store_many([m for m, _ in batch])
                except DB_ERRORS as exc:
                    # Once more at once (a connection that died idle fails only its first use).
                    # Safe: if the failed commit did land, the digests make this one a no-op and
                    # the sessions are answered "already received". Not when every session gave
                    # up meanwhile (a timed-out store): their MTAs retry anyway.
                    batch = self._committing = [(m, f) for m, f in batch if not f.done()]
                    if not batch:
                        log.warning(
                            "intake: storing failed (%s: %s); nobody waits", type(exc).__name__, exc
                        )
                        continue
                    log.warning(
                        "intake: storing %d messages failed (%s: %s); retrying",
                        len(batch),
                        type(exc).__name__,
                        exc,
                    )
                    results = await self.store.store_many([m for m, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(ConnectionAbortedError("intake closed"))
                raise
            finally:
                self._committing = []
                self.stats.store_s += time.perf_counter() - started
                self.stats.store_batches += 1
            for (msg, future), result in zip(batch, results, strict=True):
                if result.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.stored += 1
                self.after_commit(msg, result)
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Stop committing; sessions still waiting get an error (answered 451, retried by their
        MTA; a commit cut off here may have landed, which the retry finds as a duplicate)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        closing = ConnectionAbortedError("intake closed")
        for _, future in self._committing + self._waiting:
            if not future.done():
                future.set_exception(closing)
        self._committing, self._waiting = [], []
