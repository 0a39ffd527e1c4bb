"""What the SMTP sink talks to: store (before the 250, in group commits), then hand over for
processing (on this loop, or in a child process)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from app.container import Services
from app.db import Database
from app.intake.group_commit import GroupCommit
from app.intake.parse_pool import ParsingPool
from app.intake.processor import Applier, IntakeProcessor, policy_applier, policy_batch_applier
from app.intake.store import IncomingMessage, IntakeStore, StoredMessage, StoreResult

log = logging.getLogger("app.intake")


class ProcessingChild(Protocol):
    """The handle on a processing process of its own (``app.intake.child.ProcessorChild``)."""

    async def start(self) -> None: ...

    def wake(self) -> None: ...

    async def close(self) -> None: ...


class Intake:
    """What the SMTP sink talks to: store (before the 250, in group commits), then hand over for
    processing."""

    def __init__(
        self,
        services: Services,
        *,
        applier: Applier | None = None,
        pool: ParsingPool | None = None,
        child: ProcessingChild | None = None,
    ) -> None:
        """``child``: processing runs in that process (``app.intake.child.open_intake`` makes
        one when the settings ask for it); without one it runs on this loop."""
        settings = services.settings
        self.settings = settings
        self.child = child
        self.store = IntakeStore(services.db)
        self.pool = pool or ParsingPool(
            workers=settings.parse_workers,
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_mb,
            inline_max_bytes=settings.parse_inline_max_bytes,
        )
        self._owns_pool = pool is None
        sink_store = self.store
        own_database: Callable[[], Database] | None = None
        self._sink_db: Database | None = None
        if services.db.dialect != "sqlite":  # SQLite: one writer per process, one engine only
            # Engines of their own (same database) for storing and for processing, so neither
            # waits for the other's connections. Their callers retry, so no pre-ping.
            self._sink_db = Database(settings, pool_size=2, pre_ping=False)
            sink_store = IntakeStore(
                self._sink_db,
                instance=self.store.instance,
                store_timeout_s=settings.smtp_storage_timeout_s,
            )
            own_database = partial(Database, settings, pre_ping=False)
        self.processor = IntakeProcessor(
            settings,
            self.store,
            self.pool,
            applier or policy_applier(services),
            batch_applier=None if applier is not None else policy_batch_applier(services),
            own_database=own_database,
        )
        self.committer = GroupCommit(sink_store, self.processor.stats, self._stored)

    async def start(self) -> None:
        """Start processing: in the child process, or on this loop."""
        if self.child is not None:
            await self.child.start()
        else:
            await self.processor.start()

    def _stored(self, msg: IncomingMessage, result: StoreResult) -> None:
        if result.id is None:
            # A redelivery. If the first copy's commit was ambiguous (committed, reply lost), its
            # row was never handed over: sweep now rather than at the next periodic sweep.
            if self.processor.running:
                self.processor.wake()
            elif self.child is not None:
                self.child.wake()
            return
        if self.processor.running:
            self.processor.submit(
                StoredMessage(result.id, msg.raw, msg.mail_from, msg.rcpt_to, msg.peer)
            )
        elif self.child is not None:
            self.child.wake()

    async def close(self) -> None:
        await self.committer.close()
        await self.processor.stop()
        if self.child is not None:
            await self.child.close()
        if self._sink_db is not None:
            await self._sink_db.dispose()
        stats = self.processor.stats.as_dict()
        log.info(  # a normal shutdown: nothing for a person to act on
            "intake stats: %s",
            " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
            ),
        )
        if self._owns_pool:
            await asyncio.to_thread(self.pool.close)

    async def accept(
        self, *, mail_from: str, rcpt_to: Sequence[str], peer: str | None, raw: bytes
    ) -> StoreResult:
        """Store one message; returns once the commit that holds it has returned."""
        return await self.committer.store_message(
            IncomingMessage(mail_from, list(rcpt_to), peer, raw)
        )
