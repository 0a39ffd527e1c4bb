"""The Redis replica, shared by every process of the service: values carry versions and a Lua
script refuses to replace a newer value with an older one."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.cache import resp
from app.cache.model import (
    CACHE_FORMAT,
    TOMBSTONE_TTL_MS,
    CacheCold,
    CachedEntry,
    CacheUnavailable,
    Entries,
    decode_hits,
    encode,
    expiry_ms,
)
from app.cache.resp import exchange

log = logging.getLogger("app.cache")


# What a Redis call can raise when Redis is unreachable. uvloop raises RuntimeError ("unable to
# perform operation on <TCPTransport closed=True>") when a pooled connection's peer reset it.
REDIS_ERRORS: Final = (RedisError, OSError, RuntimeError)


@contextmanager
def _unavailable() -> Iterator[None]:
    """Every Redis failure leaves RedisCache as CacheUnavailable (the interface's one error)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise CacheUnavailable(str(exc)) from exc


# Compare-and-set for many keys per call: a newer version is never replaced by an older one.
# KEYS = address keys; ARGV[i] = "<expire-at ms, 0 = never>:<encode() value>" for KEYS[i].
_PUT_MANY_LUA = """
local written = 0
for i, key in ipairs(KEYS) do
  local expire, value = string.match(ARGV[i], '^(%d+):(.*)$')
  local version = tonumber(string.match(value, '^(%d+)|'))
  local cur = redis.call('GET', key)
  local cv = cur and tonumber(string.match(cur, '^(%d+)|'))
  if not (cv and cv > version) then
    redis.call('SET', key, value)
    if expire ~= '0' then redis.call('PEXPIREAT', key, expire) end
    written = written + 1
  end
end
return written
"""


_PUT_MANY_SHA = hashlib.sha1(_PUT_MANY_LUA.encode()).hexdigest().encode()  # noqa: S324 - script id


PUT_CHUNK = 1000


# The ready marker is set only if the rebuild's sentinel (written when it began) is still there:
# a Redis that restarted empty or was flushed during the rebuild has lost the entries written
# before, and marking it ready would make their addresses read as "not suppressed".
# Nor if any process marked the cache cold after the rebuild began (the cold epoch moved): a
# writer whose write-through failed marks it cold when it can reach Redis again, and a rebuild
# that read those addresses before the write must not vouch for them.
# KEYS = ready marker, sentinel, cold epoch; ARGV = generation, this rebuild's token, its epoch.
_MARK_READY_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[2] and (redis.call('GET', KEYS[3]) or '0') == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


SENTINEL_TTL_MS = 24 * 3600 * 1000


# The token of the rebuild running in this task (set by try_lock_rebuild, read by mark_ready):
# per task, so two rebuilds in one process never vouch for each other.
_REBUILD_TOKEN: ContextVar[str | None] = ContextVar("stoplist_rebuild_token", default=None)


_REBUILD_EPOCH: ContextVar[str] = ContextVar("stoplist_rebuild_epoch", default="0")


class RedisCommands:
    """What ``RedisCache`` and ``RedisClusterCache`` do alike through their redis-py client:
    fail fast after a failure (``_gate``/``_answered``), release the rebuild lock, ping, clear the
    prefix, close."""

    _client: Any
    _lock_key: str
    _lock_token: str
    _prefix: str
    _timeout_s: float
    retry_after_s: float
    _skip_until: float  # monotonic; 0 = Redis answered last time

    def _gate(self) -> None:
        """Fail fast while Redis was unreachable moments ago; else let this call through (as the
        one probe, when it was)."""
        if not self._skip_until:
            return
        now = time.monotonic()
        if now < self._skip_until:
            raise CacheUnavailable("unreachable moments ago; not retried yet")
        # This call probes; calls arriving meanwhile fail fast instead of piling up.
        self._skip_until = now + self._timeout_s + self.retry_after_s

    def _answered(self, exc: BaseException | None = None) -> None:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            self._skip_until = time.monotonic() + self.retry_after_s
        else:  # it answered (maybe with an error such as NOSCRIPT): reachable
            self._skip_until = 0.0

    async def unlock_rebuild(self) -> None:
        with _unavailable():
            value = cast(bytes | None, await self._client.get(self._lock_key))
            if value is not None and value.decode() == self._lock_token:
                await self._client.delete(self._lock_key)

    async def ping(self) -> None:
        with _unavailable():
            await self._client.ping()

    async def clear(self) -> None:
        """Delete every key under the prefix, on every primary of a cluster (tests and `cache
        rebuild --from-scratch`)."""
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=self._prefix + "*", count=10_000):
            batch.append(key)
            if len(batch) >= 5_000:
                await self._client.unlink(*batch)
                batch.clear()
        if batch:
            await self._client.unlink(*batch)

    async def close(self) -> None:
        await self._client.aclose()


class RedisCache(RedisCommands):
    """Redis replica shared by every API/SMTP replica.

    Every call is bounded by ``timeout_s`` (socket connect and read). After a connection failure
    or a timeout, reads and writes skip Redis for ``retry_after_s`` (raising CacheUnavailable at
    once, so the check answers from the database without waiting) and then one call probes it
    again: with Redis hung rather than down, only the probe pays the timeout, not every check.
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "stoplist:", timeout_s: float = 0.5) -> None:
        changed = resp.problems()
        if changed:
            raise RuntimeError("the Redis cache cannot run on this redis-py: " + "; ".join(changed))
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._prefix = prefix
        self._key_prefix = f"{prefix}v{CACHE_FORMAT}:s:"
        self._key_prefix_bytes = self._key_prefix.encode()
        self._ready_key = f"{prefix}v{CACHE_FORMAT}:meta:ready"
        self._ready_bytes = self._ready_key.encode()
        self._lock_key = f"{prefix}v{CACHE_FORMAT}:meta:rebuild-lock"
        self._epoch_key = f"{prefix}v{CACHE_FORMAT}:meta:cold-epoch"
        self._lock_token = uuid.uuid4().hex
        # One sentinel per process (a new rebuild here overwrites it, so failed attempts to take
        # the lock leave no litter); its value is the rebuild's own token.
        self._sentinel_key = f"{prefix}v{CACHE_FORMAT}:meta:rebuilding:{self._lock_token}"
        self._script_loaded = False
        self._timeout_s = timeout_s
        self.retry_after_s = max(1.0, 2 * timeout_s)
        self._skip_until = 0.0  # monotonic; 0 = Redis answered last time

    def key(self, address: str) -> str:
        return self._key_prefix + address

    async def get_many(self, addresses: Sequence[str]) -> list[Entries | None]:
        self._gate()
        try:
            values = await self._mget(addresses)
        except REDIS_ERRORS as exc:
            self._answered(exc)
            raise CacheUnavailable(str(exc)) from exc
        self._answered()
        if values[0] is None:
            raise CacheCold("ready marker missing")
        try:
            return decode_hits(values[1:])
        except (TypeError, ValueError) as exc:
            raise CacheCold(f"undecodable cache value: {exc}") from exc

    async def _mget(self, addresses: Sequence[str]) -> list[bytes | None]:
        """MGET of the ready marker and every address, in one round trip.

        redis-py's generic command packing costs ~1.5 µs a key; the pre-send batch check sends
        thousands, so the RESP request is built here (same bytes on the wire) and sent by
        :func:`app.cache.resp.exchange`.
        """
        head = b"*%d\r\n$4\r\nMGET\r\n$%d\r\n%b\r\n" % (
            len(addresses) + 2,
            len(self._ready_bytes),
            self._ready_bytes,
        )
        (values,) = await exchange(self._client, head + self._bulk_keys(addresses), 1)
        return cast(list[bytes | None], values)

    def _bulk_keys(self, addresses: Sequence[str]) -> bytes:
        """The keys of ``addresses`` as RESP bulk strings. Built as one ``str`` and encoded
        once (half the cost of a bytes format per key) when every character is ASCII, where
        characters and bytes count alike; per key otherwise."""
        prefix, n = self._key_prefix, len(self._key_prefix)
        text = "".join([f"${len(a) + n}\r\n{prefix}{a}\r\n" for a in addresses])
        if text.isascii():
            return text.encode()
        parts = []
        for address in addresses:
            key = self._key_prefix_bytes + address.encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(key), key))
        return b"".join(parts)

    async def put(self, address: str, version: int, entries: Sequence[CachedEntry]) -> None:
        await self.put_many([(address, version, entries)])

    async def put_many(self, items: Iterable[tuple[str, int, Sequence[CachedEntry]]]) -> None:
        """Versioned writes, one EVALSHA per 1,000 keys, all in one round trip.

        The RESP is built here (as in ``_mget``): redis-py's generic packing costs ~10 µs a key,
        which bulk imports and rebuilds of millions of keys would feel.
        """
        now_ms = _now_ms()
        payload: list[bytes] = []
        calls = 0
        keys: list[bytes] = []
        args: list[bytes] = []

        def flush() -> None:
            nonlocal calls
            count = len(keys)
            payload.append(
                b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$%d\r\n%d\r\n"
                % (3 + 2 * count, _PUT_MANY_SHA, len(str(count)), count)
            )
            payload.extend(b"$%d\r\n%b\r\n" % (len(v), v) for v in keys)
            payload.extend(b"$%d\r\n%b\r\n" % (len(v), v) for v in args)
            calls += 1
            keys.clear()
            args.clear()

        prefix = self._key_prefix_bytes
        for address, version, entries in items:
            # A tombstone keeps the version so a slower, older write cannot resurrect.
            expire = expiry_ms(entries) if entries else now_ms + TOMBSTONE_TTL_MS
            keys.append(prefix + address.encode())
            args.append(b"%d:%b" % (expire, encode(version, entries)))
            if len(keys) == PUT_CHUNK:
                flush()
        if keys:
            flush()
        if not calls:
            return
        # Not gated (see _gate): a write skipped while Redis is in fact back would leave the
        # replica without a committed change; a write is always tried.
        try:
            if not self._script_loaded:
                await self._client.script_load(_PUT_MANY_LUA)
            await self._send(b"".join(payload), calls)
        except REDIS_ERRORS as exc:
            if "NOSCRIPT" in str(exc):  # Redis restarted or SCRIPT FLUSH: load and retry once
                self._script_loaded = False
                try:
                    await self._client.script_load(_PUT_MANY_LUA)
                    await self._send(b"".join(payload), calls)
                except REDIS_ERRORS as again:
                    self._answered(again)
                    raise CacheUnavailable(str(again)) from again
                self._script_loaded = True
                self._answered()
                return
            self._answered(exc)
            raise CacheUnavailable(str(exc)) from exc
        self._script_loaded = True
        self._answered()

    async def _send(self, packed: bytes, replies: int) -> None:
        errors = [
            r
            for r in await exchange(self._client, packed, replies, raw=True)
            if isinstance(r, Exception)
        ]
        if errors:
            raise errors[0]

    async def generation(self) -> str | None:
        try:
            value = cast(bytes | None, await self._client.get(self._ready_key))
        except REDIS_ERRORS as exc:
            raise CacheUnavailable(str(exc)) from exc
        return value.decode() if value is not None else None

    async def mark_ready(self, generation: str) -> None:
        """Set the ready marker, unless Redis lost data since this task's rebuild began (see
        ``try_lock_rebuild``): then CacheUnavailable, and the cache stays cold (the next check
        answers from the database and starts a new rebuild)."""
        token = _REBUILD_TOKEN.get()
        with _unavailable():
            if token is None:  # not a rebuild begun with try_lock_rebuild in this task
                await self._client.set(self._ready_key, generation)
                return
            marked = await self._client.eval(
                _MARK_READY_LUA,
                3,
                self._ready_key,
                self._sentinel_key,
                self._epoch_key,
                generation,
                token,
                _REBUILD_EPOCH.get(),
            )
        _REBUILD_TOKEN.set(None)
        if not marked:
            raise CacheUnavailable(
                "the cache was marked cold or lost data during the rebuild: not marked ready"
            )

    async def mark_cold(self) -> None:
        with _unavailable():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._ready_key)
            pipe.incr(self._epoch_key)
            await pipe.execute()

    async def try_lock_rebuild(self, ttl_s: float) -> bool:
        """Take the rebuild lock, and write this rebuild's sentinel (also when the lock is held
        elsewhere: a forced rebuild goes on without it)."""
        token = uuid.uuid4().hex
        _REBUILD_TOKEN.set(token)
        with _unavailable():
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._lock_key, self._lock_token, nx=True, px=int(ttl_s * 1000))
            pipe.set(self._sentinel_key, token, px=SENTINEL_TTL_MS)
            pipe.get(self._epoch_key)
            got, _, epoch = await pipe.execute()
        _REBUILD_EPOCH.set(epoch.decode() if epoch is not None else "0")
        return bool(got)


def _now_ms() -> int:
    return int(time.time() * 1000)
