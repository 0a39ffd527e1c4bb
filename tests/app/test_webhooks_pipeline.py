"""The delivery worker's pipelined loop (``DeliveryWorker.run``): a slow endpoint holds only its
own share of the requests in flight, per-address order holds with sends overlapping, and a commit
that wrote outbox rows wakes the worker at once. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest_asyncio

from app.settings import Settings
from tests.app.test_webhooks import LOOPBACK, put, subscribe, verified, worker_for
from tests.app.webhook_receiver import Receiver
from tests.conftest import Env, close_env, make_env


@pytest_asyncio.fixture(loop_scope="session")
async def penv(env_settings: Settings) -> AsyncIterator[Env]:
    settings = env_settings.model_copy(
        update={"webhook_allowed_networks": LOOPBACK, "webhook_retry_delays_s": [0.05, 0.05]}
    )
    e = await make_env("sqlite" if settings.is_sqlite else "postgres", settings)
    try:
        yield e
    finally:
        await close_env(e)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_slow_endpoint_holds_only_its_own_share(penv: Env) -> None:
    slow, fast = await Receiver().start(), await Receiver().start()
    slow.hold = asyncio.Event()
    await subscribe(penv, slow.url)
    _, secret = await subscribe(penv, fast.url)
    worker = worker_for(penv, webhook_subscription_concurrency=2, webhook_concurrency=8)
    worker.start()
    try:
        for n in range(6):
            await put(penv, f"p{n}@example.com")
        await put(penv, "p0@example.com", outcome="complaint", reason="abuse")
        await until(lambda: len(fast.requests) >= 7 and len(slow.requests) >= 2)
        await asyncio.sleep(0.3)
        # The slow endpoint has answered nothing yet and holds only its 2 requests.
        assert len(slow.requests) == 2
        slow.hold.set()
        await until(lambda: len(slow.requests) >= 7)
    finally:
        await worker.stop()
        await slow.stop()
        await fast.stop()
    seen = [(p["data"]["address"], p["type"]) for _, p in verified(fast, secret)]
    assert len(set(seen)) == 7
    mine = [t for a, t in seen if a == "p0@example.com"]
    assert mine == ["suppression.created", "suppression.updated"]


async def test_a_commit_wakes_an_idle_worker(penv: Env) -> None:
    receiver = await Receiver().start()
    await subscribe(penv, receiver.url)
    worker = worker_for(penv)
    worker.idle_s = 3600.0  # only the wake-up can make it deliver within the test
    worker.start()
    try:
        await asyncio.sleep(0.5)  # its first round found nothing; it waits now
        await put(penv, "wake@example.com")
        await until(lambda: len(receiver.requests) >= 1)
    finally:
        await worker.stop()
        await receiver.stop()
