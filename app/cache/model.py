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
_FIELDS = len(CachedEntry._fields)


def encode(version: int, entries: Sequence[CachedEntry]) -> bytes:
    return b"%d|" % version + orjson.dumps([e.as_list() for e in entries])


def decode_hits(values: Sequence[bytes | None]) -> list[Entries | None]:
    """The entries of each ``encode``d value (None for None and for a value with no entries).
    The present ones are parsed by one ``orjson.loads`` of their bodies joined into one array: a
    batch check decodes hundreds, and one call per value cost a fifth of its CPU (py-spy).
    TypeError or ValueError when a value is not an ``encode``d one."""
    bodies = [value[value.index(b"|") + 1 :] for value in values if value is not None]
    if not bodies:
        return [None] * len(values)
    decoded = orjson.loads(b"[" + b",".join(bodies) + b"]")
    if len(decoded) != len(bodies):  # a body that was not one JSON value
        raise ValueError(f"{len(bodies)} values decoded as {len(decoded)}")
    entries = iter([_entries(e) for e in decoded])
    return [None if value is None else next(entries) for value in values]


_new = tuple.__new__  # CachedEntry._make without its Python-level call


def _entries(decoded: list[list[object]]) -> Entries | None:
    if len(decoded) == 1:  # nearly always: one suppression per address
        (one,) = decoded
        if len(one) != _FIELDS:
            raise ValueError(f"an entry of {len(one)} fields")
        return (_new(CachedEntry, one),)
    if any(len(e) != _FIELDS for e in decoded):
        raise ValueError("an entry of the wrong size")
    return tuple([_new(CachedEntry, e) for e in decoded]) or None


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
