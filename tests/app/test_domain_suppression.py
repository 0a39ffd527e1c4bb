"""Whole-domain suppressions: one entry (keyed "@" + domain) blocks every address of the domain,
in the single and the batch check, from the cache and from the database, and only when asked for
explicitly (a recipient string can never become one)."""

from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.suppression import SuppressRequest
from app.suppression.model import merge_domain_entries, with_domain_keys
from tests.conftest import Env


async def suppress_domain(env: Env, domain: str, **kw: object) -> None:
    await env.services.suppressions.suppress(
        SuppressRequest(
            address=domain,
            outcome="manual",
            reason=str(kw.pop("reason", "manual")),
            source="api",
            actor="test",
            whole_domain=True,
            **kw,  # type: ignore[arg-type]
        )
    )


async def check(env: Env, address: str, stream: str | None = None) -> dict[str, object]:
    params = {"address": address} | ({"stream": stream} if stream else {})
    r = await env.client.get("/v1/check", params=params, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    answer: dict[str, object] = r.json()
    return answer


async def batch(env: Env, addresses: list[str], stream: str | None = None) -> list[bool]:
    r = await env.client.post(
        "/v1/check",
        json={"addresses": addresses, "stream": stream},
        headers=env.auth("check"),
    )
    assert r.status_code == 200, r.text
    return [bool(x["suppressed"]) for x in r.json()["results"]]


async def test_a_domain_entry_blocks_every_address_of_the_domain(env: Env) -> None:
    await suppress_domain(env, "Bücher.Example", reason="customer_request")
    answer = await check(env, "anyone@BÜCHER.example")
    assert answer["suppressed"] is True and answer["reason"] == "customer_request"
    assert (await check(env, "anyone@sub.xn--bcher-kva.example"))["suppressed"] is False
    assert (await check(env, "anyone@example.org"))["suppressed"] is False
    assert await batch(
        env, ["a@xn--bcher-kva.example", "b@example.org", "c@bücher.example", "not valid"]
    ) == [True, False, True, False]


async def test_a_stream_domain_entry_blocks_only_its_stream(env: Env) -> None:
    await suppress_domain(env, "@streamy.example", stream="marketing")
    assert (await check(env, "x@streamy.example", "marketing"))["suppressed"] is True
    assert (await check(env, "x@streamy.example", "billing"))["suppressed"] is False
    assert (await check(env, "x@streamy.example"))["suppressed"] is False


async def test_the_strongest_of_address_and_domain_entries_answers(env: Env) -> None:
    await suppress_domain(env, "both.example")
    await env.services.suppressions.suppress(
        SuppressRequest(
            address="jo@both.example", outcome="complaint", reason="abuse", source="complaint"
        )
    )
    assert (await check(env, "jo@both.example"))["outcome"] == "complaint"
    assert (await check(env, "other@both.example"))["outcome"] == "manual"


async def test_unsuppressing_the_domain_clears_it_and_the_database_agrees(env: Env) -> None:
    sup = env.services.suppressions
    await suppress_domain(env, "gone.example")
    assert (await check(env, "a@gone.example"))["suppressed"] is True
    # The database fallback gives the same answer as the cache.
    found = await sup.entries_from_db(with_domain_keys(["a@gone.example"]))
    from_db = merge_domain_entries(["a@gone.example"], found, ["@gone.example"])
    assert from_db[0] and from_db[0][0].outcome == "manual"
    removed = await sup.unsuppress(
        "gone.example",
        stream=None,
        all_scopes=True,
        reason="domain back",
        actor="test",
        may_remove_complaints=False,
        whole_domain=True,
    )
    assert [r["scope"] for r in removed] == ["global"]
    assert (await check(env, "a@gone.example"))["suppressed"] is False
    history = await sup.history("gone.example", whole_domain=True)
    assert [h.get("kind") or h.get("action") for h in history][:2] == ["unsuppress", "unsuppress"]


async def test_an_address_string_never_becomes_a_domain_entry(env: Env) -> None:
    """A bounce or an API call naming "@example.com" is an invalid address, not a domain."""
    with pytest.raises(InvalidInput):
        await env.services.suppressions.suppress(
            SuppressRequest(address="@victim.example", outcome="hard", reason="x", source="bounce")
        )
    r = await env.client.put("/v1/suppressions/@victim.example", json={}, headers=env.auth("write"))
    assert r.status_code == 422
    with pytest.raises(InvalidInput):
        await suppress_domain(env, "not a domain")
    assert (await check(env, "a@victim.example"))["suppressed"] is False


async def test_the_api_suppresses_and_lifts_a_domain_with_an_audit_trail(env: Env) -> None:
    url = "/v1/domain-suppressions/Bücher.Example"
    r = await env.client.put(
        url, json={"reason": "customer_request", "note": "asked"}, headers=env.auth("write")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] is True
    assert body["suppression"]["address"] == "@xn--bcher-kva.example"
    assert (await check(env, "anyone@bücher.example"))["suppressed"] is True
    got = await env.client.get(
        "/v1/domain-suppressions/@xn--bcher-kva.example", headers=env.auth("read")
    )
    assert got.status_code == 200 and got.json()["suppressed_globally"] is True
    history = await env.services.suppressions.history("bücher.example", whole_domain=True)
    assert any(h.get("action") == "suppress" and h.get("actor") for h in history)
    # A read key may look but not write; a reason is required to lift it.
    assert (await env.client.put(url, json={}, headers=env.auth("read"))).status_code == 403
    assert (await env.client.delete(url, headers=env.auth("write"))).status_code == 422
    r = await env.client.delete(url, params={"reason": "customer fixed"}, headers=env.auth("write"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "address": "@xn--bcher-kva.example",
        "removed": [{"scope": "global", "outcome": "manual", "reason": "customer_request"}],
    }
    assert (await check(env, "anyone@bücher.example"))["suppressed"] is False
    assert (
        await env.client.delete(url, params={"reason": "again"}, headers=env.auth("write"))
    ).status_code == 404


async def test_the_api_refuses_what_is_not_a_domain(env: Env) -> None:
    for bad in ("not a domain", "a@b.example", "-bad-.example"):
        r = await env.client.put(
            f"/v1/domain-suppressions/{bad}", json={}, headers=env.auth("write")
        )
        assert r.status_code == 422, (bad, r.text)
    r = await env.client.put("/v1/domain-suppressions/x.example", json={}, headers={})
    assert r.status_code == 401
