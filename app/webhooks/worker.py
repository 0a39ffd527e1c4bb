"""The delivery worker (in ``stoplist serve`` and alone as ``stoplist deliver``).

Each round: sequence newly committed outbox rows (feed positions, one delivery per interested
subscription), claim due deliveries (``SKIP LOCKED`` on PostgreSQL, so replicas share them; one
in flight per subscription and address), post them signed, and record the outcomes in one
transaction. A failure is retried after the next delay of ``STOPLIST_WEBHOOK_RETRY_DELAYS_S``
(±20 % jitter, or the receiver's ``Retry-After`` when longer); after the last one the delivery is
dead (visible, replayable). Nothing is marked sent before the receiver answered 2xx, so a crash
at any point means a repeat, never a loss (at-least-once; ``webhook-id`` is the idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge

from app.db import DB_ERRORS, Database
from app.models import utcnow
from app.webhooks import repository
from app.webhooks.repository import Claimed, Outcome
from app.webhooks.sender import Attempt, Sender
from app.webhooks.service import WebhookService, event_body, message_id
from app.webhooks.signing import SecretError

log = logging.getLogger("app.webhooks")

SENT = Counter("stoplist_webhook_sent_total", "Webhook deliveries a receiver accepted (2xx)")
FAILED = Counter("stoplist_webhook_failed_total", "Webhook attempts that failed (to be retried)")
DEAD = Counter("stoplist_webhook_dead_lettered_total", "Webhook deliveries dead-lettered")
QUEUED = Gauge("stoplist_webhook_queued", "Webhook deliveries pending")
DEAD_NOW = Gauge("stoplist_webhook_dead", "Webhook deliveries dead-lettered (kept until deleted)")
OLDEST = Gauge("stoplist_webhook_oldest_pending_seconds", "Age of the oldest pending delivery")

SEQUENCE_BATCH = 1000
MAX_RETRY_AFTER_S = 6 * 3600.0
JITTER = 0.2


def next_delay(delays: list[float], attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones, or None: dead."""
    if attempts > len(delays):
        return None
    delay = delays[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


class DeliveryWorker:
    """Sequences, sends and records; ``run`` until cancelled."""

    def __init__(self, db: Database, service: WebhookService, *, idle_s: float = 0.1) -> None:
        self.db = db
        self.service = service
        self.settings = service.settings
        self.sender = Sender(
            timeout_s=self.settings.webhook_timeout_s,
            allowed=service.allowed,
            concurrency=self.settings.webhook_concurrency,
        )
        self.idle_s = idle_s
        self._last_stats = 0.0
        self._last_purge = 0.0

        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background on the current loop (``stop`` ends it)."""
        self._task = asyncio.create_task(self.run(), name="webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sender.close()

    async def run(self) -> None:
        while True:
            try:
                busy = await self.step()
                await self._upkeep()
            except DB_ERRORS as exc:
                log.warning("webhook worker: database unreachable: %s", exc)
                busy = False
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("webhook worker round failed")
                busy = False
                await asyncio.sleep(1.0)
            if not busy:
                await asyncio.sleep(self.idle_s)

    async def sequence(self) -> int:
        async with self.db.write() as s:
            return await repository.sequence(s, self.db.dialect, utcnow(), SEQUENCE_BATCH)

    async def step(self) -> bool:
        """One round; whether there was anything to do."""
        sequenced = await self.sequence()
        now = utcnow()
        lease = now + timedelta(seconds=2 * self.settings.webhook_timeout_s + 30)
        async with self.db.write() as s:
            claimed = await repository.claim(
                s, self.db.dialect, now, lease, self.settings.webhook_concurrency
            )
        if not claimed:
            return sequenced > 0
        attempts = await asyncio.gather(*(self._send(c) for c in claimed))
        outcomes = [self._outcome(c, a) for c, a in zip(claimed, attempts, strict=True)]
        done = utcnow()
        before = done - timedelta(hours=self.settings.webhook_disable_after_h)
        async with self.db.write() as s:
            disabled = await repository.finish(s, outcomes, done, before)
        for sub in disabled:
            log.warning(
                "webhook subscription %s disabled: every attempt failed since %s", sub, before
            )
        return True

    async def _send(self, c: Claimed) -> Attempt:
        try:
            secrets = self.service.secrets_of(
                c.secret, c.previous_secret, c.previous_secret_until, c.subscription_id
            )
        except SecretError as exc:
            return Attempt(False, error=str(exc))
        body = event_body(c.type, c.created_at, c.data)
        return await self.sender.post(c.url, message_id(c.outbox_id), body, secrets)

    def _outcome(self, c: Claimed, a: Attempt) -> Outcome:
        if a.ok:
            SENT.inc()
            return Outcome(c.id, c.subscription_id, "sent", a.status, None, None)
        delay = next_delay(self.settings.webhook_retry_delays_s, c.attempts, a.retry_after_s)
        if delay is None:
            DEAD.inc()
            log.warning("webhook delivery %s dead after %s attempts: %s", c.id, c.attempts, a.error)
            return Outcome(c.id, c.subscription_id, "dead", a.status, a.error, None)
        FAILED.inc()
        next_at = utcnow() + timedelta(seconds=delay)
        return Outcome(c.id, c.subscription_id, "pending", a.status, a.error, next_at)

    async def _upkeep(self) -> None:
        """Every 5 s the gauges; every 10 min the purge of old sent deliveries and events."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_stats >= 5:
            self._last_stats = loop.time()
            await self.refresh_gauges()
        if loop.time() - self._last_purge >= 600:
            self._last_purge = loop.time()
            before = utcnow() - timedelta(days=self.settings.webhook_retention_days)
            async with self.db.write() as s:
                await repository.purge(s, before)

    async def refresh_gauges(self) -> None:
        stats = await self.service.stats()
        QUEUED.set(stats["pending"])
        DEAD_NOW.set(stats["dead"])
        oldest: datetime | None = stats["oldest_pending"]
        OLDEST.set((utcnow() - oldest).total_seconds() if oldest is not None else 0)
