"""The durable intake pipeline: store, claim, parse, apply, and keep the raw mail for a while.

1. **Store** (``IntakeStore.store``): the SMTP sink writes raw bytes + envelope to
   ``inbound_messages`` and commits *before* answering 250. The ``digest`` (SHA-256 over envelope and
   bytes) is unique, so an MTA that redelivers after an ambiguous reply is stored once.
2. **Claim**: a row is processed by whoever claims it. A claim is a conditional UPDATE (``state =
   'pending'`` and no fresh claim), on PostgreSQL over ``FOR UPDATE SKIP LOCKED`` rows when
   sweeping, so several replicas share one table without processing a message twice; a claim older
   than ``intake_claim_timeout_s`` (its processor died) is anyone's. Every claim counts an attempt.
3. **Feed**: the sink hands each stored message to a local queue (fast path, raw bytes already in
   memory); a sweep at start-up and every ``intake_sweep_interval_s`` takes pending rows from the
   table, so a crash between the 250 and processing loses nothing.
4. **Parse** in bounded worker processes (``app.parsing_pool``), then **apply** through the policy
   (``app.policy.apply_analysis``), then **finish**: ``processed``, ``ignored`` (unknown, auto-reply
   or delivery report with nothing to apply) or ``failed`` with the reason. A transient problem
   (database down, parse pool died) leaves the row pending for a retry until ``intake_max_attempts``.

The policy commits its own writes, then the row is finished: a crash between the two means the
message is applied again after the claim times out (the policy's writes are idempotent for hard
bounces, complaints and unsubscribes).
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
from typing import Any, Final

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.api.deps import Services
from app.db import Database
from app.models import InboundMessage, utcnow
from app.parsing_pool import ParseOutcome, ParsingPool
from app.policy import ApplyResult, Envelope, apply_analysis
from app.settings import Settings
from app.suppressions import DB_ERRORS
from dsn.model import MessageAnalysis

log = logging.getLogger(__name__)

PENDING: Final = "pending"
PROCESSED: Final = "processed"
IGNORED: Final = "ignored"
FAILED: Final = "failed"
# Kinds that carry nothing to act on unless the policy says otherwise.
NOTHING_TO_APPLY: Final = frozenset({"unknown", "auto_reply", "delivery_report"})
_T = InboundMessage


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
class StoreResult:
    id: int | None  # None for a duplicate
    duplicate: bool


class IntakeStore:
    """All SQL on ``inbound_messages``."""

    def __init__(self, db: Database, *, instance: str | None = None) -> None:
        self.db = db
        self.instance = instance or instance_name()

    def _insert(self) -> Any:
        return pg_insert(_T) if self.db.dialect == "postgresql" else sqlite_insert(_T)

    async def store(
        self, *, mail_from: str, rcpt_to: Sequence[str], peer: str | None, raw: bytes
    ) -> StoreResult:
        """Commit one accepted message (the caller answers 250 only after this returns)."""
        digest = envelope_digest(mail_from, rcpt_to, raw)
        stmt = (
            self._insert()
            .values(
                received_at=utcnow(),
                digest=digest,
                peer=(peer or None) and peer[:64],
                mail_from=mail_from[:512],
                rcpt_to=list(rcpt_to),
                size=len(raw),
                raw=raw,
                state=PENDING,
                attempts=0,
                verified=False,
            )
            .on_conflict_do_nothing(index_elements=["digest"])
            .returning(_T.id)
        )
        async with self.db.write() as session:
            new_id = (await session.execute(stmt)).scalar_one_or_none()
        return StoreResult(id=new_id, duplicate=new_id is None)

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

    async def counts(self) -> dict[str, int]:
        from sqlalchemy import func

        async with self.db.read() as session:
            rows = (await session.execute(select(_T.state, func.count()).group_by(_T.state))).all()
        return {str(r[0]): int(r[1]) for r in rows}


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
    """Timing counters (seconds summed over messages) for the benchmark and /metrics."""

    stored: int = 0
    duplicates: int = 0
    store_s: float = 0.0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retried: int = 0
    claim_s: float = 0.0
    parse_s: float = 0.0
    apply_s: float = 0.0
    finish_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class IntakeProcessor:
    """Feeds stored messages through parse -> apply -> finish; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: IntakeStore,
        pool: ParsingPool,
        applier: Applier,
        *,
        queue_size: int = 10_000,
        claim_batch: int = 200,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.applier = applier
        self.claim_batch = claim_batch
        self.stats = IntakeStats()
        # Stored by the sink, not yet claimed.
        self._incoming: asyncio.Queue[StoredMessage] = asyncio.Queue(queue_size)
        # Claimed by us, waiting for a processing slot (small: claims age while they wait).
        self._work: asyncio.Queue[StoredMessage] = asyncio.Queue(settings.intake_concurrency * 4)
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

    # -- life cycle

    async def start(self) -> None:
        if self.running:
            return
        await self.pool.start()
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

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
            try:
                while True:
                    msgs = await self.store.claim_pending(
                        self.claim_batch, self.settings.intake_claim_timeout_s
                    )
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
            self._sweep_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._sweep_now.wait(), timeout=self.settings.intake_sweep_interval_s
                )

    async def _worker(self) -> None:
        while True:
            msg = await self._work.get()
            self._busy += 1
            try:
                await self.process(msg)
            except Exception:
                log.exception("intake: message %s crashed the processor", msg.id)
            finally:
                self._busy -= 1

    async def process(self, msg: StoredMessage) -> str:
        """Parse, apply and finish one claimed message; returns the state it was left in."""
        rcpt = msg.rcpt_to[0] if msg.rcpt_to else None
        started = time.perf_counter()
        parsed: ParseOutcome = await self.pool.parse(msg.raw, rcpt)
        self.stats.parse_s += time.perf_counter() - started
        if parsed.retry:
            return await self._retry(msg, parsed.error or "parse worker died")
        if parsed.analysis is None:
            return await self._finish(msg, FAILED, error=parsed.error or "unparsable")
        analysis = parsed.analysis
        started = time.perf_counter()
        try:
            result = await self.applier(msg, analysis, False)
        except DB_ERRORS as exc:
            return await self._retry(msg, f"storage: {exc}"[:500])
        except Exception as exc:
            log.exception("intake: applying message %s failed", msg.id)
            return await self._finish(
                msg, FAILED, error=f"apply: {type(exc).__name__}: {exc}"[:500], kind=analysis.kind
            )
        finally:
            self.stats.apply_s += time.perf_counter() - started
        return await self._finish(
            msg,
            state_for(analysis, result),
            kind=analysis.kind,
            summary=summarise(analysis, result),
            verified=result.verified,
            stream=analysis.stream,
        )

    async def _retry(self, msg: StoredMessage, error: str) -> str:
        if msg.attempts >= self.settings.intake_max_attempts:
            return await self._finish(msg, FAILED, error=f"{error} (after {msg.attempts} attempts)")
        self.stats.retried += 1
        with contextlib.suppress(*DB_ERRORS):
            await self.store.finish(msg.id, state=PENDING, error=error)
        self._sweep_now.set()
        return PENDING

    async def _finish(self, msg: StoredMessage, state: str, **kw: Any) -> str:
        started = time.perf_counter()
        for delay in (0.0, 0.5, 2.0):  # the database may blink; the claim timeout is the backstop
            await asyncio.sleep(delay)
            try:
                await self.store.finish(msg.id, state=state, **kw)
                break
            except DB_ERRORS as exc:
                log.warning("intake: finishing message %s failed: %s", msg.id, exc)
        self.stats.finish_s += time.perf_counter() - started
        if state == PROCESSED:
            self.stats.processed += 1
        elif state == IGNORED:
            self.stats.ignored += 1
        elif state == FAILED:
            self.stats.failed += 1
            log.warning("intake: message %s failed: %s", msg.id, kw.get("error"))
        return state


# ------------------------------------------------------------------------------------ facade


class Intake:
    """What the SMTP sink talks to: store (before the 250), then hand over for processing."""

    def __init__(
        self,
        services: Services,
        *,
        applier: Applier | None = None,
        pool: ParsingPool | None = None,
    ) -> None:
        settings = services.settings
        self.settings = settings
        self.store = IntakeStore(services.db)
        self.pool = pool or ParsingPool(
            workers=settings.parse_workers,
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_mb,
            inline_max_bytes=settings.parse_inline_max_bytes,
        )
        self._owns_pool = pool is None
        self.processor = IntakeProcessor(
            settings, self.store, self.pool, applier or policy_applier(services)
        )

    async def close(self) -> None:
        await self.processor.stop()
        if self._owns_pool:
            await asyncio.to_thread(self.pool.close)

    async def accept(
        self, *, mail_from: str, rcpt_to: Sequence[str], peer: str | None, raw: bytes
    ) -> StoreResult:
        started = time.perf_counter()
        result = await self.store.store(mail_from=mail_from, rcpt_to=rcpt_to, peer=peer, raw=raw)
        stats = self.processor.stats
        stats.store_s += time.perf_counter() - started
        if result.id is None:
            stats.duplicates += 1
            return result
        stats.stored += 1
        if self.processor.running:
            self.processor.submit(StoredMessage(result.id, raw, mail_from, list(rcpt_to), peer))
        return result


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
                stream=parsed.analysis.stream if parsed.analysis else None,
                only_if_claimed=False,
            )
    return ReprocessReport(examined=len(rows), dry_run=dry_run, changes=changes)
