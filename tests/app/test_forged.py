"""Forged bounces and tricky addresses through the real SMTP sink on loopback.

With signed return paths required (docs/signed-return-paths.md), a DSN sent to an unsigned,
forged, tampered, expired or foreign-keyed return address suppresses nobody and is recorded as an
``unverified_bounce``; a valid one suppresses exactly the signed recipient, whatever the report's
own text claims. Recipient forms that route elsewhere (RFC 5321 §3.6.1: quoted local parts, the
``%`` hack, bang paths, source routes, address literals) are refused like any relay attempt, and
the ``parseaddr`` confusion of CVE-2023-27043 in a report's Final-Recipient must not suppress the
wrong address.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select

from app.container import build_signer
from app.intake.parse_pool import ParsingPool
from app.intake.smtp import Reply
from app.models import Event, Suppression
from app.signing import Signer, SigningKey
from tests.app.test_smtp import Sink, rows, start_sink, wait_for
from tests.conftest import Env

KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()  # the documented test key
DAY = 86_400.0
SIGNING: dict[str, Any] = {
    "signing_keys": SecretStr(KEYS),
    "require_signed_bounces": True,
    "return_path_domain": "bounces.example.net",
}


def signing(env: Env) -> Signer:
    """Give the services the signing keys and the requirement (the sink gets them from
    ``start_sink(env, **SIGNING)``)."""
    signer = build_signer(env.settings.model_copy(update=SIGNING))
    assert signer is not None
    env.services.signer = signer
    return signer


def dsn(final: str, tag: str, *, original: str | None = None, ref: str | None = None) -> bytes:
    """An RFC 3464 hard bounce whose per-recipient fields say ``final`` (and ``original``), the
    returned message quoting ``ref`` as its X-Stoplist-Ref."""
    orig = f"Original-Recipient: rfc822;{original}\r\n" if original else ""
    header = f"X-Stoplist-Ref: {ref}\r\n" if ref else ""
    return (
        "From: MAILER-DAEMON@mail.example.com\r\nTo: b@bounces.example.net\r\n"
        f"Subject: Undelivered Mail Returned to Sender ({tag})\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "--BB\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mail.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {final}\r\n{orig}Action: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        "--BB\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@example.com\r\nTo: someone@example.net\r\n{header}Subject: news\r\n\r\n"
        "Hello.\r\n--BB--\r\n"
    ).encode("utf-8", "surrogateescape")


def deliver(port: int, rcpts: list[str], raw: bytes) -> int:
    """One delivery, as an MTA returning a bounce does it (null reverse-path)."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("mta.example.com")
        c.mail("")
        for r in rcpts:
            code, msg = c.rcpt(r)
            assert code == 250, (r, code, msg)
        return c.data(raw)[0]


async def send_all(s: Sink, env: Env, messages: list[tuple[list[str], bytes]]) -> None:
    for rcpts, raw in messages:
        assert await asyncio.to_thread(deliver, s.port, rcpts, raw) == 250

    async def finished() -> bool:
        stored = await rows(env)
        return len(stored) == len(messages) and all(r.state != "pending" for r in stored)

    await wait_for(finished, timeout=20)
    assert {r.state for r in await rows(env)} == {"processed"}


async def suppressed(env: Env) -> dict[str, bool]:
    """Every suppressed address and whether a signed reference verified it."""
    async with env.services.db.read() as session:
        found = (await session.execute(select(Suppression.address, Suppression.verified))).all()
    return {str(a): bool(v) for a, v in found}


async def events(env: Env, address: str) -> list[Event]:
    async with env.services.db.read() as session:
        # In the order the messages were stored (they may be processed in parallel).
        q = select(Event).where(Event.address == address).order_by(Event.message_id)
        return list((await session.execute(q)).scalars())


def altered(text: str, where: Callable[[str], int]) -> str:
    i = where(text)
    return text[:i] + ("a" if text[i] != "a" else "b") + text[i + 1 :]


async def test_forged_bounces_suppress_nobody(env: Env, parse_pool: ParsingPool) -> None:
    """Unsigned, forged, tampered, expired, future-dated, unknown-key, wrong-purpose and
    conflicting references: each DSN naming carol is recorded as an ``unverified_bounce`` with
    the reason, and carol stays clear; two valid ones (return path, X-Stoplist-Ref) suppress their
    signed recipients, so the path is live."""
    signer = signing(env)
    now = time.time()
    carol = "carol@example.net"
    rp = signer.return_path(carol, "news")
    mac_at: Callable[[str], int] = lambda t: t.index("-", t.index("-") + 1) + 1  # noqa: E731
    foreign_key = Signer([SigningKey("k9", bytes(range(32, 64)))], return_path_domain="x.example")
    other_purpose = Signer(
        [SigningKey("k1", bytes(range(32)))],
        unsubscribe_prefix="b",
        unsubscribe_domain="bounces.example.net",
    )
    forged: list[tuple[list[str], str]] = [
        (["b@bounces.example.net"], "unsigned"),
        ([altered(rp, mac_at)], "return_path: forged"),
        ([signer.return_path("dave@example.net", "news").replace("dave", "carol")], "forged"),
        ([signer.return_path(carol, "news", now=now - 31 * DAY)], "return_path: expired"),
        ([signer.return_path(carol, "news", now=now + DAY)], "return_path: tampered"),
        (
            [foreign_key.return_path(carol).replace("x.example", "bounces.example.net")],
            "return_path: unknown_key",
        ),
        ([other_purpose.unsubscribe_mailto_address(carol)], "return_path: forged"),
        (
            [rp, signer.return_path("dave@example.net", "news")],
            "another reference names another",
        ),
    ]
    messages = [(rcpts, dsn(carol, f"forged-{i}")) for i, (rcpts, _) in enumerate(forged)]
    bad_ref = altered(signer.ref_token(carol, "news"), lambda t: len(t) - 3)
    messages.append((["b@bounces.example.net"], dsn(carol, "forged-ref", ref=bad_ref)))
    forged.append(([], "ref: forged"))
    # Controls: the same path with valid references.
    messages.append(([signer.return_path("erin@example.net")], dsn("erin@example.net", "ok-1")))
    messages.append(
        (
            ["b@bounces.example.net"],
            dsn("frank@example.net", "ok-2", ref=signer.ref_token("frank@example.net")),
        )
    )

    s = await start_sink(env, parse_pool, process=True, **SIGNING)
    try:
        await send_all(s, env, messages)
    finally:
        await s.stop()

    assert await suppressed(env) == {"erin@example.net": True, "frank@example.net": True}
    check = await env.client.get("/v1/check", params={"address": carol}, headers=env.auth("check"))
    assert check.json()["suppressed"] is False
    recorded = await events(env, carol)
    assert [e.kind for e in recorded] == ["unverified_bounce"] * len(forged)
    for event, (_, why) in zip(recorded, forged, strict=True):
        assert why in event.detail["why"], (why, event.detail)
        assert event.verified is False


# (RCPT argument, reply code): every mailbox here, read any way, lies outside the sink's domains.
TRICKY_RCPTS: list[tuple[str, int]] = [
    # Sender-specified routes to a foreign domain (RFC 5321 §3.6.1, Appendix C): 550.
    ('<"victim@gmail.example"@bounces.example.net>', 550),
    ("<victim%gmail.example@bounces.example.net>", 550),
    ("<gmail.example!victim@bounces.example.net>", 550),
    ("<@bounces.example.net:victim@gmail.example>", 550),
    ("<@bounces.example.net,@relay.example:victim@gmail.example>", 550),
    ("<bounces.example.net!victim@gmail.example>", 550),
    ("<victim%bounces.example.net@gmail.example>", 550),
    ("<fbl%evil.example@example.org>", 550),
    ("<b+k1-x%gmail.example@bounces.example.net>", 550),  # our prefix, not our form
    (
        "<zz+k1-tox1bb-4sn652r5-=v%gmail.example=x.example@bounces.example.net>",
        550,
    ),  # not our prefix
    # Address literals: never one of our domains.
    ("<victim@[192.0.2.1]>", 550),
    ("<postmaster@[127.0.0.1]>", 550),
    ("<b@[bounces.example.net]>", 550),
    # CVE-2023-27043-style confusion and malformed paths: refused as syntax.
    ("<victim@gmail.example@bounces.example.net>", 553),
    ("<victim\\@gmail.example@bounces.example.net>", 553),
    ("victim@gmail.example<b@bounces.example.net>", 501),
    ("<b@bounces.example.net>victim@gmail.example", 501),
    ("<b@bounces.example.net\x00victim@gmail.example>", 553),
    ("<b@bounces.example.net.>", 553),
]


async def test_tricky_recipient_forms_are_not_relayed(sqlite_env: Env) -> None:
    """Each RCPT in TRICKY_RCPTS gets its refusal (never 250) in one session, which stays usable;
    nothing is stored."""
    s = await start_sink(sqlite_env)

    def go() -> tuple[list[tuple[str, int]], int]:
        import smtplib

        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("mta.example.com")
            c.mail("")
            replies = []
            for rcpt, _ in TRICKY_RCPTS:
                c.send(b"RCPT TO:" + rcpt.encode("latin-1") + b"\r\n")
                replies.append((rcpt, c.getreply()[0]))
            return replies, c.noop()[0]

    try:
        replies, noop = await asyncio.to_thread(go)
        assert replies == TRICKY_RCPTS
        assert noop == 250
        assert await rows(sqlite_env) == []
    finally:
        await s.stop()


async def test_own_forms_with_percent_and_bang_are_accepted(sqlite_env: Env) -> None:
    """A recipient's own ``%`` or ``!`` inside our signed return path is not a route: those
    return paths, upper-cased ones and plain addresses of our domains get 250."""
    signer = signing(sqlite_env)
    s = await start_sink(sqlite_env, **SIGNING)
    ours = [
        signer.return_path("jo%hn@example.com"),
        signer.return_path("uucp!jo@example.com"),
        signer.return_path("carol@example.net").upper(),
        "b@BOUNCES.example.net",
        "fbl@example.org",
    ]

    def go() -> list[tuple[int, bytes]]:
        import smtplib

        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("mta.example.com")
            c.mail("")
            return [c.rcpt(r) for r in ours]

    try:
        assert await asyncio.to_thread(go) == [(250, Reply.RCPT_OK[4:].encode())] * len(ours)
    finally:
        await s.stop()


# Final-Recipient / Original-Recipient values that name someone other than the mailbox, or are
# not one address at all.
TRICKY_REPORTED = [
    "alice@example.org<bob@victim.example>",
    '"alice@example.org" <bob@victim.example>',
    "alice@example.org)<bob@victim.example>",
    '"a@b"@c.example',
    "a@b@c.example",
    "<@a.example,@b.example:bob@victim.example>",
    "bob%victim.example@example.org",
    "victim.example!bob@example.org",
    "postmaster@[192.0.2.1]",
    "bob@victim.example (alice@example.org)",
    "alice@example.org\x00bob@victim.example",
]


async def test_tricky_report_addresses_suppress_only_the_signed_recipient(
    sqlite_env: Env, parse_pool: ParsingPool
) -> None:
    """With signed return paths required, whatever a DSN's Final-Recipient or Original-Recipient
    says, the one suppression is the signed recipient's (RFC 3464 fields are the report's claim,
    the signature is ours)."""
    signer = signing(sqlite_env)
    grace = "grace@example.net"
    messages = [
        ([signer.return_path(grace, "news")], dsn(value, f"tricky-{i}", original=value))
        for i, value in enumerate(TRICKY_REPORTED)
    ]
    s = await start_sink(sqlite_env, parse_pool, process=True, **SIGNING)
    try:
        await send_all(s, sqlite_env, messages)
    finally:
        await s.stop()
    assert await suppressed(sqlite_env) == {grace: True}


async def test_unsigned_report_does_not_suppress_a_confused_address(
    sqlite_env: Env, parse_pool: ParsingPool
) -> None:
    """Without signing, a report is applied as parsed; but a Final-Recipient that is not one
    addr-spec (RFC 3464 §2.3.2, RFC 5322 §3.4.1) must not suppress the address a confused parser
    picks out of it (CVE-2023-27043: ``parseaddr`` reads ``"alice@example.org" <bob@...>`` as
    alice)."""
    s = await start_sink(sqlite_env, parse_pool, process=True)
    wrong = {"alice@example.org", "b@c.example"}
    ambiguous = ["alice@example.org<bob@victim.example>", "alice@example.org)<bob@victim.example>"]
    values = [*ambiguous, '"alice@example.org" <bob@victim.example>', "a@b@c.example"]
    try:
        await send_all(
            s,
            sqlite_env,
            [(["b@bounces.example.net"], dsn(v, f"confused-{i}")) for i, v in enumerate(values)],
        )
    finally:
        await s.stop()
    assert not (set(await suppressed(sqlite_env)) & wrong)
