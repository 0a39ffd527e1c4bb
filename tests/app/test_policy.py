"""The policy on both backends: parsed bounce and complaint mail in, suppressions and events out.

Inputs are small realistic messages (an RFC 3464 report from Postfix, an RFC 5965 feedback report)
run through ``dsn.analyse_message``, as the SMTP intake does.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select

from app.container import build_signer
from app.feedback import ApplyResult, BatchItem, Envelope, apply_analysis, apply_batch
from app.models import Event, Suppression
from app.signing import Signer
from dsn import MessageAnalysis, analyse_message
from tests.conftest import Env

KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()
FBL = Envelope(mail_from="fbl@example.com", rcpt_to=["fbl@fbl.example.net"])
_ids = itertools.count(1000)

USER_UNKNOWN = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
MAILBOX_FULL = "552 5.2.2 <{rcpt}>: Mailbox full, quota exceeded"
BLOCKLISTED = (
    "554 5.7.1 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org"
)


def configure(env: Env, **overrides: Any) -> Signer:
    """Give the running services signing keys (and any other settings)."""
    settings = env.settings.model_copy(
        update={
            "signing_keys": SecretStr(KEYS),
            "return_path_domain": "bounces.example.net",
            "unsubscribe_domain": "unsubscribe.example.net",
            "public_base_url": "https://stoplist.example.net",
            **overrides,
        }
    )
    env.services.settings = settings
    signer = build_signer(settings)
    assert signer is not None
    env.services.signer = signer
    return signer


def dsn(
    rcpt: str,
    reply: str = USER_UNKNOWN,
    *,
    action: str = "failed",
    ref: str | None = None,
    stream: str | None = "newsletter",
    to: str | None = None,
) -> bytes:
    """A Postfix-style RFC 3464 bounce for one recipient, quoting our original headers."""
    diagnostic = reply.format(rcpt=rcpt)
    status = diagnostic.split()[1]
    headers = [f"To: {to or rcpt}", f"X-Stoplist-Recipient: {to or rcpt}"]
    if stream:
        headers.append(f"X-Stoplist-Stream: {stream}")
    if ref:
        headers.append(f"X-Stoplist-Ref: {ref}")
    original = "\n".join(headers)
    text = f"""Return-Path: <>
From: MAILER-DAEMON@mail.example.com (Mail Delivery System)
To: bounces@bounces.example.net
Subject: Undelivered Mail Returned to Sender
Date: Wed, 01 May 2024 12:05:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

--BOUNDARY
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.com
Arrival-Date: Wed,  1 May 2024 12:04:58 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; {diagnostic}

--BOUNDARY
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <news@example.com>
Message-ID: <20240501120000.ABC123@mail.example.com>
From: News <news@example.com>
{original}
Subject: Our May newsletter
Date: Wed, 01 May 2024 12:00:00 +0000

--BOUNDARY--
"""
    return text.replace("\n", "\r\n").encode()


def arf(
    rcpt: str | None,
    *,
    feedback_type: str = "abuse",
    ref: str | None = None,
    stream: str | None = None,
    mail_from: str = "bounce-cc03@bounces.example.net",
) -> bytes:
    """An RFC 5965 feedback report; ``rcpt=None`` is a provider that redacts the recipient."""
    shown = rcpt or "redacted@example.com"
    extra = "".join(
        f"{name}: {value}\n"
        for name, value in (("X-Stoplist-Ref", ref), ("X-Stoplist-Stream", stream))
        if value
    )
    text = f"""From: <feedback@example.com>
To: <fbl@fbl.example.net>
Subject: Abuse report
Date: Mon, 8 Apr 2024 15:00:00 +0000
Message-ID: <report-{next(_ids)}@example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="rd-b"

--rd-b
Content-Type: text/plain

This is an email abuse report.

--rd-b
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: ExampleFBL/3.0
Version: 1
Original-Mail-From: <{mail_from}>
Original-Rcpt-To: {shown}
Arrival-Date: Mon, 8 Apr 2024 14:59:00 +0000
Source-IP: 192.0.2.60

--rd-b
Content-Type: message/rfc822

Return-Path: <{mail_from}>
From: Example News <news@example.net>
To: {"****@example.com" if rcpt is None else rcpt}
Subject: Offers
Message-ID: <20240408145900.dd04@example.net>
{extra}
Offers inside.

--rd-b--
"""
    return text.replace("\n", "\r\n").encode()


async def apply(
    env: Env,
    raw: bytes,
    *,
    rcpt: str = "bounces@bounces.example.net",
    message_id: int | None = None,
    dry_run: bool = False,
) -> tuple[MessageAnalysis, ApplyResult]:
    analysis = analyse_message(raw, envelope_rcpt=rcpt)
    envelope = Envelope(mail_from="", rcpt_to=[rcpt], peer="192.0.2.1")
    result = await apply_analysis(
        env.services,
        message_id=next(_ids) if message_id is None else message_id,
        analysis=analysis,
        envelope=envelope,
        dry_run=dry_run,
    )
    return analysis, result


async def check(env: Env, address: str, stream: str | None = None) -> dict[str, Any]:
    params = {"address": address} | ({"stream": stream} if stream else {})
    r = await env.client.get("/v1/check", params=params, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def events(env: Env, address: str) -> list[Event]:
    async with env.services.db.read() as s:
        return list(
            await s.scalars(select(Event).where(Event.address == address).order_by(Event.id))
        )


async def suppressions(env: Env) -> list[Suppression]:
    async with env.services.db.read() as s:
        return list((await s.scalars(select(Suppression))).all())


# ---------------------------------------------------------------------------------- bounces


async def test_hard_bounce_suppresses_globally(env: Env) -> None:
    analysis, result = await apply(env, dsn("carol@example.org"), message_id=77)
    assert analysis.results[0].outcome == "hard"
    assert (result.applied, result.verified) == (1, False)
    answer = await check(env, "carol@example.org", "transactional")
    assert answer["suppressed"] is True
    assert (answer["outcome"], answer["scope"], answer["verified"]) == ("hard", "global", False)
    (ev,) = await events(env, "carol@example.org")
    assert (ev.kind, ev.outcome, ev.status, ev.reply_code, ev.message_id) == (
        "bounce",
        "hard",
        "5.1.1",
        550,
        77,
    )
    assert ev.rule_id and ev.rule_id == analysis.results[0].rule_id
    assert ev.diagnostic and "User unknown" in ev.diagnostic


async def test_three_soft_bounces_in_the_window_suppress_for_a_while(env: Env) -> None:
    raw = dsn("dan@example.org", MAILBOX_FULL)
    analysis, result = await apply(env, raw)
    assert analysis.results[0].outcome == "soft"
    assert (result.applied, result.recorded) == (0, 1)
    _, result = await apply(env, raw)
    assert (result.applied, result.recorded) == (0, 1)
    assert (await check(env, "dan@example.org"))["suppressed"] is False
    _, result = await apply(env, raw)
    assert result.applied == 1
    answer = await check(env, "dan@example.org")
    assert (answer["suppressed"], answer["outcome"]) == (True, "soft")
    assert answer["expires_at"] is not None
    kinds = [(e.kind, e.outcome) for e in await events(env, "dan@example.org")]
    assert kinds == [("bounce", "soft")] * 3 + [("soft_threshold", "soft")]


async def test_a_batch_counts_each_address_soft_bounces(env: Env) -> None:
    """One batch (one transaction, one grouped count) of third soft bounces for several
    addresses with two earlier ones each, and of a first one for another: each address is counted
    on its own, the first three reach the threshold, the last does not."""
    crossing = [f"soft{i}@example.org" for i in range(3)]
    for address in crossing:
        for _ in range(2):
            await apply(env, dsn(address, MAILBOX_FULL))
    rcpt = "bounces@bounces.example.net"
    batch = [
        BatchItem(
            next(_ids),
            analyse_message(dsn(a, MAILBOX_FULL), envelope_rcpt=rcpt),
            Envelope(mail_from="", rcpt_to=[rcpt], peer="192.0.2.1"),
        )
        for a in [*crossing, "first@example.org"]
    ]
    results = await apply_batch(env.services, batch)
    assert [r.applied for r in results] == [1, 1, 1, 0]
    for address in crossing:
        answer = await check(env, address)
        assert (answer["suppressed"], answer["outcome"]) == (True, "soft"), address
    assert (await check(env, "first@example.org"))["suppressed"] is False


async def test_two_soft_bounces_suppress_nothing(env: Env) -> None:
    for _ in range(2):
        await apply(env, dsn("erin@example.org", MAILBOX_FULL))
    assert (await check(env, "erin@example.org"))["suppressed"] is False
    assert await suppressions(env) == []


async def test_policy_block_is_an_event_never_a_suppression(env: Env) -> None:
    analysis, result = await apply(env, dsn("frank@example.org", BLOCKLISTED))
    assert analysis.results[0].outcome == "policy"
    assert (result.applied, result.recorded) == (0, 1)
    assert await suppressions(env) == []
    (ev,) = await events(env, "frank@example.org")
    assert (ev.kind, ev.outcome) == ("policy_block", "policy")
    assert ev.detail["remote_mta"] == "mx.example.org"


async def test_delay_is_an_event_not_a_bounce(env: Env) -> None:
    reply = "452 4.2.2 <{rcpt}>: Mailbox full"
    for _ in range(4):
        analysis, result = await apply(env, dsn("grace@example.org", reply, action="delayed"))
        assert analysis.kind == "delay"
        assert (result.applied, result.recorded) == (0, 1)
    assert await suppressions(env) == []
    assert {e.kind for e in await events(env, "grace@example.org")} == {"delay"}


async def test_signed_return_path_names_the_recipient(env: Env) -> None:
    signer = configure(env)
    rp = signer.return_path("heidi@example.org", "newsletter")
    # The report's text names another address (a forward, or someone trying their luck).
    analysis, result = await apply(env, dsn("victim@example.org"), rcpt=rp)
    assert analysis.results[0].recipient == "victim@example.org"
    assert (result.applied, result.verified) == (1, True)
    answer = await check(env, "heidi@example.org")
    assert (answer["suppressed"], answer["verified"]) == (True, True)
    assert (await check(env, "victim@example.org"))["suppressed"] is False
    (ev,) = await events(env, "heidi@example.org")
    assert ev.verified
    assert ev.detail["reported_recipient"] == "victim@example.org"


async def test_signed_ref_header_verifies_a_bounce(env: Env) -> None:
    signer = configure(env, require_signed_bounces=True)
    ref = signer.ref_token("ivan@example.org", "newsletter")
    _, result = await apply(env, dsn("ivan@example.org", ref=ref))
    assert (result.applied, result.verified) == (1, True)
    assert (await check(env, "ivan@example.org"))["verified"] is True


async def test_unsigned_bounce_with_require_signed_changes_nothing(env: Env) -> None:
    configure(env, require_signed_bounces=True)
    _, result = await apply(env, dsn("judy@example.org"))
    assert (result.applied, result.recorded, result.verified) == (0, 1, False)
    assert await suppressions(env) == []
    (ev,) = await events(env, "judy@example.org")
    assert (ev.kind, ev.detail["why"]) == ("unverified_bounce", "unsigned")


async def test_forged_return_path_is_recorded_never_applied(env: Env) -> None:
    signer = configure(env)  # require_signed_bounces stays off
    rp = signer.return_path("mallory@example.org", "newsletter")
    forged = rp.replace("mallory", "karl")
    _, result = await apply(env, dsn("karl@example.org"), rcpt=forged)
    assert (result.applied, result.recorded, result.verified) == (0, 1, False)
    assert await suppressions(env) == []
    (ev,) = await events(env, "karl@example.org")
    assert ev.kind == "unverified_bounce"
    assert "forged" in ev.detail["why"]


async def test_without_keys_reports_are_applied_as_parsed(env: Env) -> None:
    # No signing keys: a foreign X-Stoplist-Ref value cannot be checked, so it is not held against
    # the report.
    _, result = await apply(env, dsn("leo@example.org", ref="v1.c2FtcGxl.0123456789abcdef"))
    assert result.applied == 1


async def test_reapplying_a_message_writes_nothing_new(env: Env) -> None:
    raw = dsn("mike@example.org", MAILBOX_FULL)
    await apply(env, raw, message_id=5)
    _, again = await apply(env, raw, message_id=5)
    _, again2 = await apply(env, raw, message_id=5)
    assert (again.recorded, again.ignored, again2.recorded) == (0, 1, 0)
    assert len(await events(env, "mike@example.org")) == 1
    assert await suppressions(env) == []


async def test_dry_run_writes_nothing(env: Env) -> None:
    for _ in range(2):
        await apply(env, dsn("nina@example.org", MAILBOX_FULL))
    _, soft = await apply(env, dsn("nina@example.org", MAILBOX_FULL), dry_run=True)
    _, hard = await apply(env, dsn("olga@example.org"), dry_run=True)
    assert soft.applied == 1  # would reach the threshold
    assert hard.applied == 1
    assert hard.steps[0]["action"] == "suppress"
    assert await suppressions(env) == []
    assert len(await events(env, "nina@example.org")) == 2
    assert await events(env, "olga@example.org") == []


async def test_dry_run_takes_the_decisions_apply_takes(env: Env) -> None:
    raw = dsn("pia@example.org")
    _, preview = await apply(env, raw, message_id=7, dry_run=True)
    _, real = await apply(env, raw, message_id=7)
    _, preview_again = await apply(env, raw, message_id=7, dry_run=True)
    _, again = await apply(env, raw, message_id=7)
    assert preview == real
    assert preview_again == again
    assert (again.applied, again.ignored) == (0, 1)


async def test_auto_replies_suppress_nothing(env: Env) -> None:
    raw = (
        b"From: peggy@example.org\r\nTo: news@example.com\r\nSubject: Out of office\r\n"
        b"Auto-Submitted: auto-replied\r\nMessage-ID: <ooo-1@example.org>\r\n\r\n"
        b"I am away until Monday.\r\n"
    )
    analysis, result = await apply(env, raw)
    assert analysis.kind == "auto_reply"
    assert (result.applied, result.recorded) == (0, 0)
    assert await suppressions(env) == []


# ------------------------------------------------------------------------------- complaints


async def test_complaint_suppresses_globally(env: Env) -> None:
    analysis, result = await apply(env, arf("quinn@example.com"), rcpt=FBL.rcpt_to[0])
    assert analysis.kind == "complaint"
    assert result.applied == 1
    answer = await check(env, "quinn@example.com", "transactional")
    assert (answer["outcome"], answer["reason"], answer["scope"]) == (
        "complaint",
        "abuse",
        "global",
    )
    (ev,) = await events(env, "quinn@example.com")
    assert (ev.kind, ev.source) == ("complaint", "complaint")
    assert ev.detail["source_ip"] == "192.0.2.60"


async def test_redacted_complaint_with_token_finds_address_and_stream(env: Env) -> None:
    signer = configure(env)
    ref = signer.ref_token("rita@example.com", "promotions")
    _, result = await apply(env, arf(None, feedback_type="opt-out", ref=ref), rcpt=FBL.rcpt_to[0])
    assert (result.applied, result.verified) == (1, True)
    answer = await check(env, "rita@example.com", "promotions")
    assert (answer["suppressed"], answer["scope"], answer["verified"]) == (
        True,
        "promotions",
        True,
    )
    assert (await check(env, "rita@example.com", "transactional"))["suppressed"] is False


async def test_redacted_complaint_with_signed_return_path(env: Env) -> None:
    signer = configure(env)
    rp = signer.return_path("sam@example.com", "promotions")
    _, result = await apply(env, arf(None, mail_from=rp), rcpt=FBL.rcpt_to[0])
    assert (result.applied, result.verified) == (1, True)
    assert (await check(env, "sam@example.com"))["outcome"] == "complaint"


async def test_redacted_complaint_without_token_suppresses_nobody(env: Env) -> None:
    configure(env)
    _, result = await apply(env, arf(None), rcpt=FBL.rcpt_to[0])
    assert (result.applied, result.recorded) == (0, 0)
    assert any("redacted" in n for n in result.notes)
    assert await suppressions(env) == []


async def test_unsigned_complaint_with_require_signed_suppresses_nobody(env: Env) -> None:
    configure(env, require_signed_reports=True)
    _, result = await apply(env, arf("tom@example.com"), rcpt=FBL.rcpt_to[0])
    assert (result.applied, result.recorded) == (0, 1)
    assert await suppressions(env) == []
    (ev,) = await events(env, "tom@example.com")
    assert ev.kind == "unverified_complaint"


async def test_opt_out_from_marketing_does_not_block_transactional(env: Env) -> None:
    raw = arf("uma@example.com", feedback_type="opt-out", stream="marketing")
    _, result = await apply(env, raw, rcpt=FBL.rcpt_to[0])
    assert result.applied == 1
    assert (await check(env, "uma@example.com", "marketing"))["outcome"] == "unsubscribe"
    assert (await check(env, "uma@example.com", "transactional"))["suppressed"] is False
    assert (await check(env, "uma@example.com"))["suppressed"] is False


async def test_opt_out_without_stream_uses_the_default_scope(env: Env) -> None:
    _, result = await apply(env, arf("vera@example.com", feedback_type="opt-out"), rcpt="f@x.net")
    assert result.applied == 1
    answer = await check(env, "vera@example.com", "marketing")
    assert answer["scope"] == "marketing"
    assert (await check(env, "vera@example.com", "transactional"))["suppressed"] is False
    (ev,) = await events(env, "vera@example.com")
    assert ev.detail["stream_defaulted"] is True


async def test_not_spam_and_auth_failure_are_recorded_only(env: Env) -> None:
    _, not_spam = await apply(env, arf("wes@example.com", feedback_type="not-spam"), rcpt="f@x.net")
    _, auth = await apply(
        env, arf("xena@example.com", feedback_type="auth-failure"), rcpt="f@x.net"
    )
    assert (not_spam.applied, not_spam.recorded) == (0, 1)
    assert (auth.applied, auth.recorded) == (0, 1)
    assert await suppressions(env) == []
    assert [e.kind for e in await events(env, "wes@example.com")] == ["not_spam"]
    assert [e.kind for e in await events(env, "xena@example.com")] == ["auth_failure"]


# --------------------------------------------------------------------------------- mailto


async def test_mail_to_the_unsubscribe_address_unsubscribes(env: Env) -> None:
    signer = configure(env)
    address = signer.unsubscribe_mailto_address("yves@example.com", "newsletter")
    raw = b"From: yves@example.com\r\nTo: x\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n"
    _, result = await apply(env, raw, rcpt=address)
    assert (result.applied, result.verified) == (1, True)
    answer = await check(env, "yves@example.com", "newsletter")
    assert (answer["outcome"], answer["scope"]) == ("unsubscribe", "newsletter")
    (ev,) = await events(env, "yves@example.com")
    assert ev.detail["via"] == "mailto"
    # Tampered: nothing.
    forged = signer.unsubscribe_mailto_address("zoe@example.com").replace("zoe", "zed")
    _, result = await apply(env, raw, rcpt=forged)
    assert (result.applied, result.recorded) == (0, 0)
    assert (await check(env, "zed@example.com"))["suppressed"] is False


async def test_malformed_reference_counts_as_absent(env: Env) -> None:
    # An older unsigned VERP address with the same prefix, and another system's header value.
    configure(env)
    raw = dsn("xavier@example.org", ref="v1.c2FtcGxl.0123456789abcdef")
    _, result = await apply(env, raw, rcpt="b+xavier=example.org@bounces.example.net")
    assert (result.applied, result.verified) == (1, False)
    assert any("not a signed reference" in n for n in result.notes)
    configure(env, require_signed_bounces=True)
    _, result = await apply(env, dsn("yann@example.org"), rcpt="b+yann=example.org@x.net")
    assert result.applied == 0


async def test_expired_return_path_is_recorded_never_applied(env: Env) -> None:
    signer = configure(env)
    rp = signer.return_path("zack@example.org", "newsletter", now=1_600_000_000)
    _, result = await apply(env, dsn("zack@example.org"), rcpt=rp)
    assert (result.applied, result.recorded) == (0, 1)
    (ev,) = await events(env, "zack@example.org")
    assert ev.detail["why"] == "return_path: expired"
