"""Suppression semantics through the HTTP API, on SQLite + memory cache and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.models import AuditEntry
from app.suppression import SuppressRequest
from tests.conftest import Env


async def suppress(env: Env, address: str, **body: object) -> dict[str, object]:
    r = await env.client.put(f"/v1/suppressions/{address}", json=body, headers=env.auth("write"))
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()
    return result


async def check(env: Env, address: str, stream: str | None = None) -> dict[str, object]:
    params = {"address": address} | ({"stream": stream} if stream else {})
    r = await env.client.get("/v1/check", params=params, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()
    return result


async def assert_cache_matches_db(env: Env, addresses: list[str]) -> None:
    """The cache replica holds exactly what the database says is active."""
    sup = env.services.suppressions
    cached = await env.services.cache.get_many(addresses)
    from_db = await sup.entries_from_db(addresses)
    for address, c, d in zip(addresses, cached, from_db, strict=True):
        assert sorted(c or (), key=lambda e: e.scope) == sorted(d or (), key=lambda e: e.scope), (
            address
        )


async def test_unknown_address_is_not_suppressed(env: Env) -> None:
    assert await check(env, "nobody@example.com") == {
        "address": "nobody@example.com",
        "suppressed": False,
    }


async def test_global_suppression_blocks_every_stream(env: Env) -> None:
    await suppress(env, "Bounced@Example.COM", reason="user_unknown", outcome="hard")
    for stream in (None, "marketing", "transactional"):
        answer = await check(env, "bounced@example.com", stream)
        assert answer["suppressed"] is True
        assert answer["outcome"] == "hard"
        assert answer["reason"] == "user_unknown"
        assert answer["scope"] == "global"
        assert answer["expires_at"] is None
    await assert_cache_matches_db(env, ["bounced@example.com"])


async def test_stream_suppression_blocks_only_its_stream(env: Env) -> None:
    await suppress(env, "reader@example.com", reason="list_unsubscribe", stream="marketing")
    assert (await check(env, "reader@example.com", "marketing"))["suppressed"] is True
    assert (await check(env, "reader@example.com", "transactional"))["suppressed"] is False
    assert (await check(env, "reader@example.com"))["suppressed"] is False
    await assert_cache_matches_db(env, ["reader@example.com"])


async def test_normalisation_is_shared_by_write_and_check(env: Env) -> None:
    await suppress(env, "Üser@Bücher.example", reason="user_unknown", outcome="hard")
    answer = await check(env, "üSER@BÜCHER.example")
    assert answer["suppressed"] is True
    assert answer["address"] == "üser@xn--bcher-kva.example"
    answer = await check(env, "Display Name <üser@xn--bcher-kva.example>")
    assert answer["suppressed"] is True


async def test_expiry_stops_blocking_without_any_job(env: Env) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=1.2)
    await suppress(
        env,
        "full@example.com",
        reason="mailbox_full",
        outcome="soft",
        expires_at=expires.isoformat(),
    )
    assert (await check(env, "full@example.com"))["suppressed"] is True
    await asyncio.sleep(1.4)
    assert (await check(env, "full@example.com"))["suppressed"] is False
    # the database path agrees
    (entries,) = await env.services.suppressions.entries_from_db(["full@example.com"])
    assert entries is None


async def test_no_weakening(env: Env) -> None:
    soon = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    await suppress(env, "a@example.com", reason="user_unknown", outcome="hard")
    r = await suppress(env, "a@example.com", reason="mailbox_full", outcome="soft", expires_at=soon)
    assert r["changed"] is False
    answer = await check(env, "a@example.com")
    assert (answer["outcome"], answer["reason"], answer["expires_at"]) == (
        "hard",
        "user_unknown",
        None,
    )
    # a complaint is not overwritten by a bounce
    await suppress(env, "b@example.com", reason="abuse", outcome="complaint")
    await suppress(env, "b@example.com", reason="user_unknown", outcome="hard")
    assert (await check(env, "b@example.com"))["outcome"] == "complaint"
    # a stronger outcome does replace a weaker one, and permanence wins over expiry
    await suppress(env, "c@example.com", reason="mailbox_full", outcome="soft", expires_at=soon)
    r = await suppress(env, "c@example.com", reason="user_unknown", outcome="hard")
    assert r["changed"] is True
    answer = await check(env, "c@example.com")
    assert (answer["outcome"], answer["expires_at"]) == ("hard", None)
    detail = (
        await env.client.get("/v1/suppressions/c@example.com", headers=env.auth("read"))
    ).json()
    assert detail["suppressions"][0]["hit_count"] == 2
    await assert_cache_matches_db(env, ["a@example.com", "b@example.com", "c@example.com"])


async def test_unsuppress_keeps_reason_and_audit(env: Env) -> None:
    await suppress(env, "typo@example.com", reason="user_unknown", outcome="hard")
    r = await env.client.delete(
        "/v1/suppressions/typo@example.com",
        params={"reason": "customer fixed their mailbox, ticket 4411"},
        headers=env.auth("write"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["removed"] == [{"scope": "global", "outcome": "hard", "reason": "user_unknown"}]
    assert (await check(env, "typo@example.com"))["suppressed"] is False
    await assert_cache_matches_db(env, ["typo@example.com"])
    hist = (
        await env.client.get("/v1/suppressions/typo@example.com/history", headers=env.auth("read"))
    ).json()["items"]
    audit = [i for i in hist if i["type"] == "audit"]
    assert audit[0]["action"] == "unsuppress"
    assert audit[0]["actor"] == "test-write"
    assert audit[0]["reason"] == "customer fixed their mailbox, ticket 4411"
    assert audit[1]["action"] == "suppress"
    kinds = [i["kind"] for i in hist if i["type"] == "event"]
    assert kinds == ["unsuppress", "manual_suppress"]
    # it can be suppressed again afresh
    await suppress(env, "typo@example.com", reason="user_unknown", outcome="hard")
    assert (await check(env, "typo@example.com"))["suppressed"] is True


async def test_unsuppress_requires_reason_and_existing_entry(env: Env) -> None:
    r = await env.client.delete("/v1/suppressions/x@example.com", headers=env.auth("write"))
    assert r.status_code == 422
    r = await env.client.delete(
        "/v1/suppressions/x@example.com", params={"reason": "why not"}, headers=env.auth("write")
    )
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


async def test_complaint_guardrail(env: Env) -> None:
    await suppress(env, "angry@example.com", reason="abuse", outcome="complaint")
    params = {"reason": "customer asked us to resume"}
    r = await env.client.delete(
        "/v1/suppressions/angry@example.com", params=params, headers=env.auth("write")
    )
    assert r.status_code == 403
    r = await env.client.delete(
        "/v1/suppressions/angry@example.com", params=params, headers=env.auth("admin")
    )
    assert r.status_code == 403, "admin without force=true must not remove a complaint"
    r = await env.client.delete(
        "/v1/suppressions/angry@example.com",
        params=params | {"force": "true"},
        headers=env.auth("write"),
    )
    assert r.status_code == 403, "force without admin must not remove a complaint"
    assert (await check(env, "angry@example.com"))["suppressed"] is True
    r = await env.client.delete(
        "/v1/suppressions/angry@example.com",
        params=params | {"force": "true"},
        headers=env.auth("admin"),
    )
    assert r.status_code == 200
    assert (await check(env, "angry@example.com"))["suppressed"] is False
    async with env.services.db.read() as s:
        rows = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "unsuppress"))).all()
    assert [(a.actor, a.address) for a in rows] == [("test-admin", "angry@example.com")]


async def test_batch_check_in_order_with_invalid_slots(env: Env) -> None:
    await suppress(env, "hit@example.com", reason="user_unknown", outcome="hard")
    await suppress(env, "mk@example.com", reason="unsub", outcome="unsubscribe", stream="marketing")
    addresses = ["ok@example.com", "HIT@example.com", "not-an-address", "mk@example.com", ""]
    r = await env.client.post(
        "/v1/check",
        json={"addresses": addresses, "stream": "marketing"},
        headers=env.auth("check"),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["suppressed"] for x in results] == [False, True, None, True, None]
    assert results[2]["address"] == "not-an-address"
    assert results[2]["error"]
    assert results[3]["scope"] == "marketing"


async def test_batch_of_ten_thousand(env: Env) -> None:
    suppressed = {f"user{i}@example.com" for i in range(0, 10_000, 997)}
    for a in suppressed:
        await env.services.suppressions.suppress(
            SuppressRequest(address=a, outcome="hard", reason="user_unknown", source="bounce")
        )
    addresses = [f"user{i}@example.com" for i in range(10_000)]
    r = await env.client.post("/v1/check", json={"addresses": addresses}, headers=env.auth("check"))
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 10_000
    assert {x["address"] for x in results if x["suppressed"]} == suppressed
    assert [x["address"] for x in results] == addresses
    r = await env.client.post(
        "/v1/check", json={"addresses": [*addresses, "one@example.com"]}, headers=env.auth("check")
    )
    assert r.status_code == 422
    assert "10000" in r.json()["detail"]


async def test_database_fallback_answers_a_batch_larger_than_one_query_chunk(env: Env) -> None:
    """The fallback reads more addresses than one IN list holds (SQLite) or as one array
    (PostgreSQL), repeated ones included, and agrees with the cache slot by slot."""
    sup = env.services.suppressions
    suppressed = [f"chunk{i}@example.com" for i in range(0, 2_500, 401)]
    for a in suppressed:
        await sup.suppress(
            SuppressRequest(address=a, outcome="hard", reason="user_unknown", source="bounce")
        )
    addresses = [f"chunk{i}@example.com" for i in range(2_500)] + suppressed[:2]
    from_db = await sup.entries_from_db(addresses)
    assert [a for a, e in zip(addresses, from_db, strict=True) if e] == suppressed + suppressed[:2]
    assert {e[0].outcome for e in from_db if e} == {"hard"}
    await assert_cache_matches_db(env, addresses)


async def test_invalid_address_is_named(env: Env) -> None:
    r = await env.client.get(
        "/v1/check", params={"address": "bob@@example.com"}, headers=env.auth("check")
    )
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_address"
    assert body["detail"]["address"] == "bob@@example.com"
    assert body["detail"]["why"]
    r = await env.client.put(
        "/v1/suppressions/not-an-address", json={"reason": "manual"}, headers=env.auth("write")
    )
    assert r.status_code == 422
    r = await env.client.get(
        "/v1/check",
        params={"address": "a@example.com", "stream": "Bad Stream!"},
        headers=env.auth("check"),
    )
    assert r.status_code == 422
    r = await env.client.put(
        "/v1/suppressions/a@example.com",
        json={"reason": "manual", "expires_at": "2001-01-01T00:00:00Z"},
        headers=env.auth("write"),
    )
    assert r.status_code == 422


async def test_list_filters_and_cursor(env: Env) -> None:
    for i in range(5):
        await suppress(env, f"h{i}@one.example", reason="user_unknown", outcome="hard")
    await suppress(env, "s@two.example", reason="unsub", outcome="unsubscribe", stream="news")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "outcome": "hard"} | ({"cursor": cursor} if cursor else {})
        page = (
            await env.client.get("/v1/suppressions", params=params, headers=env.auth("read"))
        ).json()
        seen += [i["address"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"h{i}@one.example" for i in range(5)]
    page = (
        await env.client.get(
            "/v1/suppressions", params={"stream": "news"}, headers=env.auth("read")
        )
    ).json()
    assert [i["address"] for i in page["items"]] == ["s@two.example"]
    page = (
        await env.client.get(
            "/v1/suppressions", params={"domain": "two.example"}, headers=env.auth("read")
        )
    ).json()
    assert len(page["items"]) == 1


async def test_lookup_shows_evidence(env: Env) -> None:
    await env.services.suppressions.suppress(
        SuppressRequest(
            address="gone@example.com",
            outcome="hard",
            reason="user_unknown",
            source="bounce",
            rule_id="gmail-user-unknown",
            status="5.1.1",
            reply_code=550,
            diagnostic="550 5.1.1 The email account that you tried to reach does not exist.",
            event_kind="bounce",
        )
    )
    r = await env.client.get("/v1/suppressions/gone@example.com", headers=env.auth("read"))
    body = r.json()
    assert body["suppressed_globally"] is True
    (event,) = body["events"]
    assert event["rule_id"] == "gmail-user-unknown"
    assert event["status"] == "5.1.1"
    assert "does not exist" in event["diagnostic"]
    r = await env.client.get("/v1/suppressions/never@example.com", headers=env.auth("read"))
    assert r.status_code == 404


async def test_oversized_body_is_refused(env: Env) -> None:
    body = b'{"addresses": ["' + b"a" * (5 * 1024 * 1024) + b'@example.com"]}'
    r = await env.client.post(
        "/v1/check",
        content=body,
        headers={**env.auth("check"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"] == "too_large"


async def test_list_filters_are_validated_and_normalised_like_export(env: Env) -> None:
    await suppress(env, "u@bücher.example", reason="user_unknown", outcome="hard")
    page = (
        await env.client.get(
            "/v1/suppressions", params={"domain": "BÜCHER.example"}, headers=env.auth("read")
        )
    ).json()
    assert [i["address"] for i in page["items"]] == ["u@xn--bcher-kva.example"]
    r = await env.client.get(
        "/v1/suppressions", params={"outcome": "hardd"}, headers=env.auth("read")
    )
    assert r.status_code == 422
    assert "hardd" in r.json()["detail"]
