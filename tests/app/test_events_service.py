"""Around the webhook intake, on SQLite and on PostgreSQL + Redis: signature timestamps outside the
tolerance, the body limit of ``/v1/events/*``, the unreadable records kept
(``GET /v1/events/errors``), a stored event explained, and the retention that prunes events."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import func, select, update

from app.container import Services, housekeeping
from app.events.retention import Pruned, prune_events
from app.main import create_app
from app.models import DeliveryEvent, DeliveryEventError, utcnow
from app.settings import Settings
from tests.app.events_support import MAILGUN_KEY, Hooks, make_hooks, samples, sendgrid_headers
from tests.conftest import close_env


@pytest_asyncio.fixture(loop_scope="session")
async def hooks(env_settings: Settings) -> AsyncIterator[Hooks]:
    h = await make_hooks("sqlite" if env_settings.is_sqlite else "postgres", env_settings)
    try:
        yield h
    finally:
        await h.client.aclose()
        await close_env(h.env)


@contextmanager
def configured(hooks: Hooks, **changes: Any) -> Iterator[None]:
    """The running service with some settings changed for the block."""
    services = hooks.env.services
    before = services.settings
    services.settings = before.model_copy(update=changes)
    try:
        yield
    finally:
        services.settings = before


def _sendgrid_body() -> bytes:
    return samples("sendgrid")[0][0]


async def _errors_kept(hooks: Hooks) -> int:
    async with hooks.env.services.db.read() as s:
        return int((await s.execute(select(func.count(DeliveryEventError.id)))).scalar_one())


# ---------------------------------------------------------------------- timestamp tolerance


async def test_sendgrid_timestamps_outside_the_tolerance_are_refused(hooks: Hooks) -> None:
    body = _sendgrid_body()
    now = int(time.time())
    for stamp in (now - 700, now + 700):  # well past the 600 s default, however slow the run
        r = await hooks.post("sendgrid", body, **sendgrid_headers(body, str(stamp)))
        assert r.status_code == 401, r.text
        assert "replay window" in r.json()["detail"]
    assert await hooks.stored() == 0 and await _errors_kept(hooks) == 0
    with configured(hooks, events_timestamp_tolerance_s=30.0):
        r = await hooks.post("sendgrid", body, **sendgrid_headers(body, str(now - 60)))
        assert r.status_code == 401, r.text
    r = await hooks.post("sendgrid", body, **sendgrid_headers(body, str(now - 60)))
    assert r.status_code == 200, r.text  # within the default ten minutes
    assert r.json()["new"] > 0


def _mailgun_signed_at(stamp: int) -> bytes:
    """The Mailgun sample signed correctly, at ``stamp``: only the tolerance may refuse it."""
    data = json.loads(samples("mailgun")[0][0])
    token = secrets.token_hex(25)
    digest = hmac.new(MAILGUN_KEY.encode(), f"{stamp}{token}".encode(), hashlib.sha256)
    data["signature"] = {"timestamp": str(stamp), "token": token, "signature": digest.hexdigest()}
    return json.dumps(data).encode()


async def test_mailgun_timestamps_outside_the_tolerance_are_refused(hooks: Hooks) -> None:
    now = int(time.time())
    r = await hooks.post("mailgun", _mailgun_signed_at(now - 700))
    assert r.status_code == 401 and "replay window" in r.json()["detail"], r.text
    assert await hooks.stored() == 0
    with configured(hooks, events_timestamp_tolerance_s=900.0):
        r = await hooks.post("mailgun", _mailgun_signed_at(now - 700))
        assert r.status_code == 200, r.text
    assert await hooks.stored() == 1


# ---------------------------------------------------------------------- body limit


async def test_event_bodies_have_their_own_limit(hooks: Hooks) -> None:
    auth = hooks.env.auth("admin")
    record = json.loads(samples("kumomta")[0][0])
    record = record[0] if isinstance(record, list) else record
    # Over the API's general 4 MiB, under the events limit (10 MiB): accepted.
    big = json.dumps({**record, "meta": {"padding": "x" * (5 * 1024 * 1024)}}).encode()
    r = await hooks.post("kumomta", big, **auth)
    assert r.status_code == 200, r.text[:300]
    stored = await hooks.stored()
    assert stored == r.json()["new"] > 0
    with configured(hooks, events_max_body_bytes=1024):
        r = await hooks.post("kumomta", big, **auth)
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            for start in range(0, len(big), 1024):
                yield big[start : start + 1024]

        r = await hooks.client.post(
            "/v1/events/kumomta", content=chunks(), headers={**auth, "Transfer-Encoding": "chunked"}
        )
        assert r.status_code == 413, r.text[:300]
        body = _sendgrid_body()
        assert len(body) > 1024
        r = await hooks.post("sendgrid", body, **sendgrid_headers(body, str(int(time.time()))))
        assert r.status_code == 413
    assert await hooks.stored() == stored and await _errors_kept(hooks) == 0


# ---------------------------------------------------------------------- kept errors


async def test_unreadable_records_are_listed_with_where_and_why(hooks: Hooks) -> None:
    body = _sendgrid_body()
    answer = (await hooks.send("sendgrid", body)).json()
    assert (await hooks.send("kumomta", samples("kumomta")[0][0])).status_code == 200
    read = hooks.env.auth("read")
    r = await hooks.client.get("/v1/events/errors", params={"source": "sendgrid"}, headers=read)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert sorted(i["location"] for i in items) == sorted(e["location"] for e in answer["errors"])
    assert {i["reason"] for i in items} == {e["reason"] for e in answer["errors"]}
    assert all(i["source"] == "sendgrid" and i["excerpt"] for i in items)
    everything = (await hooks.client.get("/v1/events/errors", headers=read)).json()["items"]
    assert len(everything) > len(items)
    assert [i["id"] for i in everything] == sorted((i["id"] for i in everything), reverse=True)
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    r = await hooks.client.get("/v1/events/errors", params={"since": later}, headers=read)
    assert r.json()["items"] == []
    r = await hooks.client.get("/v1/events/errors", params={"since": "yesterday"}, headers=read)
    assert r.status_code == 422
    r = await hooks.client.get("/v1/events/errors", headers=hooks.env.auth("check"))
    assert r.status_code == 403


# ---------------------------------------------------------------------- explanation


async def test_a_stored_event_is_explained(hooks: Hooks) -> None:
    body, expected = samples("ses")[0]
    assert (await hooks.send("ses", body)).status_code == 200
    [event] = [e for e in expected["events"] if e["disagrees"]]
    read = hooks.env.auth("read")
    r = await hooks.client.get(
        f"/v1/events/delivery/{event['dedupe_id']}/explanation", headers=read
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["event"]["source"] == "ses" and got["event"]["recipient"] == event["recipient"]
    assert got["event"]["location"].endswith("#1")
    assert got["vendor"] == {
        "category": "Permanent/General",
        "outcome": "hard",
        "reason": "invalid_address",
    }
    assert got["decision"] == {
        "outcome": event["outcome"],
        "reason": event["reason"],
        "rule_id": event["rule_id"],
    }
    assert "Permanent/General" in got["disagreement"] and event["rule_id"] in got["disagreement"]
    assert got["signals"]["diagnostic"] == event["diagnostic"]
    assert got["rule"]["id"] == event["rule_id"] and got["rule"]["source"]
    assert got["rule"]["examples"]
    # The row id names it too; an unknown one is 404.
    by_id = f"/v1/events/delivery/{got['event']['id']}/explanation"
    assert (await hooks.client.get(by_id, headers=read)).json() == got
    missing = await hooks.client.get("/v1/events/delivery/abc123/explanation", headers=read)
    assert missing.status_code == 404
    odd = await hooks.client.get("/v1/events/delivery/%C2%B2/explanation", headers=read)
    assert odd.status_code == 422
    denied = await hooks.client.get(by_id, headers=hooks.env.auth("check"))
    assert denied.status_code == 403


# ---------------------------------------------------------------------- retention


async def _age(hooks: Hooks, table: Any, days: float) -> None:
    async with hooks.env.services.db.write() as s:
        await s.execute(update(table).values(received_at=utcnow() - timedelta(days=days)))


async def test_retention_prunes_old_events_in_batches(hooks: Hooks) -> None:
    body = _sendgrid_body()
    first = (await hooks.send("sendgrid", body)).json()
    assert first["new"] > 3
    services = hooks.env.services
    assert await prune_events(services) == Pruned(0, 0)  # nothing is old yet
    assert await hooks.stored() == first["new"]
    await _age(hooks, DeliveryEvent, 8)
    await _age(hooks, DeliveryEventError, 8)
    pruned = await prune_events(services, batch=2)  # several batches, each its own transaction
    assert (pruned.events, pruned.errors) == (first["new"], 0)  # errors keep 30 days
    assert await hooks.stored() == 0
    # A replay older than the window is recorded again: the window must outlast retries.
    again = (await hooks.send("sendgrid", body)).json()
    assert again["new"] == first["new"]
    await _age(hooks, DeliveryEventError, 31)
    assert (await prune_events(services)).errors == len(first["errors"])
    with configured(hooks, event_retention_days=0.0):
        await _age(hooks, DeliveryEvent, 400)
        assert (await prune_events(services)).events == 0  # 0 keeps them
    assert await hooks.stored() == first["new"]


async def test_housekeeping_runs_its_jobs(hooks: Hooks) -> None:
    ran: list[int] = []
    started = asyncio.Event()

    async def job(services: Services) -> None:
        ran.append(1)
        started.set()
        await asyncio.sleep(3600)  # a long job does not hold up the next rounds

    async def failing(services: Services) -> None:
        raise RuntimeError("logged, not fatal")

    keeper = asyncio.create_task(
        housekeeping(hooks.env.services, interval_s=0.01, jobs=[(3600.0, job), (0.0, failing)])
    )
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.1)
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    assert ran == [1]


async def test_the_service_prunes_old_events(hooks: Hooks) -> None:
    """``stoplist serve``'s lifespan runs the retention in its housekeeping."""
    assert (await hooks.send("sendgrid", _sendgrid_body())).status_code == 200
    await _age(hooks, DeliveryEvent, 8)
    app = create_app(hooks.env.services.settings, services=hooks.env.services)
    async with app.router.lifespan_context(app):
        for _ in range(100):  # the first round runs after a second
            if await hooks.stored() == 0:
                break
            await asyncio.sleep(0.1)
    assert await hooks.stored() == 0
