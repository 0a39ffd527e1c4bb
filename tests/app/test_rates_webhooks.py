"""Webhook batches reach the rate buckets: counted once, in the transaction that stores them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from app.settings import Settings
from tests.app.events_support import Hooks, make_hooks
from tests.conftest import close_env


@pytest_asyncio.fixture(loop_scope="session")
async def hooks(env_settings: Settings) -> AsyncIterator[Hooks]:
    h = await make_hooks("sqlite" if env_settings.is_sqlite else "postgres", env_settings)
    try:
        yield h
    finally:
        await h.client.aclose()
        await close_env(h.env)


def sendgrid_batch() -> bytes:
    stamp = int(time.time())
    events: list[dict[str, Any]] = [
        {"email": f"d{i}@gmail.com", "event": "delivered", "sg_event_id": f"d-{i}"}
        for i in range(8)
    ]
    events += [
        {
            "email": "gone@gmail.com",
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist - gsmtp",
            "sg_event_id": "b-1",
        },
        {"email": "angry@yahoo.com", "event": "spamreport", "sg_event_id": "c-1"},
        {"email": "later@yahoo.com", "event": "deferred", "sg_event_id": "t-1"}
        | {"response": "421 4.7.0 [TSS04] Messages temporarily deferred"},
    ]
    return json.dumps([{"timestamp": stamp, **e} for e in events]).encode()


async def stats(hooks: Hooks, by: str) -> dict[str, dict[str, Any]]:
    env = hooks.env
    r = await env.client.get(
        "/v1/stats", params={"by": by, "granularity": "5m"}, headers=env.auth("read")
    )
    assert r.status_code == 200, r.text
    return {g["key"]: g for g in r.json()["groups"]}


async def test_a_webhook_batch_shows_up_in_stats_once(hooks: Hooks) -> None:
    body = sendgrid_batch()
    for _ in range(2):  # the replay is a duplicate: recorded, and counted, once
        r = await hooks.send("sendgrid", body)
        assert r.status_code == 200, r.text
    by_source = await stats(hooks, "source")
    # the hard bounce is counted from the event only, not again by the policy it goes through
    assert set(by_source) == {"sendgrid"}
    counts = by_source["sendgrid"]["counts"]
    assert (counts["sent"], counts["delivered"], counts["hard"]) == (9, 8, 1)
    assert (counts["complaint"], counts["deferred"]) == (1, 1)
    by_provider = await stats(hooks, "provider")
    assert by_provider["gmail"]["rates"]["hard_rate"] == 1 / 9
    assert by_provider["yahoo"]["counts"]["complaint"] == 1
    assert by_provider["yahoo"]["rates"]["deferral_rate"] == 1.0
