"""Raw RESP exchanges on a redis-py pooled connection: send bytes we packed, read the replies.

redis-py's generic command packing costs ~1.5 µs a key for MGET and ~10 µs a key for EVALSHA; the
batch check and bulk writes send thousands of keys, so ``app.cache.redis`` packs those requests
itself and sends them here. This is the one place that uses redis-py below its client API
(``ConnectionPool.get_connection``/``release``, ``Connection.send_packed_command``/
``read_response``/``disconnect``), as redis-py 8.x has them (pinned in pyproject.toml);
:func:`problems` says what no longer matches, and a test runs it against the installed redis-py.
"""

from __future__ import annotations

import inspect
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, ConnectionPool


async def exchange(
    client: aioredis.Redis, packed: bytes, replies: int, *, raw: bool = False
) -> list[Any]:
    """Send ``packed`` (whole RESP commands) on one pooled connection and read ``replies``
    replies (undecoded when ``raw``); error replies come back as exception objects in the list."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed, check_health=False)
        if raw:
            return [await conn.read_response(disable_decoding=True) for _ in range(replies)]
        return [await conn.read_response() for _ in range(replies)]
    except BaseException:
        # A half-read reply must never reach the next user of this connection.
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


# The parameters each call above passes, by name; the pool must need no command name.
_EXPECTED: dict[str, tuple[Any, set[str]]] = {
    "get_connection": (ConnectionPool, set()),
    "release": (ConnectionPool, {"connection"}),
    "send_packed_command": (Connection, {"command", "check_health"}),
    "read_response": (Connection, {"disable_decoding"}),
    "disconnect": (Connection, set()),
}


def problems() -> list[str]:
    """What of the redis-py internals :func:`exchange` uses is missing or changed (empty: all
    there)."""
    found: list[str] = []
    for name, (owner, params) in _EXPECTED.items():
        method = getattr(owner, name, None)
        if method is None:
            found.append(f"redis-py: {owner.__name__}.{name} is gone")
            continue
        signature = inspect.signature(method)
        missing = params - set(signature.parameters)
        if missing:
            found.append(f"redis-py: {owner.__name__}.{name} lost {sorted(missing)}")
        required = {
            p.name
            for p in list(signature.parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        if required - params:
            found.append(
                f"redis-py: {owner.__name__}.{name} now requires {sorted(required - params)}"
            )
    return found
