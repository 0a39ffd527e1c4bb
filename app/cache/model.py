"""What a cache holds and promises: entries, their encoding, the interface and its two errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import orjson

TOMBSTONE_TTL_MS = 24 * 3600 * 1000


# Part of every key: a change of the value format makes a deployed cache cold (and rebuilt),
# never misread.
CACHE_FORMAT = 2


class CachedEntry(NamedTuple):
    """One active suppression of an address, as the check answers it.

    Times are kept both as epoch seconds (to decide) and as the ISO strings the API returns, so a
    hit costs no date formatting on the hot path. A named tuple, not a dataclass: the batch check
    decodes one per suppressed address, and a frozen dataclass's ``__init__`` cost three times as much.
    """

    scope: str
    outcome: str
    reason: str
    since: str  # ISO 8601 UTC of first_seen
    expires: float | None  # epoch seconds, None = permanent
    expires_at: str | None  # the same instant, ISO 8601 UTC
    verified: bool
    source: str

    def as_list(self) -> list[object]:
        return list(self)


Entries = tuple[CachedEntry, ...]


def encode(version: int, entries: Sequence[CachedEntry]) -> bytes:
    return b"%d|" % version + orjson.dumps([e.as_list() for e in entries])


def decode(value: bytes) -> Entries:
    """The entries of an ``encode``d value; TypeError or ValueError when it is not one."""
    _, _, body = value.partition(b"|")
    return tuple(map(CachedEntry._make, orjson.loads(body)))


def expiry_ms(entries: Sequence[CachedEntry]) -> int:
    """When every entry expires, the key can expire with the last of them (0 = never)."""
    if not entries or any(e.expires is None for e in entries):
        return 0
    return int(max(e.expires for e in entries if e.expires is not None) * 1000) + 1000


class CacheUnavailable(Exception):
    """The cache cannot be reached: answer from the database."""


class CacheCold(Exception):
    """The cache is reachable but not a complete replica (no ready marker): answer from the database."""


class SuppressionCache(Protocol):
    kind: str

    async def get_many(self, addresses: Sequence[str]) -> list[Entries | None]:
        """Entries per address (None = not suppressed); raises CacheUnavailable or CacheCold."""
        ...

    async def put(self, address: str, version: int, entries: Sequence[CachedEntry]) -> None: ...

    async def put_many(self, items: Iterable[tuple[str, int, Sequence[CachedEntry]]]) -> None: ...

    async def generation(self) -> str | None:
        """The ready marker, or None when the cache is cold."""
        ...

    async def mark_ready(self, generation: str) -> None: ...

    async def mark_cold(self) -> None: ...

    async def try_lock_rebuild(self, ttl_s: float) -> bool: ...

    async def unlock_rebuild(self) -> None: ...

    async def ping(self) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...
