"""Verifying, creating, revoking and listing keys.

A verified key is remembered in-process for ``STOPLIST_AUTH_CACHE_TTL_S`` seconds so the check path
does no SQL; a revoked key stops working on every replica within that time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from app.db import Database
from app.errors import Conflict, InvalidInput
from app.keys import repository
from app.keys.model import (
    ALL_SCOPES,
    BOOTSTRAP_NAME,
    KEY_RE,
    NAME_RE,
    KeyInfo,
    generate_key,
    hash_key,
)
from app.models import ApiKey, utcnow

log = logging.getLogger("app.keys")


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
        if not KEY_RE.match(presented):
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
        row = await repository.active_by_hash(self.db, digest)
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
            await repository.touch(self.db, key_id)
        except Exception as exc:  # last_used_at is informational
            log.debug("could not record key use: %s", exc)

    async def create(
        self, name: str, scope: str, *, actor: str, key: str | None = None
    ) -> tuple[KeyInfo, str]:
        if not NAME_RE.match(name):
            raise InvalidInput(f"key name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -")
        if scope not in ALL_SCOPES:
            raise InvalidInput(f"scope {scope!r}: one of {', '.join(ALL_SCOPES)}")
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
        await repository.insert(self.db, row, actor=actor)
        return KeyInfo(row.id, name, scope), plaintext

    async def revoke(self, name: str, *, actor: str) -> None:
        await repository.revoke(self.db, name, actor=actor)
        self._verified = {d: v for d, v in self._verified.items() if v[0].name != name}

    async def list(self) -> list[dict[str, Any]]:
        return await repository.listing(self.db)

    async def count_active(self) -> int:
        return await repository.count_active(self.db)

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
