"""All SQL on ``inbound_messages``: store accepted mail (deduplicated by envelope digest),
claim rows for processing, finish them, release claims, purge raw bytes, backlog figures."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Table, and_, bindparam, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import Database
from app.models import InboundMessage, utcnow
from app.set_insert import json_text

log = logging.getLogger("app.intake")


PENDING: Final = "pending"
PROCESSED: Final = "processed"
IGNORED: Final = "ignored"
FAILED: Final = "failed"


# Kinds that carry nothing to act on unless the policy says otherwise.
NOTHING_TO_APPLY: Final = frozenset({"unknown", "auto_reply", "delivery_report", "receipt"})


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

# PostgreSQL: the same two set-based (``unnest`` of one array per column), only where the claim
# is still ours (checked again on the row's latest version), returning the ids they finished.
_FINISH_SET = text("""
UPDATE inbound_messages AS m SET
    state = f.state, error = f.error, claimed_at = NULL, claimed_by = NULL, kind = f.kind,
    summary = f.summary, verified = f.verified, stream = f.stream, processed_at = f.at
FROM unnest(CAST(:id AS bigint[]), CAST(:state AS varchar[]), CAST(:error AS text[]),
            CAST(:kind AS varchar[]), CAST(CAST(:summary AS text[]) AS jsonb[]),
            CAST(:verified AS boolean[]), CAST(:stream AS varchar[]), CAST(:at AS timestamptz[]))
     AS f(id, state, error, kind, summary, verified, stream, at)
WHERE m.id = f.id AND m.claimed_by = :instance
RETURNING m.id""")
_RELEASE_SET = text("""
UPDATE inbound_messages AS m SET
    state = 'pending', error = f.error, claimed_at = NULL, claimed_by = NULL
FROM unnest(CAST(:id AS bigint[]), CAST(:error AS text[])) AS f(id, error)
WHERE m.id = f.id AND m.claimed_by = :instance
RETURNING m.id""")


def envelope_digest(mail_from: str, rcpt_to: Sequence[str], raw: bytes) -> str:
    """SHA-256 over the envelope and the bytes: the same delivery repeated has the same digest."""
    h = hashlib.sha256()
    h.update(mail_from.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update("\n".join(sorted(rcpt_to)).encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(raw)
    return h.hexdigest()


# The claim owners made in this process (several in tests; one per intake in production).
_OWNERS_HERE: set[str] = set()


def _host() -> str:
    return socket.gethostname()[:40]


def instance_name() -> str:
    """Who holds a claim: host, process and a random part (a restarted process is someone else)."""
    name = f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _OWNERS_HERE.add(name)
    return name


def owner_gone(owner: str) -> bool:
    """Whether the process named by a claim is known to be gone: it ran on this host and no
    process has its id any more, or it had this process's id (a restarted container) but is not
    one of this process's owners. Owners on other hosts cannot be checked: their claims expire
    after ``intake_claim_timeout_s``."""
    host, _, rest = owner.partition(":")
    pid, _, _ = rest.partition(":")
    if host != _host() or not pid.isdigit() or owner in _OWNERS_HERE:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


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

    async def release_orphaned_claims(self) -> int:
        """Hand back at once the pending rows claimed by processes that are gone (``owner_gone``):
        a process restarted after a crash does not wait out their claim timeout."""
        async with self.db.read() as session:
            q = select(_T.claimed_by).where(_T.state == PENDING, _T.claimed_by.is_not(None))
            owners = (await session.scalars(q.distinct())).all()
        gone = [o for o in owners if o is not None and owner_gone(o)]
        if not gone:
            return 0
        stmt = (
            update(_TABLE)
            .where(_TABLE.c.claimed_by.in_(gone), _TABLE.c.state == PENDING)
            .values(claimed_at=None, claimed_by=None)
        )
        async with self.db.write() as session:
            released = int((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]
        if released:
            log.warning(
                "intake: took back %d messages claimed by processes that are gone", released
            )
        return released

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
        held = await (self._finish_set if self.db.dialect == "postgresql" else self._finish_rows)(
            items, now
        )
        for f in items:
            if f.id not in held:
                log.warning("message %s: claim lost before it was finished as %s", f.id, f.state)
        return held

    async def _finish_set(self, items: Sequence[Finish], now: datetime) -> set[int]:
        """PostgreSQL: one statement in autocommit when every item is final (the usual case);
        with retries among them, the releasing and the finishing in one transaction."""
        final = [f.params(now) for f in items if f.state != PENDING]
        again = [f.params(now) for f in items if f.state == PENDING]

        def arrays(rows: list[dict[str, Any]]) -> dict[str, Any]:
            out = {key[2:]: [r[key] for r in rows] for key in rows[0]}
            out["summary"] = [None if v is None else json_text(v) for v in out["summary"]]
            return {**out, "instance": self.instance}

        if not again:
            async with self.db.autocommit() as conn:
                return set((await conn.execute(_FINISH_SET, arrays(final))).scalars())
        async with self.db.write() as session:
            held = set((await session.execute(_RELEASE_SET, arrays(again))).scalars())
            if final:
                held |= set((await session.execute(_FINISH_SET, arrays(final))).scalars())
        return held

    async def _finish_rows(self, items: Sequence[Finish], now: datetime) -> set[int]:
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
        self,
        *,
        failed_only: bool,
        since: datetime | None,
        limit: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[InboundMessage]:
        stmt = select(_T).where(_T.raw.is_not(None), _T.state != PENDING).order_by(_T.id)
        if ids is not None:
            stmt = stmt.where(_T.id.in_(list(ids)))
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

    async def recent(
        self, *, limit: int, failed_only: bool = False, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest stored messages (without their bytes): state, kind, error, size."""
        cols = (_T.id, _T.received_at, _T.state, _T.kind, _T.error, _T.size, _T.attempts)
        stmt = select(*cols, _T.raw.is_not(None).label("kept")).order_by(_T.id.desc()).limit(limit)
        if failed_only:
            stmt = stmt.where(_T.state == FAILED)
        if before is not None:
            stmt = stmt.where(_T.id < before)
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).mappings().all()
        return [dict(r) for r in rows]
