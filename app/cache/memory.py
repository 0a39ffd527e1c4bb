"""The in-process replica of the embedded default (one process)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from app.cache.model import (
    CacheCold,
    CachedEntry,
    Entries,
)

log = logging.getLogger("app.cache")


class MemoryCache:
    """In-process replica for the embedded default (one process)."""

    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[int, Entries]] = {}
        self._generation: str | None = None
        self._locked = False

    async def get_many(self, addresses: Sequence[str]) -> list[Entries | None]:
        if self._generation is None:
            raise CacheCold("in-process cache not loaded")
        data = self._data
        out: list[Entries | None] = []
        for address in addresses:
            hit = data.get(address)
            out.append(hit[1] if hit is not None and hit[1] else None)
        return out

    async def put(self, address: str, version: int, entries: Sequence[CachedEntry]) -> None:
        current = self._data.get(address)
        if current is not None and current[0] > version:
            return
        if entries:
            self._data[address] = (version, tuple(entries))
        else:
            self._data[address] = (version, ())  # tombstone: keeps the version

    async def put_many(self, items: Iterable[tuple[str, int, Sequence[CachedEntry]]]) -> None:
        for address, version, entries in items:
            await self.put(address, version, entries)

    async def generation(self) -> str | None:
        return self._generation

    async def mark_ready(self, generation: str) -> None:
        self._generation = generation

    async def mark_cold(self) -> None:
        self._generation = None

    async def try_lock_rebuild(self, ttl_s: float) -> bool:
        if self._locked:
            return False
        self._locked = True
        return True

    async def unlock_rebuild(self) -> None:
        self._locked = False

    async def ping(self) -> None:
        return None

    async def clear(self) -> None:
        self._data.clear()
        self._generation = None

    async def close(self) -> None:
        return None
