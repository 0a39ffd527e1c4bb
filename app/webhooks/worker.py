"""The delivery worker (in ``stoplist serve`` and alone as ``stoplist deliver``).

It sequences newly committed outbox rows (feed positions, one delivery per interested
subscription), claims due deliveries whenever there is room (``SKIP LOCKED`` on PostgreSQL, so
replicas share them; one in flight per subscription and address, a bounded number per
subscription and in all), posts each signed as its own task, and records the outcomes in
batches as they come back. A failure is retried after the next delay of ``STOPLIST_WEBHOOK_RETRY_DELAYS_S``
(±20 % jitter, or the receiver's ``Retry-After`` when longer); after the last one the delivery is
dead (visible, replayable). Nothing is marked sent before the receiver answered 2xx, so a crash
at any point means a repeat, never a loss (at-least-once; ``webhook-id`` is the idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge

from app.db import DB_ERRORS, Database
from app.models import utcnow
from app.webhooks import outbox, repository
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
RECORD_BATCH = 500
# How long finished sends may gather before the next claim (adds at most this to the lag).
CLAIM_GATHER_S = 0.005
# How long ``stop`` waits for the round in progress before cancelling it.
STOP_GRACE_S = 5.0
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
    """Sequences, sends and records; ``run`` until cancelled.

    ``run`` pipelines: claims whenever there is room (``webhook_concurrency`` requests in flight
    in all, ``webhook_subscription_concurrency`` per subscription, so a slow endpoint holds only
    its own share), sends each claimed delivery as its own task, and records outcomes in batches
    as they come. A commit that wrote outbox rows in this process wakes it at once; otherwise it
    polls every ``idle_s``. ``step`` is one whole round (claim, send, record), for tests.
    """

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
        self.per_subscription = min(
            self.settings.webhook_subscription_concurrency, self.settings.webhook_concurrency
        )
        self._last_stats = 0.0
        self._last_purge = 0.0
        self._in_flight: dict[int, int] = {}  # subscription -> requests in flight
        self._sends: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._wake = asyncio.Event()

        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Run in the background on the current loop (``stop`` ends it)."""
        self._task = asyncio.create_task(self.run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Let the round in progress finish (a transaction cancelled half-way would be rolled
        back under a cancelled task, which the pool reports as an error), then end; cancel only
        after ``STOP_GRACE_S``."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.sender.close()

    async def run(self) -> None:
        unsubscribe = outbox.on_commit(self._waker())
        recorder = asyncio.create_task(self._record_loop(), name="webhook-record")
        try:
            while not self._stopping:
                if self._sends:
                    # Let finished sends gather before the next claim: one sequencing and claim
                    # transaction per many deliveries under a backlog, not one per delivery.
                    await asyncio.sleep(CLAIM_GATHER_S)
                self._wake.clear()
                try:
                    busy = await self._dispatch()
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
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.idle_s)
        finally:
            unsubscribe()
            await self._wind_down(recorder)

    def _waker(self) -> Callable[[], None]:
        """A callback that wakes ``run`` from any thread (a commit may run on another loop)."""
        loop = asyncio.get_running_loop()
        thread = threading.get_ident()

        def wake() -> None:
            if threading.get_ident() == thread:
                self._wake.set()
            else:
                loop.call_soon_threadsafe(self._wake.set)

        return wake

    async def _wind_down(self, recorder: asyncio.Task[None]) -> None:
        """Stop sending; record what already came back (the rest is retried after its lease)."""
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        left: list[Outcome] = []
        while not self._outcomes.empty():
            left.append(self._outcomes.get_nowait())
        if left:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._record(left), 5.0)

    async def _dispatch(self) -> bool:
        """Sequence, then claim as much as there is room for and start sending it; whether
        there was anything to do."""
        sequenced = await self.sequence()
        claimed = await self._claim()
        for c in claimed:
            self._in_flight[c.subscription_id] = self._in_flight.get(c.subscription_id, 0) + 1
            task = asyncio.create_task(self._deliver(c))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return sequenced > 0 or bool(claimed)

    async def _deliver(self, c: Claimed) -> None:
        try:
            try:
                attempt = await self._send(c)
            except Exception as exc:  # an edge: one request must not end the worker
                log.exception("webhook delivery %s: request failed", c.id)
                attempt = Attempt(False, error=f"internal error: {type(exc).__name__}")
            self._outcomes.put_nowait(self._outcome(c, attempt))
        finally:
            self._in_flight[c.subscription_id] -= 1
            self._wake.set()

    async def _record_loop(self) -> None:
        """Record outcomes as they come, in batches; a failed batch is tried again."""
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty() and len(batch) < RECORD_BATCH:
                batch.append(self._outcomes.get_nowait())
            while True:
                try:
                    await self._record(batch)
                    break
                except DB_ERRORS as exc:
                    log.warning("webhook worker: cannot record outcomes: %s", exc)
                    await asyncio.sleep(1.0)
            self._wake.set()  # the next events of these addresses may go now

    async def sequence(self) -> int:
        async with self.db.write() as s:
            return await repository.sequence(s, self.db.dialect, utcnow(), SEQUENCE_BATCH)

    async def _claim(self) -> list[Claimed]:
        """Claim due deliveries, as many as there is room for in all and per subscription."""
        room = self.settings.webhook_concurrency - sum(self._in_flight.values())
        if room <= 0:
            return []
        now = utcnow()
        lease = now + timedelta(seconds=2 * self.settings.webhook_timeout_s + 30)
        async with self.db.write() as s:
            return await repository.claim(
                s,
                self.db.dialect,
                now,
                lease,
                room,
                busy=self._in_flight,
                per_subscription=self.per_subscription,
            )

    async def step(self) -> bool:
        """One whole round (claim, send all, record); whether there was anything to do."""
        sequenced = await self.sequence()
        claimed = await self._claim()
        if not claimed:
            return sequenced > 0
        attempts = await asyncio.gather(*(self._send(c) for c in claimed))
        await self._record([self._outcome(c, a) for c, a in zip(claimed, attempts, strict=True)])
        return True

    async def _record(self, outcomes: list[Outcome]) -> None:
        done = utcnow()
        before = done - timedelta(hours=self.settings.webhook_disable_after_h)
        async with self.db.write() as s:
            disabled = await repository.finish(s, outcomes, done, before)
        for sub in disabled:
            log.warning(
                "webhook subscription %s disabled: every attempt failed since %s", sub, before
            )

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
