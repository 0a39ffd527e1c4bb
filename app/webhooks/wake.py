"""Cross-process wake-ups of the delivery worker on PostgreSQL.

Triggers (migration 0011) send ``NOTIFY stoplist_outbox`` from every transaction that inserts
outbox rows or creates, re-enables or re-filters a subscription; PostgreSQL delivers it at commit
(never for a rolled-back transaction). The worker ``LISTEN``s on a connection of its own and runs
a round at once. A notification is a hint, not a queue: one lost while the connection was down
costs at most the worker's poll interval, never an event (the worker still polls, and runs a round
whenever it connects again). Not used behind PgBouncer in transaction mode, where a session's
``LISTEN`` does not survive the transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("app.webhooks")

CHANNEL: Final = "stoplist_outbox"
RECONNECT_S: Final = 5.0


class Listener:
    """``LISTEN`` on a connection of ``engine``'s; ``wake`` is called for every notification (on
    the loop's thread, so it may set an ``asyncio.Event``)."""

    def __init__(self, engine: AsyncEngine, wake: Callable[[], None]) -> None:
        self.engine = engine
        self.wake = wake
        self._conn: AsyncConnection | None = None
        self._pg: Any = None
        self._retry_at = 0.0

    @property
    def listening(self) -> bool:
        return self._pg is not None and not self._pg.is_closed()

    async def ensure(self) -> bool:
        """Listen, connecting again when the connection was lost (at most every
        ``RECONNECT_S``); whether it listens now."""
        if self.listening:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            return False
        self._retry_at = loop.time() + RECONNECT_S
        await self.close()
        try:
            self._conn = await self.engine.connect()
            self._pg = (await self._conn.get_raw_connection()).driver_connection
            await self._pg.add_listener(CHANNEL, self._notified)
        except Exception as exc:  # an edge: polling goes on without it
            log.warning("webhook worker: cannot LISTEN (polling instead): %s", exc)
            await self.close()
            return False
        self.wake()  # what was committed while nobody listened
        return True

    def _notified(self, *_: object) -> None:
        self.wake()

    async def close(self) -> None:
        pg, conn = self._pg, self._conn
        self._pg = self._conn = None
        if pg is not None and not pg.is_closed():
            with contextlib.suppress(Exception):
                await pg.remove_listener(CHANNEL, self._notified)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # never back to the pool with a LISTEN on it
            with contextlib.suppress(Exception):
                await conn.close()
