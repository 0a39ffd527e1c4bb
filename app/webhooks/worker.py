"""The delivery worker (in ``stoplist serve`` and alone as ``stoplist deliver``).

It works in rounds, one transaction each: record the outcomes that came back since the last
round, sequence newly committed outbox rows (feed positions, one delivery per interested
subscription), and claim due deliveries (``SKIP LOCKED`` on PostgreSQL, so replicas share them;
one in flight per subscription and address). Claimed deliveries are posted, signed, each as its
own task, within bounds (in all and per subscription); a few more than that are claimed ahead, so
a finished request starts the next at once, without waiting for a round. A failure is retried
after the next delay of ``STOPLIST_WEBHOOK_RETRY_DELAYS_S`` (±20 % jitter, or the receiver's
``Retry-After`` when longer); after the last one the delivery is dead (visible, replayable).
Nothing is marked sent before the receiver answered 2xx, so a crash at any point means a repeat,
never a loss (at-least-once; ``webhook-id`` is the idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import DB_ERRORS, Database
from app.models import utcnow
from app.webhooks import outbox, repository
from app.webhooks.outcomes import Outcome, finish
from app.webhooks.repository import Claimed
from app.webhooks.sender import Attempt, Sender
from app.webhooks.service import WebhookService, event_body, message_id
from app.webhooks.signing import SecretError
from app.webhooks.wake import Listener

log = logging.getLogger("app.webhooks")

SENT = Counter("stoplist_webhook_sent_total", "Webhook deliveries a receiver accepted (2xx)")
FAILED = Counter("stoplist_webhook_failed_total", "Webhook attempts that failed (to be retried)")
DEAD = Counter("stoplist_webhook_dead_lettered_total", "Webhook deliveries dead-lettered")
QUEUED = Gauge("stoplist_webhook_queued", "Webhook deliveries pending")
DEAD_NOW = Gauge("stoplist_webhook_dead", "Webhook deliveries dead-lettered (kept until deleted)")
OLDEST = Gauge("stoplist_webhook_oldest_pending_seconds", "Age of the oldest pending delivery")

SEQUENCE_BATCH = 1000
# Claimed ahead of the request bounds: this many times the requests allowed in flight.
CLAIM_AHEAD = 2
# How long finished requests may gather before the round that records them (adds at most
# this to the time before an address's next event may go; one transaction for many outcomes).
ROUND_GATHER_S = 0.01
# The shortest time from one round's start to the next's, whatever woke the worker: under a
# stream of commits (each a wake-up) rounds come at most this often, each taking what the
# commits of the interval wrote, instead of one round (a transaction) per commit.
ROUND_SPACING_S = 0.025
# The poll interval while PostgreSQL's NOTIFY wakes the worker (polling is only the fallback,
# and what finds retries coming due), and the longest one when no subscription exists.
LISTENING_POLL_S = 1.0
NO_SUBSCRIPTION_POLL_S = 5.0
# ``stop``: how long requests in flight may finish, and how long the whole stop may take
# before the worker is cancelled.
SEND_GRACE_S = 3.0
STOP_GRACE_S = 10.0
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
    """Rounds of record, sequence and claim; sends in between; ``run`` until ``stop``.

    At most ``webhook_concurrency`` requests in flight in all and
    ``webhook_subscription_concurrency`` to one subscription (a slow endpoint holds only its own
    share), and ``CLAIM_AHEAD`` times as many claimed. A round runs when a request finished (after
    ``ROUND_GATHER_S``), when a commit wrote outbox rows (in this process, or on PostgreSQL in
    any: ``NOTIFY``), and otherwise every ``idle_s`` (``LISTENING_POLL_S`` while listening; up to
    ``NO_SUBSCRIPTION_POLL_S`` while no subscription exists), never sooner than
    ``ROUND_SPACING_S`` after the previous round started. ``step`` is one whole round
    (claim, send, record), for tests.
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
        self._round_at = 0.0  # when the last round started (the loop's clock)
        self._last_purge = 0.0
        self._in_flight: dict[int, int] = {}  # subscription -> requests in flight
        self._held: dict[int, int] = {}  # subscription -> claimed, not finished (queued or sent)
        self._queued: dict[int, deque[Claimed]] = {}  # claimed ahead, waiting for room
        self._sends: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        self._subscribed = True  # whether a subscription existed at the last idle round
        self._poll_s = idle_s
        self._listener: Listener | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        """Run in the background on the current loop (``stop`` ends it)."""
        self._task = asyncio.create_task(self.run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Stop claiming, let the requests in flight finish (``SEND_GRACE_S``), record their
        outcomes and give back what was claimed but not sent, then end; cancel only after
        ``STOP_GRACE_S`` (a transaction cancelled half-way would be rolled back under a
        cancelled task, which the pool reports as an error)."""
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
        shared = self.db
        if shared.dialect == "postgresql":
            # Connections of its own, not pinged at every checkout (a round trip per round): a
            # round on a dead connection fails, and the next one gets a fresh connection.
            self.db = Database(shared.settings, pool_size=2, pre_ping=False)
            if self.settings.database_pooler != "pgbouncer":
                self._listener = Listener(self.db.engine, self._wake.set)
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    sequenced, _ = await self._round()
                    more = sequenced >= SEQUENCE_BATCH  # surely more to sequence at once
                    await self._upkeep()
                except DB_ERRORS as exc:
                    log.warning("webhook worker: database unreachable: %s", exc)
                    more = False
                    await asyncio.sleep(1.0)
                except Exception:
                    log.exception("webhook worker round failed")
                    more = False
                    await asyncio.sleep(1.0)
                if not more:
                    await self._idle()
        finally:
            unsubscribe()
            await self._wind_down()
            if self.db is not shared:
                await self.db.dispose()
                self.db = shared

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

    async def _idle(self) -> None:
        """Wait for a wake-up or the poll; then, with requests in flight, let more finish."""
        listening = self._listener is not None and await self._listener.ensure()
        if self._sends or self._subscribed:
            self._poll_s = max(self.idle_s, LISTENING_POLL_S) if listening else self.idle_s
        else:  # nothing to deliver to: back off (a new subscription or outbox row wakes it)
            longest = max(self.idle_s, NO_SUBSCRIPTION_POLL_S)
            self._poll_s = min(max(self._poll_s, self.idle_s) * 2, longest)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_s)
        delay = self._round_at + ROUND_SPACING_S - asyncio.get_running_loop().time()
        if self._sends:
            delay = max(delay, ROUND_GATHER_S)
        if delay > 0 and not self._stopping:
            await asyncio.sleep(delay)

    async def _wind_down(self) -> None:
        """Let the requests in flight finish (then cancel them: retried after their lease),
        record what came back and give back what was never sent."""
        if self._listener is not None:
            await self._listener.close()
        release = [c.id for q in self._queued.values() for c in q]
        self._queued.clear()
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=SEND_GRACE_S)
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        if self._outcomes or release:
            try:
                await asyncio.wait_for(self._record(release), 5.0)
            except Exception as exc:  # the shutdown goes on: retried after their lease
                log.warning("webhook worker: outcomes not recorded at stop: %s", exc)

    async def _round(self) -> tuple[int, int]:
        """Record, sequence and claim in one transaction, then start sending; how many rows
        were sequenced and deliveries claimed."""
        self._round_at = asyncio.get_running_loop().time()
        outcomes, self._outcomes = self._outcomes, []
        now = utcnow()
        try:
            async with self.db.write() as s:
                if outcomes:
                    await self._finish(s, outcomes, now)
                sequenced = await repository.sequence(s, self.db.dialect, now, SEQUENCE_BATCH)
                claimed = await self._claim(s, now)
                if not (outcomes or sequenced or claimed or self._held):
                    self._subscribed = await repository.has_subscriptions(s)
        except BaseException:
            self._outcomes[:0] = outcomes  # nothing was committed: recorded by the next round
            raise
        if sequenced or claimed:
            self._subscribed = True
        for c in claimed:
            self._held[c.subscription_id] = self._held.get(c.subscription_id, 0) + 1
            self._queued.setdefault(c.subscription_id, deque()).append(c)
        self._pump()
        return sequenced, len(claimed)

    async def _claim(self, s: AsyncSession, now: datetime) -> list[Claimed]:
        """Claim due deliveries, as many as may be held in all and per subscription."""
        room = CLAIM_AHEAD * self.settings.webhook_concurrency - sum(self._held.values())
        if room <= 0 or self._stopping:
            return []
        lease = now + timedelta(seconds=2 * self.settings.webhook_timeout_s + 30)
        return await repository.claim(
            s,
            self.db.dialect,
            now,
            lease,
            room,
            busy=self._held,
            per_subscription=CLAIM_AHEAD * self.per_subscription,
        )

    def _pump(self) -> None:
        """Start the queued deliveries there is room for, in claim order per subscription."""
        room = self.settings.webhook_concurrency - sum(self._in_flight.values())
        for sub, queue in self._queued.items():
            while queue and room > 0 and self._in_flight.get(sub, 0) < self.per_subscription:
                c = queue.popleft()
                self._in_flight[sub] = self._in_flight.get(sub, 0) + 1
                task = asyncio.create_task(self._deliver(c))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
                room -= 1

    async def _deliver(self, c: Claimed) -> None:
        try:
            try:
                attempt = await self._send(c)
            except Exception as exc:  # an edge: one request must not end the worker
                log.exception("webhook delivery %s: request failed", c.id)
                attempt = Attempt(False, error=f"internal error: {type(exc).__name__}")
            self._outcomes.append(self._outcome(c, attempt))
        finally:
            self._in_flight[c.subscription_id] -= 1
            self._held[c.subscription_id] -= 1
            self._wake.set()
        if not self._stopping:
            self._pump()

    async def sequence(self) -> int:
        async with self.db.write() as s:
            return await repository.sequence(s, self.db.dialect, utcnow(), SEQUENCE_BATCH)

    async def step(self) -> bool:
        """One whole round (claim, send all, record); whether there was anything to do."""
        outcomes = len(self._outcomes)
        sequenced, claimed = await self._round()
        while self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)
        if self._outcomes:
            await self._record([])
        return bool(sequenced or claimed or outcomes)

    async def _record(self, release: list[int]) -> None:
        """Record the outcomes that came back and give back ``release`` (claimed, not sent)."""
        outcomes, self._outcomes = self._outcomes, []
        now = utcnow()
        try:
            async with self.db.write() as s:
                await self._finish(s, outcomes, now)
                await repository.release(s, release, now)
        except BaseException:
            self._outcomes[:0] = outcomes
            raise

    async def _finish(self, s: AsyncSession, outcomes: list[Outcome], now: datetime) -> None:
        before = now - timedelta(hours=self.settings.webhook_disable_after_h)
        for sub in await finish(s, self.db.dialect, outcomes, now, before):
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
            return Outcome(
                c.id, c.subscription_id, "sent", a.status, None, None, c.failing_since is not None
            )
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
