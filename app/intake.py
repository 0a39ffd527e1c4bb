"""The durable intake pipeline: store, claim, parse, apply, and keep the raw mail for a while.

1. **Store** (``GroupCommit`` -> ``IntakeStore.store_many``): the SMTP sink writes raw bytes +
   envelope to ``inbound_messages`` and commits *before* answering 250. Sessions that finish DATA
   while a commit is in flight wait for the next one, which stores all of them with one multi-row
   INSERT in autocommit (one round trip, durable when it returns); each session is answered once
   the commit holding its message returned, or 451 if it failed (a store that outlasts
   ``smtp_storage_timeout_s`` is abandoned and its connection closed, so a hung database cannot
   hold the sink for the driver's command timeout). The ``digest`` (SHA-256 over
   envelope and bytes) is unique, so an MTA that redelivers after an ambiguous reply is stored
   once, also when both copies land in the same commit.
2. **Claim**: a row is processed by whoever claims it. A claim is a conditional UPDATE (``state =
   'pending'`` and no fresh claim), on PostgreSQL over ``FOR UPDATE SKIP LOCKED`` rows when
   sweeping, so several replicas share one table without processing a message twice; a claim older
   than ``intake_claim_timeout_s`` (its processor died) is anyone's. Every claim counts an attempt.
3. **Feed**: the sink hands each stored message to a local queue (fast path, raw bytes already in
   memory); a sweep at start-up and every ``intake_sweep_interval_s`` takes pending rows from the
   table, so a crash between the 250 and processing loses nothing; a redelivery found to be a
   duplicate sweeps at once (its first copy may be a row whose commit reply was lost, never handed
   over). With the processing in a
   child process (``app.intake_process``, PostgreSQL) there is no local queue: the sink wakes the
   child after each commit and the child's sweep takes the rows.
4. **Process in batches** (``intake_concurrency`` batches at once, up to ``process_batch`` messages
   each): **parse** in bounded worker processes (``app.parsing_pool``, several messages per worker
   task), **apply** the batch through the policy in one transaction (``app.policy.apply_batch``;
   if that fails for a reason other than storage, message by message, so one bad message fails
   alone), then **finish** every message with one UPDATE: ``processed``, ``ignored`` (unknown,
   auto-reply or delivery report with nothing to apply) or ``failed`` with the reason. A transient
   problem (database down, parse pool died) leaves the row pending for a retry until
   ``intake_max_attempts``.

On PostgreSQL storing and processing each have an engine of their own on the service's database,
so a processing burst never holds the connections the sink needs to acknowledge mail.

The policy commits its writes, then the rows are finished: a crash between the two means the
messages are applied again after the claim times out (the policy skips a step whose event the
message already wrote, so nothing is written twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, Protocol

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError

from app.container import Services
from app.db import DB_ERRORS, Database
from app.models import InboundMessage, utcnow
from app.parsing_pool import ParseOutcome, ParsingPool
from app.policy import (
    ApplyResult,
    BatchItem,
    Envelope,
    apply_analysis,
    apply_batch,
    safe_stream,
)
from app.settings import Settings
from dsn.model import MessageAnalysis

log = logging.getLogger(__name__)

PENDING: Final = "pending"
PROCESSED: Final = "processed"
IGNORED: Final = "ignored"
FAILED: Final = "failed"
# Kinds that carry nothing to act on unless the policy says otherwise.
NOTHING_TO_APPLY: Final = frozenset({"unknown", "auto_reply", "delivery_report"})
_T = InboundMessage
_TABLE: Table = InboundMessage.__table__  # type: ignore[assignment]
# Statements run once per batch with one parameter set per message (executemany).
_FINISH = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        error=bindparam("b_error"),
        claimed_at=None,
        claimed_by=None,
        kind=bindparam("b_kind"),
        summary=bindparam("b_summary", type_=_TABLE.c.summary.type),
        verified=bindparam("b_verified"),
        stream=bindparam("b_stream"),
        processed_at=bindparam("b_at", type_=_TABLE.c.processed_at.type),
    )
)
_RELEASE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values(state=PENDING, error=bindparam("b_error"), claimed_at=None, claimed_by=None)
)


def envelope_digest(mail_from: str, rcpt_to: Sequence[str], raw: bytes) -> str:
    """SHA-256 over the envelope and the bytes: the same delivery repeated has the same digest."""
    h = hashlib.sha256()
    h.update(mail_from.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update("\n".join(sorted(rcpt_to)).encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(raw)
    return h.hexdigest()


def instance_name() -> str:
    """Who holds a claim: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    raw: bytes
    mail_from: str
    rcpt_to: list[str]
    peer: str | None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """What a session hands over at the end of DATA."""

    mail_from: str
    rcpt_to: list[str]
    peer: str | None
    raw: bytes


@dataclass(frozen=True, slots=True)
class Finish:
    """How one claimed message ends: a final state, or ``pending`` again for a retry."""

    id: int
    state: str
    kind: str | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    verified: bool = False
    stream: str | None = None

    def params(self, now: datetime) -> dict[str, Any]:
        return {
            "b_id": self.id,
            "b_state": self.state,
            "b_error": self.error[:2000] if self.error else None,
            "b_kind": self.kind,
            "b_summary": self.summary,
            "b_verified": self.verified,
            "b_stream": self.stream,
            "b_at": now,
        }


@dataclass(frozen=True, slots=True)
class StoreResult:
    id: int | None  # None for a duplicate
    duplicate: bool


class IntakeStore:
    """All SQL on ``inbound_messages``."""

    def __init__(
        self, db: Database, *, instance: str | None = None, store_timeout_s: float | None = None
    ) -> None:
        """``store_timeout_s`` bounds ``store_many`` (the sink's: nobody waits for a store longer
        than its storage timeout)."""
        self.db = db
        self.instance = instance or instance_name()
        self.store_timeout_s = store_timeout_s

    async def release_claims(self) -> int:
        """Hand back the pending rows this instance still holds: they become claimable at once."""
        stmt = (
            update(_TABLE)
            .where(_TABLE.c.claimed_by == self.instance, _TABLE.c.state == PENDING)
            .values(claimed_at=None, claimed_by=None)
        )
        async with self.db.write() as session:
            return int((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]

    def _insert(self) -> Any:
        return pg_insert(_TABLE) if self.db.dialect == "postgresql" else sqlite_insert(_TABLE)

    async def store(
        self, *, mail_from: str, rcpt_to: Sequence[str], peer: str | None, raw: bytes
    ) -> StoreResult:
        """Commit one accepted message (the caller answers 250 only after this returns)."""
        [result] = await self.store_many([IncomingMessage(mail_from, list(rcpt_to), peer, raw)])
        return result

    async def store_many(self, messages: Sequence[IncomingMessage]) -> list[StoreResult]:
        """Commit several accepted messages with one INSERT and one COMMIT, results in order.

        A digest already in the table, or earlier in the same batch, is a duplicate: stored once."""
        now = utcnow()
        digests = [envelope_digest(m.mail_from, m.rcpt_to, m.raw) for m in messages]
        first: dict[str, int] = {}
        rows = []
        for i, (m, digest) in enumerate(zip(messages, digests, strict=True)):
            if digest in first:
                continue
            first[digest] = i
            rows.append(
                {
                    "received_at": now,
                    "digest": digest,
                    "peer": (m.peer or None) and m.peer[:64],
                    "mail_from": m.mail_from[:512],
                    "rcpt_to": list(m.rcpt_to),
                    "size": len(m.raw),
                    "raw": m.raw,
                    "state": PENDING,
                    "attempts": 0,
                    "verified": False,
                }
            )
        # executemany: SQLAlchemy sends the rows as one multi-row INSERT (compiled once, cached).
        stmt = (
            self._insert()
            .on_conflict_do_nothing(index_elements=["digest"])
            .returning(_TABLE.c.id, _TABLE.c.digest)
        )
        # One statement in autocommit: one round trip, and durable when it returns. Bounded: a
        # hung server or a half-open connection (no RST ever comes) would otherwise hold the
        # group commit, and every session behind it, for the driver's command timeout.
        async with asyncio.timeout(self.store_timeout_s), self.db.autocommit() as conn:
            try:
                new_ids = {str(d): int(i) for i, d in (await conn.execute(stmt, rows)).all()}
            except asyncio.CancelledError:
                # Cut off mid-statement: the connection's state is unknown (and asyncpg would
                # send a cancel request through the same hung path): close it, never reuse it.
                await conn.invalidate()
                raise
        out = []
        for i, digest in enumerate(digests):
            new_id = new_ids.get(digest) if first[digest] == i else None
            out.append(StoreResult(id=new_id, duplicate=new_id is None))
        return out

    def _claimable(self, stale_before: datetime) -> Any:
        return and_(_T.state == PENDING, or_(_T.claimed_at.is_(None), _T.claimed_at < stale_before))

    async def claim_ids(self, ids: Sequence[int], claim_timeout_s: float) -> dict[int, int]:
        """Claim these rows if nobody holds them: {id: attempts} of those now ours."""
        if not ids:
            return {}
        now = utcnow()
        stmt = (
            update(_T)
            .where(_T.id.in_(list(ids)), self._claimable(now - timedelta(seconds=claim_timeout_s)))
            .values(claimed_at=now, claimed_by=self.instance, attempts=_T.attempts + 1)
            .returning(_T.id, _T.attempts)
        )
        async with self.db.write() as session:
            rows = (await session.execute(stmt)).all()
        return {int(r[0]): int(r[1]) for r in rows}

    async def claim_pending(self, limit: int, claim_timeout_s: float) -> list[StoredMessage]:
        """Claim up to ``limit`` pending rows nobody holds (oldest first), with their bytes."""
        now = utcnow()
        pick = (
            select(_T.id)
            .where(self._claimable(now - timedelta(seconds=claim_timeout_s)))
            .order_by(_T.id)
            .limit(limit)
        )
        if self.db.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(_T)
            .where(_T.id.in_(pick.scalar_subquery()))
            .values(claimed_at=now, claimed_by=self.instance, attempts=_T.attempts + 1)
            .returning(_T.id, _T.raw, _T.mail_from, _T.rcpt_to, _T.peer, _T.attempts)
            .execution_options(synchronize_session=False)
        )
        async with self.db.write() as session:
            rows = (await session.execute(stmt)).all()
        out = []
        for r in sorted(rows, key=lambda r: int(r[0])):
            if r[1] is None:  # raw already purged: nothing to parse
                await self.finish(int(r[0]), state=FAILED, error="raw message purged")
                continue
            out.append(StoredMessage(int(r[0]), bytes(r[1]), r[2], list(r[3]), r[4], int(r[5])))
        return out

    async def finish(
        self,
        message_id: int,
        *,
        state: str,
        kind: str | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
        verified: bool = False,
        stream: str | None = None,
        only_if_claimed: bool = True,
    ) -> bool:
        cond = [_T.id == message_id]
        if only_if_claimed:
            cond.append(_T.claimed_by == self.instance)
        values: dict[str, Any] = {
            "state": state,
            "error": error[:2000] if error else None,
            "claimed_at": None,
            "claimed_by": None,
        }
        if state != PENDING:
            values.update(
                kind=kind, summary=summary, verified=verified, stream=stream, processed_at=utcnow()
            )
        async with self.db.write() as session:
            result = await session.execute(update(_T).where(*cond).values(**values))
        done = bool(result.rowcount)  # type: ignore[attr-defined]
        if not done:
            log.warning("message %s: claim lost before it was finished as %s", message_id, state)
        return done

    async def finish_many(self, items: Sequence[Finish]) -> set[int]:
        """Finish claimed messages in one transaction; returns the ids that were still ours."""
        if not items:
            return set()
        now = utcnow()
        async with self.db.write() as session:
            held_q = select(_T.id).where(
                _T.id.in_([f.id for f in items]), _T.claimed_by == self.instance
            )
            if self.db.dialect == "postgresql":
                held_q = held_q.with_for_update()
            held = set((await session.execute(held_q)).scalars())
            final = [f.params(now) for f in items if f.id in held and f.state != PENDING]
            again = [f.params(now) for f in items if f.id in held and f.state == PENDING]
            if final:
                await session.execute(_FINISH, final)
            if again:
                await session.execute(_RELEASE, again)
        for f in items:
            if f.id not in held:
                log.warning("message %s: claim lost before it was finished as %s", f.id, f.state)
        return held

    async def raw(self, message_id: int) -> tuple[bool, bytes | None]:
        """Whether message ``message_id`` exists, and its bytes (``None`` once purged)."""
        async with self.db.read() as session:
            row = (await session.execute(select(_T.raw).where(_T.id == message_id))).first()
        return (row is not None, row[0] if row is not None else None)

    async def purge_raw(self, older_than_days: float, *, batch: int = 1000) -> int:
        """Drop the raw bytes of finished messages received before the cut-off; rows stay."""
        cutoff = utcnow() - timedelta(days=older_than_days)
        total = 0
        while True:
            pick = (
                select(_T.id)
                .where(_T.raw.is_not(None), _T.state != PENDING, _T.received_at < cutoff)
                .order_by(_T.id)
                .limit(batch)
            )
            async with self.db.write() as session:
                ids = list((await session.execute(pick)).scalars())
                if ids:
                    await session.execute(update(_T).where(_T.id.in_(ids)).values(raw=None))
            total += len(ids)
            if len(ids) < batch:
                return total

    async def select_for_reprocess(
        self, *, failed_only: bool, since: datetime | None, limit: int | None = None
    ) -> list[InboundMessage]:
        stmt = select(_T).where(_T.raw.is_not(None), _T.state != PENDING).order_by(_T.id)
        if failed_only:
            stmt = stmt.where(_T.state == FAILED)
        if since is not None:
            stmt = stmt.where(_T.received_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self.db.read() as session:
            return list((await session.execute(stmt)).scalars())

    async def backlog(self) -> tuple[int, int, float]:
        """(pending, failed, age in seconds of the oldest pending message): what an operator
        alerts on. Both counts and the oldest row come from the (state, id) index."""
        from sqlalchemy import func

        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(_T.state, func.count())
                    .where(_T.state.in_((PENDING, FAILED)))
                    .group_by(_T.state)
                )
            ).all()
            oldest = (
                await session.execute(
                    select(_T.received_at).where(_T.state == PENDING).order_by(_T.id).limit(1)
                )
            ).scalar_one_or_none()
        counts = {str(r[0]): int(r[1]) for r in rows}
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        return counts.get(PENDING, 0), counts.get(FAILED, 0), max(age, 0.0)


# ------------------------------------------------------------------------------------ applying


Applier = Callable[[StoredMessage, MessageAnalysis, bool], Awaitable[ApplyResult]]


def policy_applier(services: Services) -> Applier:
    """The production applier: ``app.policy.apply_analysis`` on the service's database and cache."""

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
    """``app.policy.apply_batch``: the whole batch in one transaction and one cache refresh."""

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


# ------------------------------------------------------------------------------------ processing


@dataclass(slots=True)
class IntakeStats:
    """Counters and timings (seconds summed over batches) logged when the intake stops and printed by the benchmark (not yet on /metrics)."""

    stored: int = 0
    duplicates: int = 0
    store_batches: int = 0
    store_s: float = 0.0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retried: int = 0
    batches: int = 0
    claim_s: float = 0.0
    parse_s: float = 0.0
    apply_s: float = 0.0
    finish_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        while True:
            # Cleared before the round, so a wake-up during the round makes one more round.
            self._sweep_now.clear()
            try:
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


# ------------------------------------------------------------------------------------ facade


class ProcessingChild(Protocol):
    """The handle on a processing process of its own (``app.intake_process.ProcessorChild``)."""

    async def start(self) -> None: ...

    def wake(self) -> None: ...

    async def close(self) -> None: ...


class Intake:
    """What the SMTP sink talks to: store (before the 250, in group commits), then hand over for
    processing."""

    def __init__(
        self,
        services: Services,
        *,
        applier: Applier | None = None,
        pool: ParsingPool | None = None,
        child: ProcessingChild | None = None,
    ) -> None:
        """``child``: processing runs in that process (``app.intake_process.open_intake`` makes
        one when the settings ask for it); without one it runs on this loop."""
        settings = services.settings
        self.settings = settings
        self.child = child
        self.store = IntakeStore(services.db)
        self.pool = pool or ParsingPool(
            workers=settings.parse_workers,
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_mb,
            inline_max_bytes=settings.parse_inline_max_bytes,
        )
        self._owns_pool = pool is None
        sink_store = self.store
        own_database: Callable[[], Database] | None = None
        self._sink_db: Database | None = None
        if services.db.dialect != "sqlite":  # SQLite: one writer per process, one engine only
            # Engines of their own (same database) for storing and for processing, so neither
            # waits for the other's connections. Their callers retry, so no pre-ping.
            self._sink_db = Database(settings, pool_size=2, pre_ping=False)
            sink_store = IntakeStore(
                self._sink_db,
                instance=self.store.instance,
                store_timeout_s=settings.smtp_storage_timeout_s,
            )
            own_database = partial(Database, settings, pre_ping=False)
        self.processor = IntakeProcessor(
            settings,
            self.store,
            self.pool,
            applier or policy_applier(services),
            batch_applier=None if applier is not None else policy_batch_applier(services),
            own_database=own_database,
        )
        self.committer = GroupCommit(sink_store, self.processor.stats, self._stored)

    async def start(self) -> None:
        """Start processing: in the child process, or on this loop."""
        if self.child is not None:
            await self.child.start()
        else:
            await self.processor.start()

    def _stored(self, msg: IncomingMessage, result: StoreResult) -> None:
        if result.id is None:
            # A redelivery. If the first copy's commit was ambiguous (committed, reply lost), its
            # row was never handed over: sweep now rather than at the next periodic sweep.
            if self.processor.running:
                self.processor.wake()
            elif self.child is not None:
                self.child.wake()
            return
        if self.processor.running:
            self.processor.submit(
                StoredMessage(result.id, msg.raw, msg.mail_from, msg.rcpt_to, msg.peer)
            )
        elif self.child is not None:
            self.child.wake()

    async def close(self) -> None:
        await self.committer.close()
        await self.processor.stop()
        if self.child is not None:
            await self.child.close()
        if self._sink_db is not None:
            await self._sink_db.dispose()
        stats = self.processor.stats.as_dict()
        log.warning(
            "intake stats: %s",
            " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
            ),
        )
        if self._owns_pool:
            await asyncio.to_thread(self.pool.close)

    async def accept(
        self, *, mail_from: str, rcpt_to: Sequence[str], peer: str | None, raw: bytes
    ) -> StoreResult:
        """Store one message; returns once the commit that holds it has returned."""
        return await self.committer.store_message(
            IncomingMessage(mail_from, list(rcpt_to), peer, raw)
        )


# ------------------------------------------------------------------------------------ reprocess


@dataclass(slots=True)
class ReprocessChange:
    id: int
    old_state: str
    new_state: str
    old_kind: str | None
    new_kind: str | None
    changes: list[dict[str, Any]]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "old_kind": self.old_kind,
            "new_kind": self.new_kind,
            "changes": self.changes,
            "error": self.error,
        }


def _by_recipient(summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in (summary or {}).get("results", []):
        out[str(r.get("recipient"))] = r
    return out


def diff_summaries(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per recipient: what the earlier run decided and what this run decides, where they differ."""
    before, after = _by_recipient(old), _by_recipient(new)
    changes = []
    for rcpt in sorted(before.keys() | after.keys()):
        b, a = before.get(rcpt), after.get(rcpt)
        key = ("outcome", "reason", "rule_id")
        if b is None or a is None or any(b.get(k) != a.get(k) for k in key):
            changes.append(
                {
                    "recipient": rcpt,
                    "before": None if b is None else {k: b.get(k) for k in key},
                    "after": None if a is None else {k: a.get(k) for k in key},
                }
            )
    return changes


@dataclass(slots=True)
class ReprocessReport:
    examined: int
    dry_run: bool
    changes: list[ReprocessChange]

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": len(self.changes),
            "dry_run": self.dry_run,
            "changes": [c.as_dict() for c in self.changes],
        }


async def reprocess(
    store: IntakeStore,
    pool: ParsingPool,
    applier: Applier,
    *,
    failed_only: bool = False,
    since: datetime | None = None,
    dry_run: bool = False,
    limit: int | None = None,
) -> ReprocessReport:
    """Run stored messages through the pipeline again (after a parser or rule change).

    Reports the messages whose state, kind or per-recipient decision changes. With ``dry_run``
    nothing is written: the policy is asked what it would do. Messages still pending are left to
    the processor; messages whose raw bytes were purged cannot be reprocessed."""
    rows = await store.select_for_reprocess(failed_only=failed_only, since=since, limit=limit)
    changes: list[ReprocessChange] = []
    for row in rows:
        assert row.raw is not None
        msg = StoredMessage(row.id, bytes(row.raw), row.mail_from, list(row.rcpt_to), row.peer)
        parsed = await pool.parse(msg.raw, msg.rcpt_to[0] if msg.rcpt_to else None)
        if parsed.analysis is None:
            new_state, new_kind, summary, error = FAILED, None, None, parsed.error
            result = None
        else:
            result = await applier(msg, parsed.analysis, dry_run)
            new_state = state_for(parsed.analysis, result)
            new_kind, error = parsed.analysis.kind, None
            summary = summarise(parsed.analysis, result)
        diff = diff_summaries(row.summary, summary) if summary is not None else []
        if new_state != row.state or new_kind != row.kind or diff or error != row.error:
            changes.append(
                ReprocessChange(row.id, row.state, new_state, row.kind, new_kind, diff, error)
            )
        if not dry_run:
            await store.finish(
                row.id,
                state=new_state,
                kind=new_kind,
                error=error,
                summary=summary,
                verified=bool(result and result.verified),
                stream=safe_stream(parsed.analysis.stream) if parsed.analysis else None,
                only_if_claimed=False,
            )
    return ReprocessReport(examined=len(rows), dry_run=dry_run, changes=changes)
