"""Outbound webhooks end to end: a real receiver on loopback (an allowed network) gets exactly one
verified event per committed change, through the API, the SMTP sink and an import; a rolled-back
change sends nothing; retries honour Retry-After; dead letters replay; SSRF targets are refused.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from app.intake.parse_pool import ParsingPool
from app.models import OutboxEvent, WebhookDelivery, utcnow
from app.settings import Settings
from app.suppression import SuppressRequest
from app.webhooks import guard
from app.webhooks.guard import TargetRefused, check_target, judge, parse_networks
from app.webhooks.sender import Sender
from app.webhooks.service import WebhookService
from app.webhooks.worker import DeliveryWorker
from tests.app.test_smtp import HARD_BOUNCE, send, start_sink
from tests.app.webhook_receiver import Receiver
from tests.conftest import Env, close_env, make_env

LOOPBACK = ["127.0.0.0/8"]


@pytest_asyncio.fixture(loop_scope="session")
async def wenv(env_settings: Settings) -> AsyncIterator[Env]:
    settings = env_settings.model_copy(
        update={"webhook_allowed_networks": LOOPBACK, "webhook_retry_delays_s": [0.05, 0.05]}
    )
    e = await make_env("sqlite" if settings.is_sqlite else "postgres", settings)
    try:
        yield e
    finally:
        await close_env(e)


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def worker_for(env: Env, **overrides: Any) -> DeliveryWorker:
    settings = env.settings.model_copy(update=overrides)
    return DeliveryWorker(env.services.db, WebhookService(env.services.db, settings))


async def subscribe(env: Env, url: str, **body: Any) -> tuple[int, str]:
    r = await env.client.post("/v1/webhooks", json={"url": url, **body}, headers=env.auth("admin"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"]), str(r.json()["secret"])


async def drain(worker: DeliveryWorker, until: Callable[[], bool], timeout: float = 15.0) -> None:
    """Run worker rounds until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not met in time"
        if not await worker.step():
            await asyncio.sleep(0.02)


async def settle(worker: DeliveryWorker, rounds: int = 5) -> None:
    """A few more rounds, to show nothing else arrives."""
    for _ in range(rounds):
        await worker.step()
        await asyncio.sleep(0.02)


def verified(receiver: Receiver, secret: str) -> list[tuple[str, dict[str, Any]]]:
    """(webhook-id, payload) of every request, each verified with the standardwebhooks package."""
    hook = Webhook(secret)
    return [(r.headers["webhook-id"], hook.verify(r.body, r.headers)) for r in receiver.requests]


async def put(env: Env, address: str, **body: Any) -> None:
    r = await env.client.put(
        f"/v1/suppressions/{address}", json={"reason": "manual", **body}, headers=env.auth("write")
    )
    assert r.status_code == 200, r.text


async def test_api_changes_arrive_once_each_signed(wenv: Env, receiver: Receiver) -> None:
    sub, secret = await subscribe(wenv, receiver.url)
    worker = worker_for(wenv)
    try:
        await put(wenv, "jane@example.com")
        await put(wenv, "jane@example.com")  # unchanged: no event
        await put(wenv, "jane@example.com", outcome="complaint", reason="abuse")  # stronger
        r = await wenv.client.delete(
            "/v1/suppressions/jane@example.com",
            params={"reason": "asked", "force": "true"},
            headers=wenv.auth("admin"),
        )
        assert r.status_code == 200, r.text
        await drain(worker, lambda: len(receiver.requests) >= 3)
        await settle(worker)
    finally:
        await worker.stop()
    events = verified(receiver, secret)
    types = [p["type"] for _, p in events]
    assert types == ["suppression.created", "suppression.updated", "suppression.removed"]
    assert len({i for i, _ in events}) == 3
    created = events[0][1]["data"]
    assert created["address"] == "jane@example.com"
    assert (created["scope"], created["source"], created["actor"]) == (
        "global",
        "api",
        "test-write",
    )
    assert created["schema_version"] == 1
    assert events[1][1]["data"]["outcome"] == "complaint"
    # The feed holds the same events, same ids, in commit order.
    r = await wenv.client.get("/v1/feed", params={"after": 0}, headers=wenv.auth("read"))
    assert r.status_code == 200
    feed = r.json()
    assert [e["id"] for e in feed["events"]] == [i for i, _ in events]
    r = await wenv.client.get(
        "/v1/feed", params={"after": feed["events"][0]["cursor"]}, headers=wenv.auth("read")
    )
    assert [e["type"] for e in r.json()["events"]] == types[1:]
    assert sub > 0


async def test_a_rolled_back_change_sends_nothing(wenv: Env, receiver: Receiver) -> None:
    await subscribe(wenv, receiver.url)
    worker = worker_for(wenv)
    sup = wenv.services.suppressions

    class Boom(Exception):
        pass

    try:
        with pytest.raises(Boom):
            async with wenv.services.db.write() as s:
                req = SuppressRequest("rolled@example.com", "hard", "user_unknown", "api")
                await sup.write_suppressions(s, [req], utcnow())
                raise Boom
        await settle(worker)
        async with wenv.services.db.read() as s:
            assert await s.scalar(select(func.count()).select_from(OutboxEvent)) == 0
        assert receiver.requests == []
    finally:
        await worker.stop()


async def test_smtp_bounce_events_once_per_change(
    wenv: Env, receiver: Receiver, parse_pool: ParsingPool
) -> None:
    _, secret = await subscribe(wenv, receiver.url)
    worker = worker_for(wenv)
    sink = await start_sink(wenv, parse_pool, process=True)
    try:
        code, msg = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
        assert code == 250, msg
        await drain(worker, lambda: len(receiver.requests) >= 2)
        # The same message again (an MTA retrying) is stored once: nothing new is sent.
        code, msg = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
        assert code == 250, msg
        await asyncio.sleep(0.5)
        await settle(worker)
    finally:
        await sink.stop()
        await worker.stop()
    events = verified(receiver, secret)
    assert sorted(p["type"] for _, p in events) == ["bounce.recorded", "suppression.created"]
    bounce = next(p["data"] for _, p in events if p["type"] == "bounce.recorded")
    assert (bounce["source"], bounce["outcome"]) == ("smtp", "hard")
    assert bounce["rule_id"] and bounce["reply"]["status"].startswith("5.")
    assert bounce["message_id"] is not None


async def test_an_import_sends_one_summary(wenv: Env, receiver: Receiver) -> None:
    _, secret = await subscribe(wenv, receiver.url)
    worker = worker_for(wenv)
    csv = "address,outcome,reason\n" + "".join(
        f"u{i}@example.com,hard,imported\n" for i in range(50)
    )
    try:
        r = await wenv.client.post(
            "/v1/suppressions/import",
            content=csv.encode(),
            headers={**wenv.auth("write"), "Content-Type": "text/csv"},
        )
        assert r.status_code == 200, r.text
        await drain(worker, lambda: len(receiver.requests) >= 1)
        await settle(worker)
    finally:
        await worker.stop()
    [(_, payload)] = verified(receiver, secret)
    assert payload["type"] == "import.finished"
    assert (payload["data"]["inserted"], payload["data"]["rows"]) == (50, 50)


async def test_retry_after_is_honoured(wenv: Env, receiver: Receiver) -> None:
    _, secret = await subscribe(wenv, receiver.url)
    receiver.answers = [(503, {"Retry-After": "1"})]
    worker = worker_for(wenv)
    try:
        await put(wenv, "retry@example.com")
        await drain(worker, lambda: len(receiver.requests) >= 2)
    finally:
        await worker.stop()
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 0.9  # the schedule alone says 0.05 s
    assert len(verified(receiver, secret)) == 2


async def test_dead_letter_then_replay(wenv: Env, receiver: Receiver) -> None:
    sub, secret = await subscribe(wenv, receiver.url)
    receiver.default = 500
    worker = worker_for(wenv)
    try:
        await put(wenv, "dead@example.com")
        await drain(worker, lambda: len(receiver.requests) >= 3)  # 1 + 2 retries, then dead
        await settle(worker)
        assert len(receiver.requests) == 3
        r = await wenv.client.get(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
        [dead] = r.json()["dead"]
        assert (dead["attempts"], dead["last_status"]) == (3, 500)
        receiver.default = 200
        since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        r = await wenv.client.post(
            f"/v1/webhooks/{sub}/replay", params={"since": since}, headers=wenv.auth("admin")
        )
        assert r.json() == {"queued": 1}
        await drain(worker, lambda: len(receiver.requests) >= 4)
    finally:
        await worker.stop()
    ids = {i for i, _ in verified(receiver, secret)}
    assert len(ids) == 1  # the same event, the same webhook-id


async def test_one_address_in_order_head_of_line(wenv: Env, receiver: Receiver) -> None:
    """A failing event of an address holds back that address's later events, not others'."""
    _, secret = await subscribe(wenv, receiver.url)
    receiver.answers = [(500, {})]
    worker = worker_for(wenv, webhook_retry_delays_s=[1.0, 1.0])
    try:
        await put(wenv, "order@example.com")
        await put(wenv, "order@example.com", outcome="complaint", reason="abuse")
        await worker.step()  # only the first event of the address goes out, and fails
        assert len(receiver.requests) == 1
        await put(wenv, "other@example.com")
        await drain(worker, lambda: len(receiver.requests) >= 4)
    finally:
        await worker.stop()
    seen = [(p["data"]["address"], p["type"]) for _, p in verified(receiver, secret)]
    assert seen[0] == ("order@example.com", "suppression.created")  # failed
    mine = [t for a, t in seen[1:] if a == "order@example.com"]
    assert mine == ["suppression.created", "suppression.updated"]
    assert seen[1] == ("other@example.com", "suppression.created")  # not held back


async def test_failing_endpoint_is_disabled_and_re_enabled(wenv: Env, receiver: Receiver) -> None:
    sub, _ = await subscribe(wenv, receiver.url)
    receiver.default = 500
    worker = worker_for(wenv, webhook_disable_after_h=0.0001, webhook_retry_delays_s=[0.5] * 5)
    try:
        await put(wenv, "flaky@example.com")
        await drain(worker, lambda: len(receiver.requests) >= 2)
        r = await wenv.client.get(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
        assert r.json()["enabled"] is False and r.json()["disabled_reason"]
        count = len(receiver.requests)
        await asyncio.sleep(0.6)
        await settle(worker)
        assert len(receiver.requests) == count  # disabled: nothing sent, nothing dropped
        receiver.default = 200
        r = await wenv.client.patch(
            f"/v1/webhooks/{sub}", json={"enabled": True}, headers=wenv.auth("admin")
        )
        assert r.json()["enabled"] is True and r.json()["failing_since"] is None
        await drain(worker, lambda: len(receiver.requests) > count)
    finally:
        await worker.stop()
    async with wenv.services.db.read() as s:
        states = (await s.scalars(select(WebhookDelivery.state))).all()
    assert states == ["sent"]


async def test_a_success_clears_the_failure_record(wenv: Env, receiver: Receiver) -> None:
    """A failed attempt records the endpoint as failing; the retry that succeeds (claimed
    while the record existed) clears it, so the endpoint is never disabled for an old failure."""
    sub, _ = await subscribe(wenv, receiver.url)
    receiver.answers = [(500, {})]
    worker = worker_for(wenv, webhook_retry_delays_s=[0.3, 0.3])
    try:
        await put(wenv, "recovers@example.com")
        await worker.step()
        r = await wenv.client.get(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
        assert r.json()["failing_since"] is not None
        await drain(worker, lambda: len(receiver.requests) >= 2)
    finally:
        await worker.stop()
    r = await wenv.client.get(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
    assert r.json()["enabled"] is True and r.json()["failing_since"] is None


async def test_rotation_signs_with_both_secrets(wenv: Env, receiver: Receiver) -> None:
    sub, old = await subscribe(wenv, receiver.url)
    r = await wenv.client.patch(
        f"/v1/webhooks/{sub}", json={"rotate_secret": True}, headers=wenv.auth("admin")
    )
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != old
    worker = worker_for(wenv)
    try:
        await put(wenv, "rotate@example.com")
        await drain(worker, lambda: len(receiver.requests) >= 1)
    finally:
        await worker.stop()
    assert len(receiver.requests[0].headers["webhook-signature"].split(" ")) == 2
    assert verified(receiver, old) and verified(receiver, new)
    listed = await wenv.client.get("/v1/webhooks", headers=wenv.auth("admin"))
    assert "secret" not in json.dumps(listed.json()["webhooks"][0]).replace('"secret": null', "")


async def test_test_ping_and_scopes(wenv: Env, receiver: Receiver) -> None:
    r = await wenv.client.post(
        "/v1/webhooks", json={"url": receiver.url}, headers=wenv.auth("write")
    )
    assert r.status_code == 403
    sub, secret = await subscribe(wenv, receiver.url, events=["suppression.removed"])
    r = await wenv.client.post(f"/v1/webhooks/{sub}/test", headers=wenv.auth("admin"))
    assert r.json() == {"ok": True, "status": 200, "error": None}
    [(_, ping)] = verified(receiver, secret)
    assert ping["type"] == "webhook.test"
    r = await wenv.client.get("/v1/feed", headers=wenv.auth("check"))
    assert r.status_code == 403
    r = await wenv.client.delete(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
    assert r.status_code == 204
    r = await wenv.client.get(f"/v1/webhooks/{sub}", headers=wenv.auth("admin"))
    assert r.status_code == 404


async def test_unsafe_targets_are_refused(wenv: Env, receiver: Receiver) -> None:
    for url in (
        "https://10.0.0.1/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "http://93.184.216.34/hook",  # http outside the allowed networks
        "ftp://127.0.0.1/",
        "https://user:pw@127.0.0.1/",
    ):
        r = await wenv.client.post("/v1/webhooks", json={"url": url}, headers=wenv.auth("admin"))
        assert r.status_code == 422, (url, r.text)
    # Saved while loopback was allowed; the worker's own guard (no allowed networks) refuses it
    # at send time, as it would a name that re-resolved to an internal address.
    await subscribe(wenv, receiver.url)
    worker = worker_for(wenv, webhook_allowed_networks=[])
    try:
        await put(wenv, "ssrf@example.com")
        await settle(worker)
    finally:
        await worker.stop()
    assert receiver.requests == []
    async with wenv.services.db.read() as s:
        [error] = (await s.scalars(select(WebhookDelivery.last_error))).all()
    assert error is not None and "127.0.0.1" in error


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_guard_refuses_internal_addresses(address: str) -> None:
    with pytest.raises(TargetRefused):
        judge("https", "hooks.example.com", [address], ())
    judge("http", "hooks.example.com", [address], parse_networks(["0.0.0.0/0", "::/0"]))


def test_guard_judges_every_address() -> None:
    judge("https", "hooks.example.com", ["93.184.216.34"], ())
    with pytest.raises(TargetRefused):  # one internal address among public ones is enough
        judge("https", "hooks.example.com", ["93.184.216.34", "10.0.0.1"], ())
    with pytest.raises(TargetRefused):  # http only inside an allowed network
        judge("http", "hooks.example.com", ["93.184.216.34"], ())


async def test_guard_judges_an_address_in_the_url_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["10.0.0.1"]  # what a rebinding name would resolve to

    monkeypatch.setattr(guard, "resolve", resolve)
    target = await check_target("http://127.0.0.1:8080/hook", parse_networks(LOOPBACK))
    assert (target.addresses, target.host_header) == (("127.0.0.1",), "127.0.0.1:8080")
    target = await check_target("https://[2001:4860::8888]/hook", ())
    assert (target.addresses, target.host, target.port) == (
        ("2001:4860::8888",),
        "2001:4860::8888",
        443,
    )
    # Still judged: internal addresses are refused as they are when a name resolves to them.
    for url in (
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "http://93.184.216.34/hook",  # http outside the allowed networks
    ):
        with pytest.raises(TargetRefused):
            await check_target(url, parse_networks(LOOPBACK))
    assert looked_up == []
    # A name is still looked up, and the addresses it resolves to are judged.
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.1"):
        await check_target("https://hooks.example.com/hook", ())
    assert looked_up == ["hooks.example.com"]


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    other = await Receiver().start()
    sender = Sender(timeout_s=2, allowed=parse_networks(LOOPBACK))
    try:
        receiver.answers = [(302, {"Location": other.url})]
        attempt = await sender.post(receiver.url, "msg_1", b"{}", ["whsec_" + "A" * 32])
    finally:
        await sender.close()
        await other.stop()
    assert (attempt.ok, attempt.status) == (False, 302)
    assert other.requests == []


async def test_a_silent_endpoint_times_out() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(timeout_s=0.3, allowed=parse_networks(LOOPBACK))
    started = time.monotonic()
    try:
        attempt = await sender.post(f"http://127.0.0.1:{port}/", "m", b"{}", ["whsec_AAAA"])
    finally:
        await sender.close()
        server.close()
    assert not attempt.ok and "timed out" in (attempt.error or "")
    assert time.monotonic() - started < 3


async def test_a_huge_answer_is_cut_short_and_204_keeps_the_connection() -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                if body == b"big":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" * 50)
                else:
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    sender = Sender(timeout_s=2, allowed=parse_networks(LOOPBACK))
    try:
        for body in (b"small", b"small", b"big", b"small"):
            attempt = await sender.post(url, "m", body, ["whsec_AAAA"])
            assert attempt.ok, attempt
    finally:
        await sender.close()
        server.close()
    assert connections == 2  # the 204s share one; the cut-short answer costs its connection
