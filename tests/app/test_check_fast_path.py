"""``GET`` and ``POST /v1/check`` are answered by ``CheckFastPath`` ahead of FastAPI's router. The
same requests sent under a ``root_path`` (which the fast path leaves to the router) must get the
same answers, errors included, and only the requests without one may go the fast way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.http.routes import check
from app.main import create_app
from app.suppression import SuppressRequest
from tests.conftest import Env

# (method, request arguments, key scope or a literal header value)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("GET", {"params": {"address": "Jane@Example.com"}}, "check"),
    ("GET", {"params": {"address": "clear@example.com"}}, "check"),
    ("GET", {"params": {"address": "jane@example.com", "stream": "news"}}, "check"),
    ("GET", {"params": {"address": "someone@blocked.example"}}, "check"),
    ("GET", {"params": {"address": "not an address"}}, "check"),
    ("GET", {"params": {"address": "x" * 1001}}, "check"),
    ("GET", {}, "check"),
    ("GET", {"params": {"address": "jane@example.com"}}, None),
    ("GET", {"params": {"address": "jane@example.com"}}, "Bearer sl_unknown"),
    ("GET", {"params": {"address": "jane@example.com"}}, "events"),
    (
        "POST",
        {"json": {"addresses": ["jane@example.com", "not an address", "clear@example.com"]}},
        "check",
    ),
    ("POST", {"json": {"addresses": ["jane@example.com"], "stream": "news"}}, "read"),
    ("POST", {"content": b"{not json"}, "check"),
    ("POST", {"json": {"addresses": ["a@example.com"], "extra": 1}}, "check"),
    ("POST", {"json": {"addresses": "a@example.com"}}, "check"),
    ("POST", {"json": {"addresses": ["a@example.com"] * 10_001}}, "check"),
    ("POST", {"json": {"addresses": []}}, None),
    ("PUT", {}, "check"),  # 405 with Allow: the router's answer either way
]
_COMPARED_HEADERS = ("content-type", "www-authenticate", "allow")


async def test_the_fast_path_answers_as_the_router_does(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _suppressed(env)
    _, env.keys["events"] = await env.services.keys.create("test-events", "events", actor="tests")

    taken: list[str] = []

    def counted(
        endpoint: Callable[[Any], Awaitable[Any]],
    ) -> Callable[[Any], Awaitable[Any]]:
        async def call(request: Any) -> Any:
            taken.append(request.method)
            return await endpoint(request)

        return call

    monkeypatch.setattr(check, "_FAST", {m: counted(f) for m, f in check._FAST.items()})
    app = create_app(env.settings, services=env.services)
    direct = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    routed = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/api"), base_url="http://test/api"
    )
    async with direct, routed:
        for method, kwargs, who in CASES:
            headers = {}
            if who is not None:
                headers["Authorization"] = who if " " in who else env.auth(who)["Authorization"]
            before = len(taken)
            fast = await direct.request(method, "/v1/check", headers=headers, **kwargs)
            assert len(taken) == before + (method in ("GET", "POST")), (method, kwargs)
            slow = await routed.request(method, "/v1/check", headers=headers, **kwargs)
            assert len(taken) == before + (method in ("GET", "POST")), "the router was bypassed"
            case = (method, kwargs.get("params"), who, fast.text[:200])
            assert fast.status_code == slow.status_code, case
            assert fast.json() == slow.json(), case
            for name in _COMPARED_HEADERS:
                assert fast.headers.get(name) == slow.headers.get(name), (case, name)


async def test_the_fast_path_answers_what_is_stored(env: Env) -> None:
    """The answers themselves, through the fast path (the comparison above would pass if both
    paths were wrong the same way)."""
    await _suppressed(env)
    one = (await _get(env, {"address": " JANE@example.com "})).json()
    assert (one["address"], one["suppressed"], one["outcome"]) == (
        "jane@example.com",
        True,
        "hard",
    )
    assert (await _get(env, {"address": "other@blocked.example"})).json()["suppressed"] is True
    assert (await _get(env, {"address": "clear@example.com"})).json()["suppressed"] is False
    r = await env.client.post(
        "/v1/check",
        headers=env.auth("check"),
        json={"addresses": ["clear@example.com", "bad address", "jane@example.com"]},
    )
    assert r.status_code == 200
    assert [a.get("suppressed") for a in r.json()["results"]] == [False, None, True]
    assert "error" in r.json()["results"][1]
    denied = await env.client.get("/v1/check", params={"address": "jane@example.com"})
    assert (denied.status_code, denied.headers["www-authenticate"]) == (401, "Bearer")


async def _get(env: Env, params: dict[str, str]) -> httpx.Response:
    return await env.client.get("/v1/check", params=params, headers=env.auth("check"))


async def _suppressed(env: Env) -> None:
    sup = env.services.suppressions
    for address, outcome, reason, stream in [
        ("jane@example.com", "hard", "user_unknown", None),
        ("jane@example.com", "unsubscribe", "unsubscribe", "news"),
    ]:
        await sup.suppress(
            SuppressRequest(
                address=address, outcome=outcome, reason=reason, source="api", stream=stream
            )
        )
    await sup.suppress(
        SuppressRequest(
            address="@blocked.example",
            outcome="manual",
            reason="manual",
            source="api",
            actor="test",
            whole_domain=True,
        )
    )


async def test_an_unexpected_error_is_a_500_either_way(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug below the route is not rendered by the fast path: it goes up to the server-error
    middleware, as it does from the router."""

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(env.services.suppressions, "check_one", broken)
    app = create_app(env.settings, services=env.services)
    answers = []
    for root in ("", "/api"):
        transport = httpx.ASGITransport(app=app, root_path=root, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://test{root}") as c:
            r = await c.get(
                "/v1/check", params={"address": "a@example.com"}, headers=env.auth("check")
            )
            answers.append((r.status_code, r.text))
    assert answers[0] == answers[1]
    assert answers[0][0] == 500
