"""The Redis replica on a Redis Cluster (``redis+cluster://host:port,…``), via redis-py's
``RedisCluster``. An address lives in bucket ``crc32(address) % BUCKETS`` as
``<prefix>v2:{<bucket>}:s:<address>``; each bucket has its own ready marker, cold epoch and rebuild
sentinel under the same hash tag, so every multi-key call stays in one slot. A batch check is one
MGET per bucket (ready marker first), pipelined: one round trip per node. docs/deployment.md has
the whole scheme."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, cast

from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
from app.cache.redis import (
    _MARK_READY_LUA,
    _PUT_MANY_LUA,
    PUT_CHUNK,
    REDIS_ERRORS,
    SENTINEL_TTL_MS,
    RedisCommands,
    _unavailable,
)

log = logging.getLogger("app.cache")

BUCKETS = 64

CLUSTER_SCHEME = "redis+cluster://"

# DEL of the ready marker and INCR of the cold epoch, atomically (one slot: one bucket).
_MARK_COLD_LUA = "redis.call('DEL', KEYS[1]) return redis.call('INCR', KEYS[2])"

# Per task, as in app.cache.redis: this rebuild's token and the cold epoch of each bucket it saw.
_REBUILD_TOKEN: ContextVar[str | None] = ContextVar("stoplist_cluster_rebuild_token", default=None)
_REBUILD_EPOCHS: ContextVar[tuple[str, ...]] = ContextVar(
    "stoplist_cluster_rebuild_epochs", default=()
)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``redis+cluster://[user:password@]host:port,host:port`` -> seed nodes, user, password."""
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"must start with {CLUSTER_SCHEME}")
    rest = url[len(CLUSTER_SCHEME) :].split("/", 1)[0].split("?", 1)[0]
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        name, sep, secret = auth.partition(":")
        user, password = (name or None), (secret if sep else None)
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{part!r}: expected host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, user, password


async def _exchange(node: ClusterNode, packed: bytes, replies: int) -> list[Any]:
    """Send ``packed`` on one of ``node``'s connections and read ``replies`` replies."""
    conn = node.acquire_connection()
    try:
        await conn.send_packed_command(packed, check_health=False)
        return [await conn.read_response() for _ in range(replies)]
    except BaseException:
        await conn.disconnect()  # a half-read reply must never reach the next user
        raise
    finally:
        node.release(conn)


def problems() -> list[str]:
    """What of redis-py's cluster internals ``_exchange`` and ``_mget_buckets`` use is gone."""
    wanted = [
        (ClusterNode, "acquire_connection"),
        (ClusterNode, "release"),
        (NodesManager, "get_node_from_slot"),
        (NodesManager, "initialize"),
    ]
    return [f"redis-py: {o.__name__}.{n} is gone" for o, n in wanted if not hasattr(o, n)]


def bucket_of(address: str) -> int:
    return zlib.crc32(address.encode()) % BUCKETS


class RedisClusterCache(RedisCommands):
    """The suppression replica on a Redis Cluster; same contract as ``RedisCache``.

    Fails fast like ``RedisCache``: after a connection failure or a timeout, calls skip the
    cluster for ``retry_after_s`` and the check answers from the database. redis-py's own retries
    are off (one attempt, bounded by ``timeout_s``): a check must not wait out a failover.
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "stoplist:", timeout_s: float = 0.5) -> None:
        changed = problems()
        if changed:
            raise RuntimeError(
                "the Redis Cluster cache cannot run on this redis-py: " + "; ".join(changed)
            )
        if "{" in prefix or "}" in prefix:
            raise ValueError("a Redis Cluster key prefix must not contain { or }")
        self._seeds, self._user, self._password = parse_cluster_url(url)
        self._timeout_s = timeout_s
        self._client = self._connect()
        self._prefix = prefix
        base = f"{prefix}v{CACHE_FORMAT}:"
        self._key_prefixes = [f"{base}{{{b}}}:s:" for b in range(BUCKETS)]
        self._ready = [f"{base}{{{b}}}:meta:ready" for b in range(BUCKETS)]
        self._epochs = [f"{base}{{{b}}}:meta:cold-epoch" for b in range(BUCKETS)]
        self._lock_token = uuid.uuid4().hex
        self._sentinels = [
            f"{base}{{{b}}}:meta:rebuilding:{self._lock_token}" for b in range(BUCKETS)
        ]
        self._lock_key = f"{base}meta:rebuild-lock"
        self._key_prefix_bytes = [k.encode() for k in self._key_prefixes]
        self._ready_bytes = [k.encode() for k in self._ready]
        self._slots = [key_slot(k) for k in self._ready_bytes]
        self._timeout_s = timeout_s
        self.retry_after_s = max(1.0, 2 * timeout_s)
        self._skip_until = 0.0
        self._refresh_slots = False

    def _connect(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self._seeds],
            username=self._user,
            password=self._password,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def key(self, address: str) -> str:
        return self._key_prefixes[bucket_of(address)] + address

    async def _pipeline(self, calls: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Commands grouped by node and sent in one round trip per node; the first error
        reply is raised."""
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call)
        replies: list[Any] = await pipe.execute(raise_on_error=True)
        return replies

    async def get_many(self, addresses: Sequence[str]) -> list[Entries | None]:
        self._gate()
        groups: dict[int, list[int]] = {}
        for i, address in enumerate(addresses):
            groups.setdefault(bucket_of(address), []).append(i)
        try:
            replies = await self._mget_buckets(addresses, groups)
        except REDIS_ERRORS as exc:
            self._answered(exc)
            raise CacheUnavailable(str(exc)) from exc
        self._answered()
        out: list[Entries | None] = [None] * len(addresses)
        try:
            for b, values in replies.items():
                if values[0] is None:
                    raise CacheCold(f"ready marker of bucket {b} missing")
                for i, entries in zip(groups[b], decode_hits(values[1:]), strict=True):
                    out[i] = entries
        except (TypeError, ValueError) as exc:
            raise CacheCold(f"undecodable cache value: {exc}") from exc
        return out

    async def _mget_buckets(
        self, addresses: Sequence[str], groups: dict[int, list[int]]
    ) -> dict[int, list[bytes | None]]:
        """One MGET per bucket, packed here (redis-py's generic packing and per-key slot check
        cost ~30 µs a key) and sent as one request per node, the nodes at once. A redirection or
        an unreachable node fails this call (the check uses the database)."""
        if self._refresh_slots:
            # After a failure the slots may have moved (a replica took over): a new client
            # reads the slot map afresh, from the next seed first (redis-py asks its first
            # seed for the command table and fails while that one is down).
            self._seeds = self._seeds[1:] + self._seeds[:1]
            stale, self._client = self._client, self._connect()
            self._refresh_slots = False
            with contextlib.suppress(*REDIS_ERRORS):
                await stale.aclose()
        try:
            await self._client.initialize()
        except REDIS_ERRORS:
            self._refresh_slots = True
            raise
        manager = self._client.nodes_manager
        by_node: dict[str, tuple[Any, list[int], list[bytes]]] = {}
        for b, indices in groups.items():
            node = manager.get_node_from_slot(self._slots[b])
            entry = by_node.setdefault(node.name, (node, [], []))
            prefix, ready = self._key_prefix_bytes[b], self._ready_bytes[b]
            entry[1].append(b)
            entry[2].append(
                b"*%d\r\n$4\r\nMGET\r\n$%d\r\n%b\r\n" % (len(indices) + 2, len(ready), ready)
            )
            for i in indices:
                key = prefix + addresses[i].encode()
                entry[2].append(b"$%d\r\n%b\r\n" % (len(key), key))
        try:
            results = await asyncio.gather(
                *(
                    _exchange(node, b"".join(packed), len(bs))
                    for node, bs, packed in by_node.values()
                )
            )
        except (
            MovedError,
            AskError,
            ClusterDownError,
            RedisConnectionError,
            RedisTimeoutError,
            OSError,
        ):
            self._refresh_slots = True
            raise
        out: dict[int, list[bytes | None]] = {}
        for (_, bs, _), replies in zip(by_node.values(), results, strict=True):
            out.update(zip(bs, replies, strict=True))
        return out

    async def put(self, address: str, version: int, entries: Sequence[CachedEntry]) -> None:
        await self.put_many([(address, version, entries)])

    async def put_many(self, items: Iterable[tuple[str, int, Sequence[CachedEntry]]]) -> None:
        """Versioned writes (the script of ``RedisCache``), one script call per bucket and
        1,000 keys, pipelined per node. Never gated: a committed change is always tried."""
        now_ms = int(time.time() * 1000)
        groups: dict[int, tuple[list[str], list[bytes]]] = {}
        for address, version, entries in items:
            expire = expiry_ms(entries) if entries else now_ms + TOMBSTONE_TTL_MS
            keys, args = groups.setdefault(bucket_of(address), ([], []))
            keys.append(self.key(address))
            args.append(b"%d:%b" % (expire, encode(version, entries)))
        calls: list[tuple[Any, ...]] = []
        for keys, args in groups.values():
            for start in range(0, len(keys), PUT_CHUNK):
                chunk = keys[start : start + PUT_CHUNK]
                calls.append(
                    ("EVAL", _PUT_MANY_LUA, len(chunk), *chunk, *args[start : start + PUT_CHUNK])
                )
        if not calls:
            return
        try:
            await self._pipeline(calls)
        except REDIS_ERRORS as exc:
            self._answered(exc)
            raise CacheUnavailable(str(exc)) from exc
        self._answered()

    async def generation(self) -> str | None:
        """The generation every bucket was marked ready with; None when any bucket is cold."""
        with _unavailable():
            values = await self._pipeline(("GET", k) for k in self._ready)
        if any(v is None for v in values):
            return None
        return cast(bytes, values[0]).decode()

    async def mark_ready(self, generation: str) -> None:
        """Mark every bucket ready, each only if its sentinel and cold epoch are still those this
        task's rebuild began with (as ``RedisCache.mark_ready``); buckets that fail stay cold."""
        token = _REBUILD_TOKEN.get()
        with _unavailable():
            if token is None:
                await self._pipeline(("SET", k, generation) for k in self._ready)
                return
            epochs = _REBUILD_EPOCHS.get()
            marked = await self._pipeline(
                (
                    "EVAL",
                    _MARK_READY_LUA,
                    3,
                    self._ready[b],
                    self._sentinels[b],
                    self._epochs[b],
                    generation,
                    token,
                    epochs[b] if b < len(epochs) else "0",
                )
                for b in range(BUCKETS)
            )
        _REBUILD_TOKEN.set(None)
        cold = sum(1 for m in marked if not m)
        if cold:
            raise CacheUnavailable(
                f"{cold} buckets were marked cold or lost data during the rebuild: not ready"
            )

    async def mark_cold(self) -> None:
        with _unavailable():
            await self._pipeline(
                ("EVAL", _MARK_COLD_LUA, 2, self._ready[b], self._epochs[b]) for b in range(BUCKETS)
            )

    async def try_lock_rebuild(self, ttl_s: float) -> bool:
        token = uuid.uuid4().hex
        _REBUILD_TOKEN.set(token)
        with _unavailable():
            got = await self._client.set(
                self._lock_key, self._lock_token, nx=True, px=int(ttl_s * 1000)
            )
            calls: list[tuple[Any, ...]] = [
                ("SET", k, token, "PX", SENTINEL_TTL_MS) for k in self._sentinels
            ]
            calls += [("GET", k) for k in self._epochs]
            replies = await self._pipeline(calls)
        epochs = replies[BUCKETS:]
        _REBUILD_EPOCHS.set(tuple(e.decode() if e is not None else "0" for e in epochs))
        return bool(got)
