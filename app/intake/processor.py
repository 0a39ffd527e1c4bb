"""Processing: claim stored rows, parse them in the parse pool, apply what they mean (``app.feedback``)
and finish them; the appliers that connect it to the policy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.exc import DataError

from app.container import Services
from app.db import DB_ERRORS, Database
from app.feedback import (
    ApplyResult,
    BatchItem,
    Envelope,
    apply_analysis,
    apply_batch,
    safe_stream,
)
from app.intake.parse_pool import ParseOutcome, ParsingPool
from app.intake.stats import IntakeStats
from app.intake.store import (
    FAILED,
    IGNORED,
    NOTHING_TO_APPLY,
    PENDING,
    PROCESSED,
    Finish,
    IntakeStore,
    StoredMessage,
)
from app.settings import Settings
from dsn.model import MessageAnalysis

log = logging.getLogger("app.intake")


Applier = Callable[[StoredMessage, MessageAnalysis, bool], Awaitable[ApplyResult]]


def policy_applier(services: Services) -> Applier:
    """The production applier: ``app.feedback.apply_analysis`` on the service's database and cache."""

    async def apply(msg: StoredMessage, analysis: MessageAnalysis, dry_run: bool) -> ApplyResult:
        envelope = Envelope(mail_from=msg.mail_from, rcpt_to=list(msg.rcpt_to), peer=msg.peer)
        return await apply_analysis(
            services, message_id=msg.id, analysis=analysis, envelope=envelope, dry_run=dry_run
        )

    return apply


# Applies several messages at once (one transaction) with the given database engine; one result
# per message, in order. An exception means none of them was applied.
BatchApplier = Callable[
    [Sequence[tuple[StoredMessage, MessageAnalysis]], Database], Awaitable[list[ApplyResult]]
]


def policy_batch_applier(services: Services) -> BatchApplier:
    """``app.feedback.apply_batch``: the whole batch in one transaction and one cache refresh."""

    async def apply(
        items: Sequence[tuple[StoredMessage, MessageAnalysis]], db: Database
    ) -> list[ApplyResult]:
        batch = [
            BatchItem(
                msg.id,
                analysis,
                Envelope(mail_from=msg.mail_from, rcpt_to=list(msg.rcpt_to), peer=msg.peer),
            )
            for msg, analysis in items
        ]
        return await apply_batch(services, batch, db=db)

    return apply


def summarise(analysis: MessageAnalysis, result: ApplyResult | None) -> dict[str, Any]:
    """What is kept on the row about one run; ``reprocess`` compares two of these."""
    summary: dict[str, Any] = {
        "kind": analysis.kind,
        "mta": analysis.mta,
        "results": [
            {
                "recipient": r.recipient,
                "outcome": r.outcome,
                "reason": r.reason,
                "rule_id": r.rule_id,
                "status": r.status,
            }
            for r in analysis.results
        ],
    }
    if result is not None:
        summary.update(
            applied=result.applied,
            recorded=result.recorded,
            ignored=result.ignored,
            notes=list(result.notes)[:20],
        )
    return summary


def state_for(analysis: MessageAnalysis, result: ApplyResult) -> str:
    if analysis.kind in NOTHING_TO_APPLY and result.applied == 0 and result.recorded == 0:
        return IGNORED
    return PROCESSED


class IntakeProcessor:
    """Feeds stored messages through parse -> apply -> finish, a batch at a time; see the module
    docstring. A worker takes what is waiting (up to ``process_batch``), parses it in the pool,
    applies it in one transaction (``batch_applier``) and finishes it with one UPDATE."""

    def __init__(
        self,
        settings: Settings,
        store: IntakeStore,
        pool: ParsingPool,
        applier: Applier,
        *,
        batch_applier: BatchApplier | None = None,
        own_database: Callable[[], Database] | None = None,
        queue_size: int = 10_000,
        claim_batch: int = 200,
        process_batch: int = 32,
    ) -> None:
        self.settings = settings
        self.store = store
        self._shared_store = store
        self.pool = pool
        self.applier = applier
        self.batch_applier = batch_applier
        self.claim_batch = claim_batch
        self.process_batch = process_batch
        self.stats = IntakeStats()
        # While running, processing uses its own engine (own_database), so a burst of processing
        # cannot take the connections the SMTP sink needs to acknowledge mail.
        self._own_database = own_database
        self._own_db: Database | None = None
        # Stored by the sink, not yet claimed.
        self._incoming: asyncio.Queue[StoredMessage] = asyncio.Queue(queue_size)
        # Claimed by us, waiting for a worker (bounded: claims age while they wait).
        self._work: asyncio.Queue[StoredMessage] = asyncio.Queue(
            max(settings.intake_concurrency * 4, process_batch * 2)
        )
        self._sweep_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self.running = False

    # -- the sink's side

    def submit(self, msg: StoredMessage) -> None:
        """Hand over a just-stored message; if the queue is full the sweep will find the row."""
        try:
            self._incoming.put_nowait(msg)
        except asyncio.QueueFull:
            self._sweep_now.set()

    def wake(self) -> None:
        """Sweep now (rows were stored by a sink in another process)."""
        self._sweep_now.set()

    # -- life cycle

    async def start(self) -> None:
        if self.running:
            return
        await self.pool.start()
        if self._own_database is not None and self._own_db is None:
            self._own_db = self._own_database()
            self.store = IntakeStore(self._own_db, instance=self.store.instance)
        self.running = True
        self._tasks = [
            asyncio.create_task(self._claim_incoming(), name="intake-claim"),
            asyncio.create_task(self._sweep(), name="intake-sweep"),
        ]
        self._tasks += [
            asyncio.create_task(self._worker(), name=f"intake-worker-{i}")
            for i in range(self.settings.intake_concurrency)
        ]

    async def stop(self) -> None:
        """Stop without waiting for the queues: unfinished claims are retried after the timeout
        (by this service's next start, which claims its own stale rows like anyone's)."""
        self.running = False
        # Cancelled again until each has ended: a task can swallow a cancellation (Python 3.11's
        # wait_for, asyncpg's timeouts, when the awaited call completes at the same moment) and
        # go back to waiting on a queue that nobody fills any more.
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("intake: %s failed", task.get_name(), exc_info=task.exception())
        self._tasks = []
        if self._own_db is not None:
            own, self._own_db = self._own_db, None
            self.store = self._shared_store
            await own.dispose()

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until the local queues are empty and nothing is in progress (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self._incoming.qsize() or self._work.qsize() or self._busy:
            if time.monotonic() > deadline:
                raise TimeoutError("intake did not drain")
            await asyncio.sleep(0.01)

    # -- the loops

    async def _claim_incoming(self) -> None:
        while True:
            first = await self._incoming.get()
            batch = [first]
            while len(batch) < self.claim_batch and not self._incoming.empty():
                batch.append(self._incoming.get_nowait())
            started = time.perf_counter()
            try:
                claimed = await self.store.claim_ids(
                    [m.id for m in batch], self.settings.intake_claim_timeout_s
                )
            except DB_ERRORS as exc:
                log.warning(
                    "intake: claiming %d messages failed (%s); the sweep retries", len(batch), exc
                )
                self._sweep_now.set()
                await asyncio.sleep(1.0)
                continue
            self.stats.claim_s += time.perf_counter() - started
            for msg in batch:
                attempts = claimed.get(msg.id)
                if attempts is not None:  # else another replica has it
                    await self._work.put(
                        StoredMessage(
                            msg.id, msg.raw, msg.mail_from, msg.rcpt_to, msg.peer, attempts
                        )
                    )

    async def _sweep(self) -> None:
        """Take pending rows nobody holds: at start-up, on a timer, and when the queue overflowed.
        Also purges old raw bytes about once an hour."""
        last_purge = 0.0
        orphans_taken = False
        while True:
            # Cleared before the round, so a wake-up during the round makes one more round.
            self._sweep_now.clear()
            try:
                if not orphans_taken:
                    await self.store.release_orphaned_claims()
                    orphans_taken = True
                while True:
                    started = time.perf_counter()
                    msgs = await self.store.claim_pending(
                        self.claim_batch, self.settings.intake_claim_timeout_s
                    )
                    self.stats.claim_s += time.perf_counter() - started
                    for msg in msgs:
                        await self._work.put(msg)
                    if len(msgs) < self.claim_batch:
                        break
                if self.settings.raw_retention_days and time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    purged = await self.store.purge_raw(self.settings.raw_retention_days)
                    if purged:
                        log.info("intake: dropped the raw bytes of %d old messages", purged)
            except DB_ERRORS as exc:
                log.warning("intake sweep: database unreachable: %s", exc)
            except Exception:
                log.exception("intake sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._sweep_now.wait(), timeout=self.settings.intake_sweep_interval_s
                )

    async def _worker(self) -> None:
        while True:
            batch = [await self._work.get()]
            while len(batch) < self.process_batch and not self._work.empty():
                batch.append(self._work.get_nowait())
            self._busy += len(batch)
            try:
                await self.process_many(batch)
            except Exception:
                log.exception("intake: a batch of %d messages crashed the processor", len(batch))
            finally:
                self._busy -= len(batch)

    async def process(self, msg: StoredMessage) -> str:
        """Parse, apply and finish one claimed message; returns the state it was left in."""
        [state] = await self.process_many([msg])
        return state

    async def process_many(self, msgs: Sequence[StoredMessage]) -> list[str]:
        """Parse, apply and finish claimed messages; returns the state each was left in."""
        self.stats.batches += 1
        started = time.perf_counter()
        # First attempts are parsed in chunks; a retried message alone, so that a message that
        # kills its worker takes no innocent one down with it twice.
        first = [m for m in msgs if m.attempts <= 1]
        again = [m for m in msgs if m.attempts > 1]
        chunked, alone = await asyncio.gather(
            self.pool.parse_many([(m.raw, m.rcpt_to[0] if m.rcpt_to else None) for m in first]),
            asyncio.gather(
                *(self.pool.parse(m.raw, m.rcpt_to[0] if m.rcpt_to else None) for m in again)
            ),
        )
        by_id = dict(zip([m.id for m in first], chunked, strict=True))
        by_id.update(zip([m.id for m in again], alone, strict=True))
        parsed: list[ParseOutcome] = [by_id[m.id] for m in msgs]
        self.stats.parse_s += time.perf_counter() - started
        finishes: dict[int, Finish] = {}
        to_apply: list[tuple[StoredMessage, MessageAnalysis]] = []
        for msg, outcome in zip(msgs, parsed, strict=True):
            if outcome.retry:
                finishes[msg.id] = self._retry(msg, outcome.error or "parse worker died")
            elif outcome.analysis is None:
                finishes[msg.id] = Finish(msg.id, FAILED, error=outcome.error or "unparsable")
            else:
                to_apply.append((msg, outcome.analysis))
        started = time.perf_counter()
        try:
            applied = await self._apply(to_apply)
        finally:
            self.stats.apply_s += time.perf_counter() - started
        for (msg, analysis), result in zip(to_apply, applied, strict=True):
            finishes[msg.id] = self._outcome(msg, analysis, result)
        ordered = [finishes[m.id] for m in msgs]
        await self._finish(ordered)
        return [f.state for f in ordered]

    async def _apply(
        self, items: list[tuple[StoredMessage, MessageAnalysis]]
    ) -> list[ApplyResult | BaseException]:
        """The whole batch at once; if that fails for a reason other than storage, each message
        alone, so one bad message fails by itself."""
        if not items:
            return []
        if self.batch_applier is not None and len(items) > 1:
            try:
                return list(await self.batch_applier(items, self.store.db))
            except DataError:
                # The database refused one message's content (it would refuse it on every retry):
                # apply them one at a time so the others are not failed with it.
                log.warning("intake: a batch of %d was refused; one at a time", len(items))
            except DB_ERRORS as exc:
                return [exc] * len(items)
            except Exception:
                log.exception("intake: applying a batch of %d failed; one at a time", len(items))
        out: list[ApplyResult | BaseException] = []
        for msg, analysis in items:
            try:
                if self.batch_applier is not None:
                    [result] = await self.batch_applier([(msg, analysis)], self.store.db)
                else:
                    result = await self.applier(msg, analysis, False)
                out.append(result)
            except DB_ERRORS as exc:
                out.append(exc)
            except Exception as exc:
                log.exception("intake: applying message %s failed", msg.id)
                out.append(exc)
        return out

    def _outcome(
        self, msg: StoredMessage, analysis: MessageAnalysis, result: ApplyResult | BaseException
    ) -> Finish:
        if isinstance(
            result, DataError
        ):  # refused for its content: a retry would fail the same way
            error = f"apply: refused by the database: {result.orig!r}"[:500]
            return Finish(msg.id, FAILED, error=error, kind=analysis.kind)
        if isinstance(result, DB_ERRORS):
            return self._retry(msg, f"storage: {result}"[:500])
        if isinstance(result, BaseException):
            error = f"apply: {type(result).__name__}: {result}"[:500]
            return Finish(msg.id, FAILED, error=error, kind=analysis.kind)
        return Finish(
            msg.id,
            state_for(analysis, result),
            kind=analysis.kind,
            summary=summarise(analysis, result),
            verified=result.verified,
            stream=safe_stream(analysis.stream),
        )

    def _retry(self, msg: StoredMessage, error: str) -> Finish:
        if msg.attempts >= self.settings.intake_max_attempts:
            return Finish(msg.id, FAILED, error=f"{error} (after {msg.attempts} attempts)")
        self.stats.retried += 1
        self._sweep_now.set()
        return Finish(msg.id, PENDING, error=error)

    async def _finish(self, items: list[Finish]) -> None:
        started = time.perf_counter()
        for delay in (0.0, 0.5, 2.0):  # the database may blink; the claim timeout is the backstop
            await asyncio.sleep(delay)
            try:
                await self.store.finish_many(items)
                break
            except DB_ERRORS as exc:
                log.warning("intake: finishing %d messages failed: %s", len(items), exc)
        self.stats.finish_s += time.perf_counter() - started
        for f in items:
            if f.state == PROCESSED:
                self.stats.processed += 1
            elif f.state == IGNORED:
                self.stats.ignored += 1
            elif f.state == FAILED:
                self.stats.failed += 1
                log.warning("intake: message %s failed: %s", f.id, f.error)
