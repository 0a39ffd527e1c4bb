"""One-click unsubscribe (RFC 8058) over HTTP, on both backends."""

from __future__ import annotations

from datetime import timedelta

from app.signing import Signer
from tests.app.test_policy import check, configure, events
from tests.conftest import Env

ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # the form body RFC 8058 §3 prescribes


async def test_one_click_unsubscribes_from_the_tokens_stream(env: Env) -> None:
    signer = configure(env)
    token = signer.unsubscribe_token("carol@example.com", "newsletter")
    r = await env.client.post(f"/v1/unsubscribe/{token}", data=ONE_CLICK)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "unsubscribed": True,
        "address": "carol@example.com",
        "scope": "newsletter",
        "already": False,
    }
    answer = await check(env, "carol@example.com", "newsletter")
    assert (answer["outcome"], answer["scope"], answer["verified"]) == (
        "unsubscribe",
        "newsletter",
        True,
    )
    assert (await check(env, "carol@example.com", "transactional"))["suppressed"] is False
    r = await env.client.get("/v1/suppressions/carol@example.com/history", headers=env.auth("read"))
    (item,) = [i for i in r.json()["items"] if i["type"] == "event"]
    assert (item["kind"], item["detail"]["via"]) == ("unsubscribe", "one_click")


async def test_get_shows_a_form_and_changes_nothing(env: Env) -> None:
    signer = configure(env)
    token = signer.unsubscribe_token("dave@example.com", "newsletter")
    r = await env.client.get(f"/v1/unsubscribe/{token}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in r.text
    assert "d***@example.com" in r.text and "dave@" not in r.text
    assert r.headers["cache-control"] == "no-store"
    assert (await check(env, "dave@example.com", "newsletter"))["suppressed"] is False
    assert await events(env, "dave@example.com") == []


async def test_browser_form_post_gets_a_page(env: Env) -> None:
    signer = configure(env)
    token = signer.unsubscribe_token("erin@example.com", None)
    r = await env.client.post(
        f"/v1/unsubscribe/{token}", data=ONE_CLICK, headers={"Accept": "text/html"}
    )
    assert r.status_code == 200
    assert "marketing mail" in r.text  # no stream in the token: the configured default
    assert (await check(env, "erin@example.com", "marketing"))["suppressed"] is True


async def test_repeated_clicks_are_idempotent(env: Env) -> None:
    signer = configure(env)
    token = signer.unsubscribe_token("frank@example.com", "newsletter")
    first = await env.client.post(f"/v1/unsubscribe/{token}", data=ONE_CLICK)
    second = await env.client.post(f"/v1/unsubscribe/{token}", data=ONE_CLICK)
    assert (first.json()["already"], second.json()["already"]) == (False, True)
    assert len(await events(env, "frank@example.com")) == 1


async def test_bad_tokens_change_nothing(env: Env) -> None:
    signer = configure(env)
    token = signer.unsubscribe_token("grace@example.com", "newsletter")
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    cases = {
        "not-a-token!": 400,  # malformed
        tampered: 404,  # forged
        signer.ref_token("grace@example.com", "newsletter"): 404,  # minted for another use
    }
    for bad, status in cases.items():
        r = await env.client.post(f"/v1/unsubscribe/{bad}", data=ONE_CLICK)
        assert r.status_code == status, (bad, r.text)
        assert r.json()["error"] == "invalid_token"
        page = await env.client.get(f"/v1/unsubscribe/{bad}")
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
    assert (await check(env, "grace@example.com", "newsletter"))["suppressed"] is False
    assert await events(env, "grace@example.com") == []


async def test_expired_token_is_gone(env: Env) -> None:
    signer = configure(env)
    old = Signer(
        list(signer.keys.values()), unsubscribe_max_age=timedelta(days=1)
    ).unsubscribe_token("heidi@example.com", "newsletter", now=1_600_000_000)
    r = await env.client.post(f"/v1/unsubscribe/{old}", data=ONE_CLICK)
    assert r.status_code == 410
    assert r.json()["detail"]["reason"] == "expired"
    assert (await check(env, "heidi@example.com", "newsletter"))["suppressed"] is False


async def test_without_keys_links_are_not_found(env: Env) -> None:
    r = await env.client.post("/v1/unsubscribe/AAAAAAAAAAAAAAAAAAAAAAAAAAAA", data=ONE_CLICK)
    assert r.status_code == 404


async def test_mint_endpoint(env: Env) -> None:
    configure(env)
    r = await env.client.post(
        "/v1/tokens",
        json={"recipients": ["ivan@example.com", "nope"], "stream": "newsletter"},
        headers=env.auth("write"),
    )
    assert r.status_code == 200
    ok, bad = r.json()["results"]
    assert ok["return_path"].endswith("=ivan=example.com@bounces.example.net")
    assert "error" in bad
    r = await env.client.post(ok["unsubscribe_url"].removeprefix("https://stoplist.example.net"))
    assert r.json()["address"] == "ivan@example.com"
