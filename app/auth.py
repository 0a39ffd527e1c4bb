"""API keys: bearer tokens with one scope each, stored hashed, compared in constant time.

Scopes are ordered, each including the ones before it: ``check`` (pre-send check only) < ``read``
(look up, list, history, export) < ``write`` (support staff: suppress, unsuppress, import) <
``admin`` (keys, removing complaint suppressions with force).

A key is ``sl_`` + 40 URL-safe characters (240 random bits), so a single SHA-256 is enough to store
it; the first 8 characters are kept in clear as a prefix to recognise keys in listings.
A verified key is remembered in-process for ``STOPLIST_AUTH_CACHE_TTL_S`` seconds so the check path
does no SQL; a revoked key stops working on every replica within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound
from app.models import ApiKey, AuditEntry, utcnow

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("check", "read", "write", "admin")
_RANK = {name: i for i, name in enumerate(SCOPES)}
KEY_PREFIX = "sl_"
_KEY_RE = re.compile(r"^sl_[A-Za-z0-9_-]{40}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
BOOTSTRAP_NAME = "bootstrap-admin"


def scope_allows(granted: str, required: str) -> bool:
    return _RANK.get(granted, -1) >= _RANK[required]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    scope: str


class KeyService:
    def __init__(self, db: Database, *, cache_ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl = cache_ttl_s
        self._verified: dict[str, tuple[KeyInfo, float]] = {}
        self._inflight: dict[str, asyncio.Future[KeyInfo | None]] = {}
        self._touched: dict[int, float] = {}
        self._touch_tasks: set[asyncio.Task[None]] = set()

    async def authenticate(self, presented: str) -> KeyInfo | None:
        """The key's identity, or None. Unknown and revoked keys look the same to the caller."""
        if not _KEY_RE.match(presented):
            return None
        digest = hash_key(presented)
        hit = self._verified.get(digest)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        # One database read per key however many requests arrive at once with it.
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            info = await self._load(digest)
            future.set_result(info)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        finally:
            del self._inflight[digest]
        return info

    async def _load(self, digest: str) -> KeyInfo | None:
        async with self.db.read() as s:
            row = (
                await s.scalars(
                    select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
                )
            ).one_or_none()
        # The index found the row by hash; compare again in constant time before trusting it.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            self._verified.pop(digest, None)
            return None
        info = KeyInfo(row.id, row.name, row.scope)
        now = time.monotonic()
        self._verified[digest] = (info, now + self.ttl)
        if self._touched.get(row.id, 0.0) < now - 60:
            # last_used_at is informational: at most one write a minute per key and replica.
            self._touched[row.id] = now
            task = asyncio.get_running_loop().create_task(self._touch(row.id))
            self._touch_tasks.add(task)
            task.add_done_callback(self._touch_tasks.discard)
        return info

    async def close(self) -> None:
        """Let pending last-used updates finish (before the engine is disposed)."""
        if self._touch_tasks:
            await asyncio.gather(*self._touch_tasks, return_exceptions=True)

    async def _touch(self, key_id: int) -> None:
        try:
            async with self.db.write() as s:
                await s.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow())
                )
        except Exception as exc:  # last_used_at is informational
            log.debug("could not record key use: %s", exc)

    async def create(
        self, name: str, scope: str, *, actor: str, key: str | None = None
    ) -> tuple[KeyInfo, str]:
        if not _NAME_RE.match(name):
            raise InvalidInput(f"key name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
        if scope not in _RANK:
            raise InvalidInput(f"scope {scope!r}: one of {', '.join(SCOPES)}")
        plaintext = key or generate_key()
        if key is not None and len(key) < 32:
            raise InvalidInput("a supplied key must be at least 32 characters")
        row = ApiKey(
            name=name,
            key_hash=hash_key(plaintext),
            prefix=plaintext[:8],
            scope=scope,
            created_at=utcnow(),
        )
        try:
            async with self.db.write() as s:
                s.add(row)
                s.add(
                    AuditEntry(
                        actor=actor, action="key_create", detail={"name": name, "scope": scope}
                    )
                )
        except IntegrityError:
            raise Conflict(f"a key named {name!r} already exists") from None
        return KeyInfo(row.id, name, scope), plaintext

    async def revoke(self, name: str, *, actor: str) -> None:
        async with self.db.write() as s:
            row = (
                await s.scalars(
                    select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"no active key named {name!r}")
            row.revoked_at = utcnow()
            s.add(AuditEntry(actor=actor, action="key_revoke", detail={"name": name}))
        self._verified = {d: v for d, v in self._verified.items() if v[0].name != name}

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = (await s.scalars(select(ApiKey).order_by(ApiKey.id))).all()
        return [
            {
                "name": r.name,
                "scope": r.scope,
                "prefix": r.prefix,
                "created_at": r.created_at,
                "last_used_at": r.last_used_at,
                "revoked_at": r.revoked_at,
            }
            for r in rows
        ]

    async def count_active(self) -> int:
        async with self.db.read() as s:
            n = await s.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            )
        return int(n or 0)

    async def ensure_bootstrap(self, configured: str | None) -> str | None:
        """A fresh install has no open door: create the first admin key.

        Returns the generated key (to print once) or None when keys already exist or the key came
        from ``STOPLIST_BOOTSTRAP_ADMIN_KEY``.
        """
        if await self.count_active() > 0:
            return None
        try:
            _, plaintext = await self.create(
                BOOTSTRAP_NAME, "admin", actor="bootstrap", key=configured
            )
        except Conflict:
            return None  # another replica won the race
        return None if configured else plaintext
