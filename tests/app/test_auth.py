"""Every route needs a key with the right scope: the 401/403 matrix, revocation, hashing."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event, select

from app.keys import SCOPES, KeyService, hash_key, scope_allows
from app.keys import model as auth
from app.keys import service as key_service
from app.main import create_app
from app.models import ApiKey, AuditEntry
from tests.conftest import Env

ADDR = "someone@example.com"
# (method, path, kwargs, minimum scope)
ROUTES: list[tuple[str, str, dict[str, object], str]] = [
    ("GET", "/v1/check", {"params": {"address": ADDR}}, "check"),
    ("POST", "/v1/check", {"json": {"addresses": [ADDR]}}, "check"),
    ("GET", "/metrics", {}, "check"),
    ("GET", "/v1/suppressions", {}, "read"),
    ("GET", f"/v1/suppressions/{ADDR}", {}, "read"),
    ("GET", f"/v1/suppressions/{ADDR}/history", {}, "read"),
    ("PUT", f"/v1/suppressions/{ADDR}", {"json": {"reason": "manual"}}, "write"),
    ("DELETE", f"/v1/suppressions/{ADDR}", {"params": {"reason": "test run"}}, "write"),
    ("POST", "/v1/suppressions/import", {"content": b"address\n"}, "write"),
    ("GET", "/v1/suppressions/export", {}, "read"),
    ("POST", "/v1/tokens", {"json": {"recipients": [ADDR]}}, "write"),
    ("GET", "/v1/messages/1/explanation", {}, "read"),
    ("GET", "/v1/stats", {}, "read"),
    ("POST", "/v1/events/kumomta", {"content": b"[]"}, "events"),
    ("GET", "/v1/events/errors", {}, "read"),
    ("GET", "/v1/events/delivery/1/explanation", {}, "read"),
    ("POST", "/v1/webhooks", {"json": {"url": "https://10.0.0.1/"}}, "admin"),
    ("GET", "/v1/webhooks", {}, "admin"),
    ("GET", "/v1/webhooks/999", {}, "admin"),
    ("PATCH", "/v1/webhooks/999", {"json": {}}, "admin"),
    ("DELETE", "/v1/webhooks/999", {}, "admin"),
    ("POST", "/v1/webhooks/999/test", {}, "admin"),
    ("POST", "/v1/webhooks/999/replay", {"params": {"since": "2026-01-01"}}, "admin"),
    ("GET", "/v1/feed", {}, "read"),
    ("GET", "/v1/domain-suppressions/example.net", {}, "read"),
    ("PUT", "/v1/domain-suppressions/example.net", {"json": {"reason": "manual"}}, "write"),
    (
        "DELETE",
        "/v1/domain-suppressions/example.net",
        {"params": {"reason": "test run"}},
        "write",
    ),
]


def test_every_api_route_is_in_the_matrix() -> None:
    from app.http.openapi import build_spec

    paths = {
        (method.upper(), path) for path, item in build_spec()["paths"].items() for method in item
    }
    public = {("GET", "/healthz"), ("GET", "/readyz")}
    # The signed token is the authority for one-click unsubscribes (RFC 8058): no API key.
    public |= {("GET", "/v1/unsubscribe/{token}"), ("POST", "/v1/unsubscribe/{token}")}
    covered = {
        (
            m,
            p.replace(ADDR, "{address}")
            .replace("/messages/1/", "/messages/{message_id}/")
            .replace("/events/kumomta", "/events/{source}")
            .replace("/delivery/1/", "/delivery/{ref}/")
            .replace("/webhooks/999", "/webhooks/{sub_id}")
            .replace("/domain-suppressions/example.net", "/domain-suppressions/{domain}"),
        )
        for m, p, _, _ in ROUTES
    }
    assert paths - public == covered


async def test_scope_matrix(env: Env) -> None:
    for method, path, kwargs, needed in ROUTES:
        r = await env.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
        r = await env.client.request(
            method,
            path,
            headers={"Authorization": "Bearer sl_" + "x" * 40},
            **kwargs,  # type: ignore[arg-type]
        )
        assert r.status_code == 401, (method, path, "unknown key")
        r = await env.client.request(
            method,
            path,
            headers={"Authorization": f"Basic {env.keys['admin']}"},
            **kwargs,  # type: ignore[arg-type]
        )
        assert r.status_code == 401, (method, path, "not bearer")
        for scope in SCOPES:
            r = await env.client.request(method, path, headers=env.auth(scope), **kwargs)  # type: ignore[arg-type]
            if scope_allows(scope, needed):
                assert r.status_code not in (401, 403), (method, path, scope, r.text)
            else:
                assert r.status_code == 403, (method, path, scope)
                assert r.json()["error"] == "forbidden"


async def test_health_needs_no_key(env: Env) -> None:
    assert (await env.client.get("/healthz")).json() == {"status": "ok"}
    r = await env.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_keys_are_hashed_and_revocable(env: Env) -> None:
    async with env.services.db.read() as s:
        stored = (await s.scalars(select(ApiKey.key_hash))).all()
    for key in env.keys.values():
        assert key not in stored
        assert hash_key(key) in stored
    _, key = await env.services.keys.create("temp", "check", actor="tests")
    headers = {"Authorization": f"Bearer {key}"}
    params = {"address": ADDR}
    assert (await env.client.get("/v1/check", params=params, headers=headers)).status_code == 200
    await env.services.keys.revoke("temp", actor="tests")
    assert (await env.client.get("/v1/check", params=params, headers=headers)).status_code == 401


async def test_key_listing_never_shows_keys(env: Env) -> None:
    listing = await env.services.keys.list()
    text = repr(listing)
    for key in env.keys.values():
        assert key not in text
    assert {k["name"] for k in listing} >= {"test-check", "test-admin"}


async def test_bootstrap_creates_one_admin_key_only_on_empty_install(env: Env) -> None:
    assert await env.services.keys.ensure_bootstrap(None) is None  # keys exist already


@contextlib.asynccontextmanager
async def served(env: Env) -> AsyncIterator[str]:
    """The app behind a real uvicorn on loopback, logging at DEBUG with its access log on (as an
    operator chasing a problem might run it); yields the base URL."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    levels = {name: logging.getLogger(name).level for name in names}
    config = uvicorn.Config(
        create_app(env.settings, services=env.services),
        host="127.0.0.1",
        port=0,
        log_level="debug",
        access_log=True,
        log_config=None,  # uvicorn's records propagate to the root logger (and caplog)
        http="h11",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


async def test_key_material_is_never_logged_or_returned(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A key is shown once, when it is created, and never again: not in any log record at DEBUG
    (uvicorn's access log included), not in any answer (success, 401, 403), not in the listing or
    the audit trail, through creation, use, failed authentication and revocation."""
    caplog.set_level(logging.DEBUG)  # the root logger: every record of every library
    info, key = await env.services.keys.create("leak-check", "read", actor="tests")
    assert info.scope == "read"
    near = key[:-1] + ("A" if key[-1] != "A" else "B")  # one character off
    answers: list[httpx.Response] = []
    async with served(env) as base, httpx.AsyncClient(base_url=base) as client:

        async def get(path: str, presented: str, **params: Any) -> int:
            r = await client.get(
                path, params=params, headers={"Authorization": f"Bearer {presented}"}
            )
            answers.append(r)
            return r.status_code

        assert await get("/v1/suppressions", key) == 200
        assert await get("/v1/check", key, address="x@example.com") == 200
        assert await get("/v1/suppressions/import", key) == 405
        r = await client.post(
            "/v1/tokens",
            json={"recipients": ["x@example.com"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        answers.append(r)
        assert r.status_code == 403  # read scope
        assert await get("/v1/suppressions", near) == 401
        assert await get("/v1/suppressions", key + "x") == 401  # malformed
        assert await get("/v1/suppressions", key.upper()) == 401
        await env.services.keys.revoke("leak-check", actor="tests")
        assert await get("/v1/suppressions", key) == 401
    listing = repr(await env.services.keys.list())
    async with env.services.db.read() as s:
        audit = repr([(a.action, a.detail) for a in (await s.scalars(select(AuditEntry))).all()])
    assert "key_create" in audit and "key_revoke" in audit

    secrets = {key, key[len(auth.KEY_PREFIX) :], near, near[len(auth.KEY_PREFIX) :]}
    records = [
        " ".join([r.getMessage(), repr(r.args), r.exc_text or "", repr(getattr(r, "scope", ""))])
        for r in caplog.records
    ]
    assert any(r.name.startswith("uvicorn") for r in caplog.records), "uvicorn logged nothing"
    assert any("GET /v1/suppressions" in text for text in records), "no access log line"
    for secret in secrets:
        for text in records:
            assert secret not in text, text
        for r in answers:
            assert secret not in r.text and secret not in repr(r.headers), (r.status_code, r.text)
        assert secret not in listing and secret not in audit
    # The listing names keys by name and prefix only: not the hash either.
    assert hash_key(key) not in listing


async def test_keys_are_found_by_hash_and_compared_in_constant_time(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing safety: the presented key is never compared with a stored secret. It is hashed
    (SHA-256) and the hash looked up by the database's index; the row found is checked again with
    ``hmac.compare_digest``. Fails if authentication starts comparing keys themselves (the key
    reaches the database, or a plain ``==`` replaces ``compare_digest``)."""
    _, key = await env.services.keys.create("timing", "check", actor="tests")
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append(f"{statement} {parameters!r}")

    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def compare_digest(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(key_service.hmac, "compare_digest", compare_digest)
    engine = env.services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        keys = KeyService(env.services.db)  # nothing remembered: the database is asked
        found = await keys.authenticate(key)
        # The stored prefix is no shortcut: a key sharing it and nothing else is refused.
        other = key[:8] + ("a" if key[8] != "a" else "b") + key[9:]
        assert await keys.authenticate(other) is None
        await keys.close()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert found is not None and found.name == "timing"
    sql = "\n".join(statements)
    assert hash_key(key) in sql and hash_key(other) in sql
    for secret in (key, key[len(auth.KEY_PREFIX) :], other):
        assert secret not in sql
    assert (hash_key(key), hash_key(key)) in compared
