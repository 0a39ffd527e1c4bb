"""The support console through HTTP (ASGI client), on SQLite + memory and PostgreSQL + Redis:
sign-in and sessions, CSRF, scopes, the pages' answers and that hostile data stays inert text."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, update

from app.console.jobs import STALE_S, ImportJobs
from app.console.sessions import SignInThrottle
from app.intake import IntakeStore
from app.main import create_app
from app.models import AuditEntry, ConsoleImport, ConsoleSession, utcnow
from app.suppression import SuppressRequest
from tests.conftest import Env

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def client_for(env: Env) -> httpx.AsyncClient:
    """A browser of its own (cookie jar) on an app sharing the environment's services."""
    app = create_app(env.settings, services=env.services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, html[:2000]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str, nxt: str = "/") -> httpx.Response:
    form = await client.get("/signin")
    return await client.post("/signin", data={"key": key, "csrf": csrf_of(form.text), "next": nxt})


@pytest_asyncio.fixture(loop_scope="session")
async def browsers(env: Env) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A signed-in client per scope (read, write, admin)."""
    clients = {}
    for scope in ("read", "write", "admin"):
        clients[scope] = client_for(env)
        r = await sign_in(clients[scope], env.keys[scope])
        assert r.status_code == 303, r.text
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()


async def csrf_token(client: httpx.AsyncClient) -> str:
    return csrf_of((await client.get("/find")).text)


async def suppress(env: Env, address: str, **kw: object) -> None:
    req = SuppressRequest(
        address=address,
        outcome=str(kw.pop("outcome", "hard")),
        reason=str(kw.pop("reason", "user_unknown")),
        source=str(kw.pop("source", "bounce")),
        **kw,  # type: ignore[arg-type]
    )
    await env.services.suppressions.suppress(req)


async def checked(env: Env, address: str) -> bool:
    r = await env.client.get("/v1/check", params={"address": address}, headers=env.auth("check"))
    return bool(r.json()["suppressed"])


# ------------------------------------------------------------------------------ sign-in


async def test_pages_need_a_session_and_send_security_headers(env: Env) -> None:
    async with client_for(env) as c:
        r = await c.get("/find?q=a@example.com")
        assert r.status_code == 303
        assert r.headers["location"] == "/signin?next=" + quote("/find?q=a@example.com", safe="")
        form = await c.get("/signin")
        csp = form.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert form.headers["x-content-type-options"] == "nosniff"
        assert form.headers["referrer-policy"] == "same-origin"
        assert "<script" not in form.text


async def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_it(env: Env) -> None:
    async with client_for(env) as c:
        r = await sign_in(c, env.keys["read"], nxt="/list")
        assert r.status_code == 303 and r.headers["location"] == "/list"
        cookie = next(h for h in r.headers.get_list("set-cookie") if "stoplist_console=" in h)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; set under HTTPS
        page = await c.get("/")
        assert page.status_code == 200 and "test-read" in page.text
        token = csrf_of(page.text)
        out = await c.post("/signout", data={"csrf": token})
        assert out.status_code == 303
        async with env.services.db.read() as s:
            assert (await s.scalars(select(ConsoleSession))).all() == []
        assert (await c.get("/")).status_code == 303


async def test_the_key_itself_is_not_kept_and_next_stays_on_site(env: Env) -> None:
    async with client_for(env) as c:
        r = await sign_in(c, env.keys["read"], nxt="//evil.example/x")
        assert r.headers["location"] == "/"
        assert env.keys["read"] not in str(c.cookies)
        async with env.services.db.read() as s:
            rows = (await s.scalars(select(ConsoleSession))).all()
        assert len(rows) == 1 and env.keys["read"] not in (rows[0].id + rows[0].csrf)


async def test_bad_keys_are_refused_and_repeated_failures_slow_down(env: Env) -> None:
    async with client_for(env) as c:
        r = await sign_in(c, env.keys["check"])
        assert r.status_code == 401 and "read scope" in r.text
        for _ in range(4):
            r = await sign_in(c, "sl_" + "x" * 40)
            assert r.status_code == 401
        r = await sign_in(c, env.keys["admin"])  # the right key, but too soon
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "stoplist_console=" not in r.headers.get("set-cookie", "")


def test_throttle_waits_longer_after_each_failure() -> None:
    now = [100.0]
    t = SignInThrottle(free=2, cap=10, clock=lambda: now[0])
    for _ in range(2):
        assert t.wait_s("a") == 0
        t.failed("a")
    assert t.wait_s("a") == 1.0
    t.failed("a")
    assert t.wait_s("a") == 2.0
    assert t.wait_s("b") == 0
    now[0] += 2
    assert t.wait_s("a") == 0
    for _ in range(10):
        t.failed("a")
    assert t.wait_s("a") == 10  # capped
    t.succeeded("a")
    assert t.wait_s("a") == 0


async def test_sign_in_form_needs_its_token(env: Env) -> None:
    async with client_for(env) as c:
        r = await c.post("/signin", data={"key": env.keys["admin"]})
        assert r.status_code == 403
        assert "stoplist_console=" not in r.headers.get("set-cookie", "")


async def test_idle_and_absolute_expiry_end_a_session(env: Env) -> None:
    async with client_for(env) as c:
        await sign_in(c, env.keys["read"])
        assert (await c.get("/")).status_code == 200
        async with env.services.db.write() as s:
            await s.execute(
                update(ConsoleSession).values(last_seen_at=utcnow() - timedelta(minutes=31))
            )
        assert (await c.get("/")).status_code == 303
        await sign_in(c, env.keys["read"])
        async with env.services.db.write() as s:
            await s.execute(
                update(ConsoleSession).values(created_at=utcnow() - timedelta(hours=13))
            )
        assert (await c.get("/")).status_code == 303


async def test_a_revoked_key_ends_its_sessions(env: Env) -> None:
    _, key = await env.services.keys.create("short-lived", "read", actor="tests")
    async with client_for(env) as c:
        await sign_in(c, key)
        assert (await c.get("/")).status_code == 200
        await env.services.keys.revoke("short-lived", actor="tests")
        assert (await c.get("/")).status_code == 303


# ------------------------------------------------------------------------ CSRF and scopes


async def test_a_form_without_its_csrf_token_is_refused(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    await suppress(env, "keep@example.com")
    c = browsers["write"]
    for data in ({}, {"csrf": "wrong"}):
        r = await c.post(
            "/unsuppress", data={"address": "keep@example.com", "reason": "x y z", **data}
        )
        assert r.status_code == 403 and "CSRF" in r.text
    token = await csrf_token(c)
    r = await c.post(
        "/unsuppress",
        data={"address": "keep@example.com", "reason": "test", "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert await checked(env, "keep@example.com")


async def test_read_sees_no_unsuppress_button_and_a_forged_post_gets_403(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    await suppress(env, "ro@example.com")
    c = browsers["read"]
    page = await c.get("/find", params={"q": "RO@Example.com"})
    assert page.status_code == 200
    assert "Blocked" in page.text and 'action="/unsuppress"' not in page.text
    assert 'action="/suppress"' not in page.text
    token = csrf_of(page.text)
    r = await c.post(
        "/unsuppress", data={"address": "ro@example.com", "reason": "why", "csrf": token}
    )
    assert r.status_code == 403
    r = await c.post("/suppress", data={"address": "x@example.com", "csrf": token})
    assert r.status_code == 403
    assert (await c.get("/keys")).status_code == 403
    assert (await c.get("/import")).status_code == 403
    assert await checked(env, "ro@example.com")


# ------------------------------------------------------------------ find, unsuppress, suppress


async def test_find_shows_the_verdict_and_history_and_unsuppress_clears_the_check(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    await suppress(
        env,
        "jane@example.com",
        diagnostic="550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown",
        rule_id="text-user-unknown",
        reply_code=550,
        status="5.1.1",
    )
    c = browsers["write"]
    page = await c.get("/find", params={"q": " Jane@EXAMPLE.com "})
    assert "jane@example.com" in page.text
    assert "Blocked" in page.text and "for every stream" in page.text
    assert "hard / user_unknown" in page.text and "Recipient address rejected" in page.text
    assert 'action="/unsuppress"' in page.text
    token = csrf_of(page.text)
    r = await c.post(
        "/unsuppress",
        data={"address": "jane@example.com", "scope": "*", "reason": "", "csrf": token},
    )
    assert r.status_code == 422  # a reason is required
    assert await checked(env, "jane@example.com")
    r = await c.post(
        "/unsuppress",
        data={
            "address": "jane@example.com",
            "scope": "*",
            "reason": "mailbox fixed",
            "csrf": token,
        },
    )
    assert r.status_code == 303 and "done=unsuppressed" in r.headers["location"]
    assert not await checked(env, "jane@example.com")
    page = await c.get(r.headers["location"])
    assert "Not blocked" in page.text and "mailbox fixed" in page.text
    async with env.services.db.read() as s:
        audit = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "unsuppress"))).one()
    assert audit.actor == "test-write" and audit.reason == "mailbox fixed"


async def test_complaints_need_admin_and_force(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    await suppress(
        env, "angry@example.com", outcome="complaint", reason="abuse", source="complaint"
    )
    w = browsers["write"]
    page = await w.get("/find", params={"q": "angry@example.com"})
    assert "only be lifted by an admin" in page.text
    data = {"address": "angry@example.com", "scope": "*", "reason": "asked us", "force": "yes"}
    r = await w.post("/unsuppress", data={**data, "csrf": csrf_of(page.text)})
    assert r.status_code == 403
    a = browsers["admin"]
    page = await a.get("/find", params={"q": "angry@example.com"})
    assert 'name="force"' in page.text
    r = await a.post("/unsuppress", data={**data, "force": "", "csrf": csrf_of(page.text)})
    assert r.status_code == 403
    r = await a.post("/unsuppress", data={**data, "csrf": csrf_of(page.text)})
    assert r.status_code == 303
    assert not await checked(env, "angry@example.com")


async def test_suppress_by_hand_is_checked_and_audited(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    c = browsers["write"]
    token = await csrf_token(c)
    r = await c.post(
        "/suppress",
        data={
            "address": "Hand@Example.com",
            "reason": "customer_request",
            "days": "30",
            "note": "ticket 1",
            "csrf": token,
        },
    )
    assert r.status_code == 303
    assert await checked(env, "hand@example.com")
    page = await c.get(r.headers["location"])
    assert "manual / customer_request" in page.text and "ticket 1" in page.text
    async with env.services.db.read() as s:
        audit = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "suppress"))).one()
    assert audit.actor == "test-write"
    r = await c.post("/suppress", data={"address": "not an address", "csrf": token})
    assert r.status_code == 422
    r = await c.post("/suppress", data={"address": "a@example.com", "days": "-1", "csrf": token})
    assert r.status_code == 422


async def test_an_invalid_search_says_why(browsers: dict[str, httpx.AsyncClient]) -> None:
    r = await browsers["read"].get("/find", params={"q": "<b>nope"})
    assert r.status_code == 422 and "Not an address" in r.text and "<b>nope" not in r.text


# ------------------------------------------------------------------------------- hostile data

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\x00" + "A" * 100_000


async def test_hostile_diagnostic_and_raw_message_render_as_inert_text(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    raw = (
        b"From: <mailer-daemon@example.net>\r\nSubject: <script>alert(3)</script>\r\n"
        b"Content-Type: text/plain\r\n\r\n<html><script>alert(4)</script>\x00"
        + b"B" * 100_000
        + b"\r\n"
    )
    stored = await IntakeStore(env.services.db).store(
        mail_from="", rcpt_to=["b@bounces.example"], peer=None, raw=raw
    )
    address = '"<script>x"@example.com'
    await suppress(env, address, diagnostic=HOSTILE.replace("\x00", ""), message_id=stored.id)
    c = browsers["read"]
    page = await c.get("/find", params={"q": address})
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert f'href="/messages/{stored.id}"' in page.text
    msg = await c.get(f"/messages/{stored.id}")
    assert msg.status_code == 200
    assert "<script>" not in msg.text and "<html>" not in msg.text and "\x00" not in msg.text
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in msg.text and "B" * 100_000 in msg.text
    explain = await c.get(f"/messages/{stored.id}/explain")
    assert explain.status_code == 200 and "<script>" not in explain.text
    assert (await c.get("/messages/999999")).status_code == 404


# ------------------------------------------------------------------- list, export, import


async def test_list_filters_pages_and_exports_the_filter(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    for i in range(60):
        await suppress(env, f"u{i:02d}@list.example")
    await suppress(env, "c@other.example", outcome="complaint", reason="abuse", source="complaint")
    c = browsers["read"]
    first = await c.get("/list", params={"domain": "list.example"})
    assert first.status_code == 200
    assert first.text.count('href="/find?q=u') == 50
    assert "u59@list.example" in first.text and "u00@list.example" not in first.text
    nxt = re.search(r'href="(/list\?[^"]*cursor=[0-9]+)"', first.text)
    assert nxt
    second = await c.get(nxt.group(1).replace("&amp;", "&"))
    assert second.text.count('href="/find?q=u') == 10 and "u00@list.example" in second.text
    oldest = await c.get("/list", params={"domain": "list.example", "sort": "oldest"})
    assert "u00@list.example" in oldest.text and "u59@list.example" not in oldest.text
    only = await c.get("/list", params={"source": "complaint"})
    assert "c@other.example" in only.text and "u00@list.example" not in only.text
    export = await c.get("/export", params={"outcome": "complaint"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("address,") and lines[1:] == [lines[1]]
    assert lines[1].startswith("c@other.example,complaint,abuse")
    bad = await c.get("/list", params={"outcome": "nonsense"})
    assert bad.status_code == 422 and "nonsense" in bad.text


async def test_import_with_a_dry_run_reports_bad_lines_then_writes(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    c = browsers["write"]
    form = await c.get("/import")
    assert 'enctype="multipart/form-data"' in form.text
    body = b"address,outcome,reason\nok1@imp.example,hard,user_unknown\nnot-an-address,hard,x\nok2@imp.example,hard,user_unknown\n"

    async def run(dry: bool) -> str:
        data = {"csrf": csrf_of(form.text), "format": "auto"} | ({"dry_run": "yes"} if dry else {})
        r = await c.post("/import", data=data, files={"file": ("list.csv", body, "text/csv")})
        assert r.status_code == 303, r.text
        for _ in range(200):
            page = await c.get(r.headers["location"])
            if "Import finished" in page.text:
                return page.text
            assert 'http-equiv="refresh"' in page.text
            await asyncio.sleep(0.05)
        raise AssertionError("import did not finish")

    text = await run(dry=True)
    assert "Dry run" in text and "<td>3</td>" in text
    assert re.search(r"<td>3</td><td class=\"text\">not-an-address</td>", text)
    assert not await checked(env, "ok1@imp.example")
    text = await run(dry=False)
    assert "Committed" in text
    assert await checked(env, "ok1@imp.example") and await checked(env, "ok2@imp.example")


async def test_an_import_page_answers_from_any_replica_and_after_a_restart(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    """The job lives in the database: another app on the same database (another replica, or this
    one restarted) shows its result; only the key that started it sees it; a job whose process
    stopped shows as interrupted, not running for ever."""
    c = browsers["write"]
    form = await c.get("/import")
    body = b"address,reason\nr1@replica.example,manual\nbad-row,manual\n"
    r = await c.post(
        "/import",
        data={"csrf": csrf_of(form.text), "format": "auto"},
        files={"file": ("list.csv", body, "text/csv")},
    )
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    async with client_for(env) as other:  # a fresh app: nothing of the first one's memory
        assert (await sign_in(other, env.keys["write"])).status_code == 303
        for _ in range(200):
            page = await other.get(location)
            assert page.status_code == 200, page.text
            if "Import finished" in page.text:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("import did not finish")
        assert "Committed" in page.text and 'http-equiv="refresh"' not in page.text
        assert re.search(r'<td>3</td><td class="text">bad-row</td>', page.text)
    assert (await browsers["admin"].get(location)).status_code == 404  # another key's job
    assert await checked(env, "r1@replica.example")

    jobs = ImportJobs(env.services.db)
    await jobs.create("stalled-job", "test-write", 1000)
    await jobs.progress("stalled-job", 400)
    running = await c.get("/import/stalled-job")
    assert "Import running" in running.text and 'value="40"' in running.text
    assert 'http-equiv="refresh"' in running.text
    async with env.services.db.write() as s:
        await s.execute(
            update(ConsoleImport)
            .where(ConsoleImport.id == "stalled-job")
            .values(updated_at=utcnow() - timedelta(seconds=STALE_S + 1))
        )
    stalled = await c.get("/import/stalled-job")
    assert "Import interrupted" in stalled.text and 'http-equiv="refresh"' not in stalled.text


# ----------------------------------------------------------------- overview, intake, keys


async def test_overview_counts_top_providers_from_the_rates_table(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    """Domains fold into the provider /v1/stats names (gmail.com and googlemail.com are one),
    and what no known provider holds is "other"."""
    for address in ("a@gmail.com", "b@gmail.com", "c@googlemail.com", "d@outlook.com"):
        await suppress(env, address)
    await suppress(env, "e@small.example")
    page = await browsers["read"].get("/")
    assert page.status_code == 200
    section = page.text.split("<h2>Top providers</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td></tr>", section)
    assert rows == [("gmail", "3"), ("microsoft", "1"), ("other", "1")]


async def test_overview_chart_intake_and_keys(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    await suppress(env, "o1@ov.example")
    await suppress(env, "o2@ov.example", outcome="complaint", reason="abuse", source="complaint")
    a = browsers["admin"]
    page = await a.get("/")
    assert (
        page.status_code == 200
        and "ov.example" in page.text
        and 'src="/overview/chart.svg"' in page.text
    )
    svg = await a.get("/overview/chart.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content and b"<script" not in svg.content
    assert "script-src" not in svg.headers["content-security-policy"]
    stored = await IntakeStore(env.services.db).store(
        mail_from="", rcpt_to=["b@bounces.example"], peer=None, raw=b"Subject: hi\r\n\r\nplain\r\n"
    )
    intake = await a.get("/intake")
    assert intake.status_code == 200 and f"<td>{stored.id}</td>" in intake.text
    failed = await a.get("/intake", params={"failed": "true"})
    assert f"<td>{stored.id}</td>" not in failed.text
    keys = await a.get("/keys")
    assert "test-read" in keys.text and env.keys["read"] not in keys.text
    created = await a.post(
        "/keys", data={"name": "made-here", "scope": "check", "csrf": csrf_of(keys.text)}
    )
    secret = re.search(r'id="new-key">(sl_[A-Za-z0-9_-]{40})<', created.text)
    assert secret, created.text
    assert await env.services.keys.authenticate(secret.group(1)) is not None
    again = await a.get("/keys")
    assert secret.group(1) not in again.text
    r = await a.post("/keys/revoke", data={"name": "made-here", "csrf": csrf_of(again.text)})
    assert r.status_code == 303
    assert "made-here" in (await a.get("/keys")).text


async def test_console_is_not_in_the_openapi_document(env: Env) -> None:
    doc = (await env.client.get("/openapi.json")).json()
    assert not any(p in doc["paths"] for p in ("/", "/find", "/list", "/signin", "/keys"))


@pytest.mark.parametrize("path", ["/", "/find", "/list", "/intake", "/keys", "/import"])
async def test_every_page_redirects_without_a_session(env: Env, path: str) -> None:
    async with client_for(env) as c:
        r = await c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_suppress_a_whole_domain_from_an_address_page(
    env: Env, browsers: dict[str, httpx.AsyncClient]
) -> None:
    c = browsers["write"]
    page = await c.get("/find", params={"q": "someone@wide.example"})
    assert "every address at wide.example" in page.text
    r = await c.post(
        "/suppress",
        data={
            "address": "someone@wide.example",
            "target": "domain",
            "reason": "manual",
            "csrf": csrf_of(page.text),
        },
    )
    assert r.status_code == 303 and "%40wide.example" in r.headers["location"]
    assert await checked(env, "anyone.else@wide.example")
    page = await c.get("/find", params={"q": "third@wide.example"})
    assert "by the suppression of its whole domain" in page.text
    assert 'id="unsuppress"' not in page.text  # lifted on the domain's own page
    domain_page = await c.get("/find", params={"q": "wide.example"})
    assert (
        "Every address at wide.example" in domain_page.text
        and 'id="unsuppress"' in domain_page.text
    )
    r = await c.post(
        "/unsuppress",
        data={
            "address": "@wide.example",
            "scope": "*",
            "reason": "wrong domain",
            "csrf": csrf_of(domain_page.text),
        },
    )
    assert r.status_code == 303
    assert not await checked(env, "anyone.else@wide.example")
