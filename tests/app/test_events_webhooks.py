"""``POST /v1/events/{source}`` on SQLite and on PostgreSQL + Redis, driven with the golden
samples of samples/events signed the way each sender signs: every sample recorded, a replay
recorded once, a bad signature refused with nothing stored, and what the events do to the list."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from app.events import EventStore
from app.events.sns import ConfirmError, confirm_subscription
from app.models import DeliveryEvent, WebhookToken
from app.settings import Settings
from tests.app.events_support import (
    POSTMARK_PASSWORD,
    Hooks,
    basic,
    make_hooks,
    samples,
    sendgrid_headers,
    sign_mailgun,
    sign_sns,
)
from tests.conftest import close_env

SOURCES = ["kumomta", "ses", "sendgrid", "postmark", "mailgun"]


@pytest_asyncio.fixture(loop_scope="session")
async def hooks(env_settings: Settings) -> AsyncIterator[Hooks]:
    h = await make_hooks("sqlite" if env_settings.is_sqlite else "postgres", env_settings)
    try:
        yield h
    finally:
        await h.client.aclose()
        await close_env(h.env)


def _unique_events(expected: dict[str, Any]) -> list[dict[str, Any]]:
    return list({e["dedupe_id"]: e for e in expected["events"]}.values())


@pytest.mark.parametrize("source", SOURCES)
async def test_every_sample_is_recorded_once_and_hard_bounces_suppress(
    hooks: Hooks, source: str
) -> None:
    total = 0
    hard: set[str] = set()
    complained: set[str] = set()
    for body, expected in samples(source):
        events = _unique_events(expected)
        r = await hooks.send(source, body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["new"] + answer["duplicate"] == len(events), answer
        assert len(answer["errors"]) == len(expected["errors"])
        total += answer["new"]
        hard |= {e["recipient"] for e in events if e["kind"] == "bounce" and e["outcome"] == "hard"}
        complained |= {e["recipient"] for e in events if e["outcome"] == "complaint"}
        again = await hooks.send(source, body)  # a retried delivery (Mailgun: a fresh token)
        assert again.status_code == 200, again.text
        assert (again.json()["new"], again.json()["duplicate"]) == (0, len(events))
        assert again.json()["request_id"] == answer["request_id"] or source in ("ses", "mailgun")
    assert total > 0
    assert await hooks.stored() == total
    assert hard, f"{source}: the samples hold no hard bounce"
    for address in sorted(hard):
        found = await hooks.check(address, "marketing")
        # A complaint about the same address is the stronger entry (never weakened).
        outcome = "complaint" if address in complained else "hard"
        assert (found["suppressed"], found["outcome"], found["scope"]) == (True, outcome, "global")


async def test_bad_records_are_kept_with_where_and_why(hooks: Hooks) -> None:
    [(body, expected)] = samples("sendgrid")
    r = await hooks.send("sendgrid", body)
    assert r.status_code == 200
    reported = r.json()["errors"]
    assert len(reported) == len(expected["errors"]) > 0
    kept = await hooks.errors()
    assert sorted(e.location for e in kept) == sorted(e["location"] for e in reported)
    assert all(e.reason and e.source == "sendgrid" for e in kept)
    await hooks.send("sendgrid", body)
    assert len(await hooks.errors()) == len(kept)  # a replayed bad record is kept once


async def test_history_shows_the_source_the_vendor_word_and_our_rule(hooks: Hooks) -> None:
    [(body, expected)] = samples("sendgrid")
    assert (await hooks.send("sendgrid", body)).status_code == 200
    bounce = next(e for e in expected["events"] if e["kind"] == "bounce" and e["outcome"] == "hard")
    r = await hooks.client.get(
        f"/v1/suppressions/{bounce['recipient']}/history", headers=hooks.env.auth("read")
    )
    assert r.status_code == 200, r.text
    [event] = [e for e in r.json()["items"] if e.get("kind") == "bounce"]
    assert event["rule_id"] == bounce["rule_id"]
    assert event["detail"]["event_source"] == "sendgrid"
    assert event["detail"]["vendor_category"] == bounce["vendor_category"]
    assert event["detail"]["delivery_event"] == bounce["dedupe_id"]
    assert event["explanation"]["id"] == bounce["rule_id"]


def _sendgrid(*events: dict[str, Any]) -> bytes:
    stamp = int(time.time())
    return json.dumps([{"timestamp": stamp, **e} for e in events]).encode()


async def _sendgrid_post(hooks: Hooks, body: bytes) -> dict[str, Any]:
    r = await hooks.post("sendgrid", body, **sendgrid_headers(body, str(int(time.time()))))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_soft_bounces_suppress_only_at_the_threshold(hooks: Hooks) -> None:
    address = "full@example.org"
    soft = {
        "email": address,
        "event": "bounce",
        "type": "bounce",
        "status": "4.2.2",
        "reason": "452 4.2.2 The email account that you tried to reach is over quota",
    }
    threshold = hooks.env.settings.soft_bounce_threshold
    for n in range(1, threshold + 1):
        answer = await _sendgrid_post(hooks, _sendgrid({**soft, "sg_event_id": f"soft-{n}"}))
        assert answer["new"] == 1
        found = await hooks.check(address)
        if n < threshold:
            assert found["suppressed"] is False, n
    assert (found["suppressed"], found["outcome"]) == (True, "soft")
    assert found["expires_at"] is not None


async def test_complaints_are_global_and_unsubscribes_per_stream(hooks: Hooks) -> None:
    body = _sendgrid(
        {"email": "angry@example.org", "event": "spamreport", "sg_event_id": "c-1"},
        {
            "email": "bored@example.org",
            "event": "group_unsubscribe",
            "asm_group_id": 7,
            "sg_event_id": "u-1",
        },
        {"email": "fine@example.org", "event": "delivered", "sg_event_id": "d-1"},
        {"email": "dropped@example.org", "event": "dropped", "reason": "Bounced Address"}
        | {"sg_event_id": "x-1"},
        {"email": "later@example.org", "event": "deferred", "sg_event_id": "t-1"}
        | {"response": "550 5.1.1 user unknown (will retry)"},
    )
    answer = await _sendgrid_post(hooks, body)
    assert (answer["new"], answer["suppressed"]) == (5, 2)
    for stream in (None, "marketing", "receipts"):
        found = await hooks.check("angry@example.org", stream)
        assert (found["suppressed"], found["outcome"], found["scope"]) == (
            True,
            "complaint",
            "global",
        )
    assert (await hooks.check("bored@example.org", "asm-group-7"))["suppressed"] is True
    assert (await hooks.check("bored@example.org", "receipts"))["suppressed"] is False
    for address in ("fine@example.org", "dropped@example.org", "later@example.org"):
        assert (await hooks.check(address, "marketing"))["suppressed"] is False, address


# ------------------------------------------------------------------------- authentication


async def _refused(hooks: Hooks, r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert await hooks.stored() == 0
    assert await hooks.errors() == []


async def test_wrong_signatures_are_401_and_record_nothing(hooks: Hooks) -> None:
    [(sg, _)] = samples("sendgrid")
    headers = sendgrid_headers(sg, str(int(time.time())))
    await _refused(hooks, await hooks.post("sendgrid", sg + b" ", **headers))
    await _refused(hooks, await hooks.post("sendgrid", sg))

    ses = sign_sns(samples("ses")[0][0])
    tampered = json.loads(ses)
    tampered["Message"] = tampered["Message"].replace("jane@", "june@")
    await _refused(hooks, await hooks.post("ses", json.dumps(tampered).encode()))
    other_topic = json.loads(samples("ses")[0][0])
    other_topic["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:someone-else"
    await _refused(hooks, await hooks.post("ses", sign_sns(json.dumps(other_topic).encode())))

    mg = samples("mailgun")[0][0]
    await _refused(hooks, await hooks.post("mailgun", sign_mailgun(mg, key="key-wrong")))
    await _refused(hooks, await hooks.post("mailgun", mg))  # the sample's stale signature

    pm = samples("postmark")[0][0]
    await _refused(hooks, await hooks.post("postmark", pm, Authorization=basic("wrong")))
    await _refused(hooks, await hooks.post("postmark", pm))

    km = samples("kumomta")[0][0]
    await _refused(hooks, await hooks.post("kumomta", km))
    await _refused(hooks, await hooks.post("kumomta", km, Authorization="Bearer sl_" + "x" * 40))


async def test_a_mailgun_token_is_accepted_once(hooks: Hooks) -> None:
    body = sign_mailgun(samples("mailgun")[0][0], token="t" * 50)
    assert (await hooks.post("mailgun", body)).status_code == 200
    r = await hooks.post("mailgun", body)
    assert r.status_code == 401 and "replay" in r.json()["detail"]
    async with hooks.env.services.db.read() as s:
        assert [t.token for t in (await s.execute(select(WebhookToken))).scalars()] == ["t" * 50]


async def test_the_events_scope(hooks: Hooks) -> None:
    _, events_key = await hooks.env.services.keys.create("hook", "events", actor="tests")
    km = samples("kumomta")[0][0]
    bearer = {"Authorization": f"Bearer {events_key}"}
    assert (await hooks.post("kumomta", km, **bearer)).status_code == 200
    # An events key is enough for any sender, without its own signature.
    assert (await hooks.post("postmark", samples("postmark")[0][0], **bearer)).status_code == 200
    r = await hooks.post("kumomta", km, **hooks.env.auth("write"))
    assert r.status_code == 403
    r = await hooks.client.get("/v1/check?address=a@example.org", headers=bearer)
    assert r.status_code == 403


async def test_sns_subscription_confirmation_is_kept_for_the_operator(hooks: Hooks) -> None:
    [body] = [b for b, e in samples("ses") if e["subscribe_url"]]
    r = await hooks.send("ses", body)
    assert r.status_code == 200, r.text
    assert r.json()["subscription"] == json.loads(body)["TopicArn"]
    assert (await hooks.send("ses", body)).status_code == 200
    [pending] = await EventStore(hooks.env.services).subscriptions()
    assert pending.subscribe_url == json.loads(body)["SubscribeURL"]
    assert pending.kind == "SubscriptionConfirmation" and pending.confirmed_at is None
    assert len(set(hooks.fetched)) == 1  # one certificate download, then the cache


async def test_sns_signature_version_1_and_missing_topic_setting(hooks: Hooks) -> None:
    body = samples("ses")[0][0]
    assert (await hooks.post("ses", sign_sns(body, version="1"))).status_code == 200
    async with hooks.env.services.db.read() as s:
        sources = set((await s.execute(select(DeliveryEvent.source))).scalars())
    assert sources == {"ses"}


async def test_postmark_credentials(hooks: Hooks) -> None:
    body = samples("postmark")[0][0]
    r = await hooks.post("postmark", body, Authorization=basic(POSTMARK_PASSWORD))
    assert r.status_code == 200
    r = await hooks.post("postmark", body, Authorization=basic(POSTMARK_PASSWORD, user="other"))
    assert r.status_code == 401


async def test_confirming_a_subscription_fetches_only_sns(hooks: Hooks) -> None:
    store = EventStore(hooks.env.services)
    good = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=t&Token=1"
    assert await store.record_subscription("SubscriptionConfirmation", "t", good)
    assert await store.record_subscription("SubscriptionConfirmation", "t", "https://x.test/")
    asked: list[str] = []

    def sns(request: httpx.Request) -> httpx.Response:  # AWS itself is out of reach here
        asked.append(str(request.url))
        return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")

    async with httpx.AsyncClient(transport=httpx.MockTransport(sns)) as client:
        for sub in await store.subscriptions():
            if sub.subscribe_url == good:
                await confirm_subscription(store, sub, client)
            else:
                with pytest.raises(ConfirmError, match="not an SNS"):
                    await confirm_subscription(store, sub, client)
    assert asked == [good]
    [pending] = await store.subscriptions()
    assert pending.subscribe_url == "https://x.test/"
    assert len(await store.subscriptions(pending_only=False)) == 2


async def test_odd_values_are_stored_cleaned_not_a_failed_batch(hooks: Hooks) -> None:
    body = json.dumps(
        [
            {
                "email": "odd@example.org",
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "reason": "550 5.1.1 Benutzer unbekannt \u00fc \u0000 \ud800 user unknown",
                "sg_event_id": "odd-1",
                "sg_message_id": "m" * 600,
                "timestamp": int(time.time()),
            },
            {"email": "plain@example.org", "event": "delivered", "sg_event_id": "plain-1"},
        ]
    ).encode()
    answer = await _sendgrid_post(hooks, body)
    assert (answer["new"], answer["suppressed"]) == (2, 1)
    async with hooks.env.services.db.read() as s:
        rows = {r.recipient: r for r in (await s.execute(select(DeliveryEvent))).scalars()}
    odd = rows["odd@example.org"]
    assert (
        odd.diagnostic is not None and "\x00" not in odd.diagnostic and "\u00fc" in odd.diagnostic
    )
    assert odd.message_id is not None and len(odd.message_id) == 255
    assert rows["plain@example.org"].kind == "delivered"
    assert (await hooks.check("odd@example.org"))["suppressed"] is True
