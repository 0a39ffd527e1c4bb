"""Console sessions, kept server-side: the browser holds a random token (HttpOnly cookie), the
database only its SHA-256, the key's hash and the session's CSRF token. A session ends at sign-out,
after ``STOPLIST_CONSOLE_IDLE_MINUTES`` unused, ``STOPLIST_CONSOLE_MAX_HOURS`` after sign-in, or
when its key is revoked (the key is re-read through ``KeyService``).

Also the sign-in throttle: repeated failures from one client wait longer and longer."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_, select, update

from app.db import Database
from app.models import ConsoleSession, utcnow

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often per session


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    key_hash: str
    csrf: str


class SessionStore:
    """All SQL on ``console_sessions``."""

    def __init__(self, db: Database, *, idle: timedelta, absolute: timedelta) -> None:
        self.db = db
        self.idle = idle
        self.absolute = absolute

    async def create(self, key_hash: str) -> tuple[str, SessionRecord]:
        """A new session for the key; returns the cookie token (shown to the browser only)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        record = SessionRecord(token_digest(token), key_hash, secrets.token_urlsafe(32))
        async with self.db.write() as s:
            # Expired sessions are dropped here, at sign-in, rather than by a job.
            await s.execute(delete(ConsoleSession).where(self._expired(now)))
            s.add(
                ConsoleSession(
                    id=record.id,
                    key_hash=key_hash,
                    csrf=record.csrf,
                    created_at=now,
                    last_seen_at=now,
                )
            )
        return token, record

    def _expired(self, now: datetime) -> ColumnElement[bool]:
        return or_(
            ConsoleSession.last_seen_at < now - self.idle,
            ConsoleSession.created_at < now - self.absolute,
        )

    async def load(self, token: str) -> SessionRecord | None:
        """The live session the token names, or None (unknown, idle too long, too old)."""
        if not token or len(token) > 128:
            return None
        digest = token_digest(token)
        now = utcnow()
        async with self.db.read() as s:
            row = await s.get(ConsoleSession, digest)
        if row is None:
            return None
        if row.last_seen_at < now - self.idle or row.created_at < now - self.absolute:
            await self.end(token)
            return None
        if now - row.last_seen_at > TOUCH_EVERY:
            async with self.db.write() as s:
                await s.execute(
                    update(ConsoleSession)
                    .where(ConsoleSession.id == digest)
                    .values(last_seen_at=now)
                )
        return SessionRecord(row.id, row.key_hash, row.csrf)

    async def end(self, token: str) -> None:
        async with self.db.write() as s:
            await s.execute(delete(ConsoleSession).where(ConsoleSession.id == token_digest(token)))

    async def count(self) -> int:
        async with self.db.read() as s:
            return int(await s.scalar(select(func.count()).select_from(ConsoleSession)) or 0)


class SignInThrottle:
    """Per client address: after ``free`` failures, each further attempt must wait
    2^(failures - free) seconds (at most ``cap``) after the last failure. In-process: each replica
    counts its own (a client spread over N replicas gets N times the attempts)."""

    def __init__(
        self, *, free: int = 5, cap: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.free = free
        self.cap = cap
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def wait_s(self, client: str) -> float:
        """Seconds the client must still wait before its next attempt (0: go ahead)."""
        failures, last = self._failures.get(client, (0, 0.0))
        if failures < self.free:
            return 0.0
        delay = min(self.cap, 2.0 ** (failures - self.free))
        return max(0.0, last + delay - self.clock())

    def failed(self, client: str) -> None:
        now = self.clock()
        if len(self._failures) > 10_000:  # forget clients idle for an hour
            self._failures = {c: v for c, v in self._failures.items() if now - v[1] < 3600}
        failures, _ = self._failures.get(client, (0, 0.0))
        self._failures[client] = (failures + 1, now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
