"""Console imports in the database (table ``console_imports``): the process running an import
writes its progress every few seconds and its result at the end, so the page following it answers
the same from any replica behind a load balancer and after a restart. A job whose process died
(no progress written for ``STALE_S``) is shown as interrupted rather than running for ever."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, update

from app.db import DB_ERRORS, Database
from app.models import ConsoleImport, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0  # a running import writes how far it got this often
STALE_S = 60.0  # a running import not heard of for this long lost its process
KEEP_DAYS = 7  # finished imports' pages stay readable this long


@dataclass(slots=True, frozen=True)
class ImportJob:
    """What the job's page shows."""

    id: str
    actor: str
    size: int
    read: int
    state: str  # running | done | failed | interrupted
    summary: dict[str, Any] | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def percent(self) -> int:
        return 100 if self.done else min(99, self.read * 100 // max(self.size, 1))


def runner_name() -> str:
    """This process, as the job rows name it (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


class ImportJobs:
    """Reads and writes of ``console_imports``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.runner = runner_name()

    async def create(self, job_id: str, actor: str, size: int) -> None:
        """Record a new running job (and forget jobs older than ``KEEP_DAYS``)."""
        now = utcnow()
        async with self.db.write() as s:
            await s.execute(
                delete(ConsoleImport).where(ConsoleImport.created_at < now - timedelta(KEEP_DAYS))
            )
            s.add(
                ConsoleImport(
                    id=job_id,
                    actor=actor,
                    size=size,
                    read_bytes=0,
                    state="running",
                    runner=self.runner,
                    created_at=now,
                    updated_at=now,
                )
            )

    async def progress(self, job_id: str, read: int) -> None:
        """How far the job got; a failure to say so is logged, the import goes on."""
        try:
            await self._update(job_id, read_bytes=read, updated_at=utcnow())
        except DB_ERRORS as exc:
            log.warning("could not record the progress of import %s: %s", job_id, exc)

    async def finish(
        self, job_id: str, read: int, summary: dict[str, Any] | None, error: str | None
    ) -> None:
        """The job's result (``failed`` when ``error``)."""
        state = "failed" if error is not None else "done"
        try:
            await self._update(
                job_id,
                read_bytes=read,
                state=state,
                summary=summary,
                error=error,
                updated_at=utcnow(),
            )
        except DB_ERRORS as exc:
            log.error("could not record the result of import %s: %s", job_id, exc)

    async def get(self, job_id: str, actor: str) -> ImportJob | None:
        """The job, if ``actor`` started it."""
        async with self.db.read() as s:
            row = await s.get(ConsoleImport, job_id)
        if row is None or row.actor != actor:
            return None
        state = row.state
        if state == "running" and utcnow() - row.updated_at > timedelta(seconds=STALE_S):
            state = "interrupted"
        return ImportJob(row.id, row.actor, row.size, row.read_bytes, state, row.summary, row.error)

    async def _update(self, job_id: str, **values: Any) -> None:
        async with self.db.write() as s:
            await s.execute(update(ConsoleImport).where(ConsoleImport.id == job_id).values(values))


__all__ = ["HEARTBEAT_S", "STALE_S", "ImportJob", "ImportJobs", "runner_name"]
