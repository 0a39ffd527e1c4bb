"""Every route needs a key with the right scope: the 401/403 matrix, revocation, hashing."""

from __future__ import annotations

from sqlalchemy import select

from app.auth import SCOPES, hash_key, scope_allows
from app.models import ApiKey
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
]


def test_every_api_route_is_in_the_matrix() -> None:
    from app.openapi import build_spec

    paths = {
        (method.upper(), path) for path, item in build_spec()["paths"].items() for method in item
    }
    public = {("GET", "/healthz"), ("GET", "/readyz")}
    # The signed token is the authority for one-click unsubscribes (RFC 8058): no API key.
    public |= {("GET", "/v1/unsubscribe/{token}"), ("POST", "/v1/unsubscribe/{token}")}
    covered = {(m, p.replace(ADDR, "{address}")) for m, p, _, _ in ROUTES}
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
