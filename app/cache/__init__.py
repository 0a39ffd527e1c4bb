"""The suppression cache: a full replica of the active suppressions, keyed by address.

Because it is a *full* replica, a miss means "not suppressed" and the pre-send check never runs SQL
while the cache is warm. Three implementations share one interface: Redis or Redis Cluster
(production, shared by every replica; ``redis``, ``cluster``) and an in-process dict (embedded).

Each value is ``"<version>|<json entries>"``. The version is the sum of the address's row revisions
(see ``app.models``), which only grows; writes carry it and a Lua script refuses to replace a newer
value with an older one, so a rebuild racing a write-through can never resurrect stale state.

A *ready marker* holds the generation of the last complete rebuild. The check reads it in the same
MGET as the addresses: if Redis was flushed or restarted empty the marker is gone, the check answers
from the database instead, and a rebuild is started. A cold cache is never read as "not suppressed".

``model`` holds the entries, their encoding and the interface; ``memory`` and ``redis`` the two
implementations. May import the standard library, orjson and redis only: nothing of the project.
"""

from app.cache.memory import MemoryCache
from app.cache.model import (
    CacheCold,
    CachedEntry,
    CacheUnavailable,
    Entries,
    SuppressionCache,
    decode_hits,
    encode,
    expiry_ms,
)
from app.cache.redis import REDIS_ERRORS, RedisCache

__all__ = [
    "REDIS_ERRORS",
    "CacheCold",
    "CacheUnavailable",
    "CachedEntry",
    "Entries",
    "MemoryCache",
    "RedisCache",
    "SuppressionCache",
    "decode_hits",
    "encode",
    "expiry_ms",
]
