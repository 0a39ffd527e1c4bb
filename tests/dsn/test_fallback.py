"""The text fallback: recipients and outcomes of its golden samples (LF, CRLF and CR-only),
the layouts it reads inline, what it never reads (the quoted original, sender positions),
and the non-bounces that suppress nobody."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsn import AnalysisOptions, analyse_message

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# sample, [(recipient, outcome, status)]
CASES: list[tuple[str, list[tuple[str, str, str | None]]]] = [
    (
        "fallback-01.eml",
        [("nobody@example.org", "hard", "5.1.1"), ("busy@example.org", "soft", "4.2.2")],
    ),
    ("fallback-03.eml", [("bob@example.org", "soft", None)]),
    (
        "fallback-04.eml",
        [("carol.old@example.org", "soft", None), ("judy@example.net", "policy", "4.7.0")],
    ),
    ("fallback-05.eml", [("dave@example.org", "soft", None)]),  # 550 read; its text unclassified
    ("fallback-06.eml", [("erin@example.net", "hard", "5.1.1")]),
    (
        "fallback-07.eml",
        [("frank@example.org", "hard", "5.2.1"), ("grace@example.org", "policy", "5.7.1")],
    ),
    ("fallback-08.eml", [("heidi@example.org", "hard", "5.1.1")]),
    ("fallback-09.eml", [("lena@example.de", "hard", "5.1.1")]),
    ("fallback-10.eml", [("marc@example.fr", "hard", "5.1.1")]),
    ("fallback-11.eml", [("nuria@example.es", "hard", "5.1.1")]),
    ("fallback-12.eml", [("paolo@example.it", "soft", "5.2.2")]),
    ("fallback-13.eml", [("rita@example.com.br", "hard", "5.1.1")]),
    ("fallback-14.eml", [("sanne@example.nl", "hard", "5.1.1")]),
    ("fallback-15.eml", [("taro@example.jp", "hard", None)]),
    ("fallback-16.eml", [("wang@example.cn", "hard", "5.1.1")]),
    ("fallback-17.eml", [("ivanov@example.ru", "hard", "5.1.1")]),
    ("fallback-18.eml", [("uma@example.org", "hard", None)]),
    ("fallback-19.eml", [("victor@example.de", "hard", "5.1.1")]),
]


def _endings(raw: bytes, style: str) -> bytes:
    lf = raw.replace(b"\r\n", b"\n")
    return {"lf": lf, "crlf": lf.replace(b"\n", b"\r\n"), "cr": lf.replace(b"\n", b"\r")}[style]


@pytest.mark.parametrize("style", ["lf", "crlf", "cr"])
@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fallback_sample(
    name: str, expected: list[tuple[str, str, str | None]], style: str
) -> None:
    raw = _endings((SAMPLES / "bounce" / name).read_bytes(), style)
    analysis = analyse_message(raw)
    assert analysis.mta == "fallback"
    got = [(r.recipient, r.outcome, r.status) for r in analysis.results]
    assert got == expected


NEGATIVES = sorted(
    p.name
    for p in (SAMPLES / "negative").glob("*.eml")
    if p.name.startswith(("autoreply-", "challenge-", "receipt-", "vacation-"))
)


@pytest.mark.parametrize("style", ["lf", "crlf", "cr"])
@pytest.mark.parametrize("name", NEGATIVES)
def test_non_bounces_suppress_nobody(name: str, style: str) -> None:
    analysis = analyse_message(_endings((SAMPLES / "negative" / name).read_bytes(), style))
    assert analysis.kind in ("auto_reply", "delivery_report", "receipt", "unknown")
    assert all(r.outcome == "none" for r in analysis.results)


def test_there_is_a_negative_of_each_kind() -> None:
    kinds = {name.split("-")[0] for name in NEGATIVES}
    assert {"autoreply", "challenge", "receipt"} <= kinds


def _bounce(body: str, *, subject: str = "Undelivered Mail", extra: str = "") -> bytes:
    head = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
        "To: news@example.com\n"
        f"Subject: {subject}\n"
        f"{extra}"
        "Content-Type: text/plain; charset=utf-8\n\n"
    )
    return (head + body).encode()


def _recipients(raw: bytes) -> list[str]:
    analysis = analyse_message(raw)
    return [r.recipient for r in analysis.results if r.outcome != "none"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Delivery failed.\n\n<a@example.org>: 550 5.1.1 unknown\n", ["a@example.org"]),
        ("Recipient: b@example.org\nReason: 550 5.1.1 no such user\n", ["b@example.org"]),
        ("Original recipient: c@example.org\nError: 550 5.1.1 no mailbox\n", ["c@example.org"]),
        (
            "Failed recipient(s):\nd@example.org\n\nError message:\n550 5.1.1 unknown\n",
            ["d@example.org"],
        ),
        ("Sorry.\n\n    RCPT TO:<e@example.org>\n    550 5.1.1 User unknown\n", ["e@example.org"]),
        (
            "Could not be delivered to one or more recipients.\n\n  * f@example.org\n"
            "  * g@example.org\n",
            ["f@example.org", "g@example.org"],
        ),
        ("Unknown user: h@example.org\n", ["h@example.org"]),
        (
            "Die Zustellung an folgende Empfänger ist fehlgeschlagen:\n\ni@example.de\n",
            ["i@example.de"],
        ),
        ("宛先不明: j@example.jp\n", ["j@example.jp"]),
        ("k@example.org, ERROR CODE :550 - mailbox unavailable\n", ["k@example.org"]),
        # MDaemon-style "> addr" under its heading; a display name before the angle-addr
        (
            "The following addresses did NOT receive a copy of your message:\n\n> l@example.org\n",
            ["l@example.org"],
        ),
        (
            "The email below could not be delivered to the following user:\n\n"
            '"M" <m@example.org>\n',
            ["m@example.org"],
        ),
        ("Delivery failed for the following: n@example.org, account disabled\n", ["n@example.org"]),
        (
            "------ Failed Recipients ------\n<o@example.org>\n------ Returned Mail ------\n",
            ["o@example.org"],
        ),
        ("Undeliverable Address: p@example.org\nReason: no such user\n", ["p@example.org"]),
    ],
)
def test_layouts_inline(body: str, expected: list[str]) -> None:
    for style in ("lf", "crlf", "cr"):
        assert _recipients(_endings(_bounce(body), style)) == expected, style


def test_never_an_address_from_the_quoted_original() -> None:
    body = (
        "Your message could not be delivered.\n\n<a@example.org>: 550 5.1.1 unknown\n\n"
        "Received: from mail.example.com by mx.example.org\n"
        "From: News <news@example.com>\n"
        "To: a@example.org\nCc: other@example.net\n"
        "Reply-To: <replies@example.com>\n"
        "Message-ID: <1@example.com>\n\n"
        "<other@example.net>: user unknown, this line is part of the original\n"
    )
    assert _recipients(_bounce(body)) == ["a@example.org"]


def test_quoted_header_lines_are_not_read() -> None:
    body = "Delivery failed: user unknown.\n\n> To: x@example.net\n> Recipient: y@example.net\n"
    assert _recipients(_bounce(body)) == []


def test_a_sender_named_in_the_text_is_never_a_recipient() -> None:
    body = (
        "A message sent by <news@example.org> could not be delivered.\n\n"
        "Failed recipient: z@example.org\nError: 550 5.1.1 unknown\n"
    )
    assert _recipients(_bounce(body)) == ["z@example.org"]
    mail_from = "Session:\n MAIL FROM:<bounce@example.net>\n 550 rejected\n"
    assert _recipients(_bounce(mail_from)) == []


def test_a_forwarded_bounce_is_read_without_its_quoting() -> None:
    body = (
        "See below.\n\n"
        "> From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\n"
        "> Date: Wed, 1 May 2024 12:05:00 +0000\n"
        "> Subject: Returned mail\n>\n"
        "> The following recipient could not be reached:\n"
        "> <q@example.org>: 550 5.1.1 User unknown\n"
        ">\n> Received: from a by b\n> Message-ID: <1@example.com>\n> To: other@example.net\n"
    )
    assert _recipients(_bounce(body, subject="Fwd: Returned mail")) == ["q@example.org"]


def test_a_mentioned_address_without_a_failure_is_not_a_recipient() -> None:
    body = "Questions? Write to help@example.org.\n\nThank you.\n"
    assert _recipients(_bounce(body)) == []
    body = (
        "Your message to s@example.org could not be delivered: user unknown.\n"
        "If you need help, send a message to postmaster@example.org with this error.\n"
    )
    assert _recipients(_bounce(body)) == ["s@example.org"]


def test_a_labelled_address_needs_a_failure_beside_it() -> None:
    body = (
        "Your order could not be processed: payment error.\n\n"
        "Order details\nReference: 1234\nDate: 1 May 2024\n"
        "Recipient: shop@example.org\nAmount: 10.00\n"
    )
    assert _recipients(_bounce(body, subject="Notification")) == []


def test_a_receipt_in_prose_suppresses_nobody() -> None:
    body = "Your message has been delivered to the following recipients:\n\nr@example.org\n"
    assert _recipients(_bounce(body, subject="Delivery Status Notification")) == []


# --- Which address: the one we sent to ---------------------------------------------------

_FORWARDED_DSN = """\
From: MAILER-DAEMON@relay.example.net
To: b+{verp}@bounces.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

{text}
--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

{records}
--b1
Content-Type: message/rfc822

From: News <news@example.com>
To: {to}
{ours}Subject: Our May newsletter

Hello.
--b1--
"""


def _dsn(
    records: list[tuple[str, str | None]],
    *,
    ours: str | None = None,
    to: str = "alias@example.org",
    text: str = "Delivery failed.",
    verp: str = "nobody=example.com",
) -> bytes:
    blocks = []
    for final, original in records:
        lines = [f"Final-Recipient: rfc822; {final}"]
        if original:
            lines.append(f"Original-Recipient: rfc822; {original}")
        lines += ["Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 unknown"]
        blocks.append("\n".join(lines))
    header = f"X-Stoplist-Recipient: {ours}\n" if ours else ""
    return _FORWARDED_DSN.format(
        records="\n\n".join(blocks), ours=header, to=to, text=text, verp=verp
    ).encode()


def test_our_header_wins_over_a_forwarded_address() -> None:
    analysis = analyse_message(
        _dsn([("final@forward.example.net", None)], ours="alias@example.org")
    )
    [result] = analysis.results
    assert result.recipient == "alias@example.org"
    assert result.reported_recipient == "final@forward.example.net"
    assert result.to_json()["reported_recipient"] == "final@forward.example.net"


def test_our_verp_address_wins_over_a_forwarded_address() -> None:
    options = AnalysisOptions(verp_pattern="b+{local}={domain}@bounces.example.com")
    raw = _dsn([("final@forward.example.net", None)], verp="alias=example.org")
    analysis = analyse_message(raw, options=options)
    assert [r.recipient for r in analysis.results] == ["alias@example.org"]
    envelope = analyse_message(
        _dsn([("final@forward.example.net", None)]),
        options=options,
        envelope_rcpt="b+carol=example.org@bounces.example.com",
    )
    assert [r.recipient for r in envelope.results] == ["carol@example.org"]


def test_when_our_address_is_named_the_expansion_is_dropped() -> None:
    raw = _dsn(
        [("alias@example.org", None), ("member@example.net", None)], ours="alias@example.org"
    )
    assert [r.recipient for r in analyse_message(raw).results] == ["alias@example.org"]


def test_original_recipient_equal_to_ours_marks_the_entry() -> None:
    raw = _dsn(
        [("one@example.net", "alias@example.org"), ("two@example.net", "other@example.org")],
        ours="alias@example.org",
    )
    got = [(r.recipient, r.reported_recipient) for r in analyse_message(raw).results]
    assert got == [("alias@example.org", "one@example.net"), ("two@example.net", None)]


def test_an_expansion_we_cannot_attribute_is_left_as_reported() -> None:
    raw = _dsn([("one@example.net", None), ("two@example.net", None)], ours="alias@example.org")
    got = [r.recipient for r in analyse_message(raw).results]
    assert got == ["one@example.net", "two@example.net"]


def test_a_header_listing_several_addresses_identifies_no_one() -> None:
    raw = _dsn([("final@forward.example.net", None)], ours="a@example.org, b@example.org")
    assert [r.recipient for r in analyse_message(raw).results] == ["final@forward.example.net"]


def test_without_our_identification_the_reported_address_stays() -> None:
    """Original-Recipient and Postfix's "expanded from" are kept beside the recipient, not in
    its place: measured as "the address we sent to" on the corpus, each made it worse."""
    raw = _dsn(
        [("final@forward.example.net", None)],
        text="<final@forward.example.net> (expanded from\n    <alias@example.org>): unknown user",
    )
    [result] = analyse_message(raw).results
    assert result.recipient == "final@forward.example.net"
    assert result.original_recipient == "alias@example.org"
    assert result.reported_recipient is None
    raw = _dsn([("final@forward.example.net", "alias@example.org")])
    [result] = analyse_message(raw).results
    assert (result.recipient, result.original_recipient) == (
        "final@forward.example.net",
        "alias@example.org",
    )


def test_a_long_list_under_one_heading_is_read_to_its_end() -> None:
    items = "".join(
        f"  user{i}@example.org\n    The recipient's mailbox does not exist.\n\n" for i in range(40)
    )
    body = f"Delivery to the following recipients failed.\n\n{items}Thank you.\n"
    assert analyse_message(_bounce(body)).mta == "fallback"
    assert _recipients(_bounce(body)) == [f"user{i}@example.org" for i in range(40)]


def test_apple_vacation_header_marks_an_auto_reply() -> None:
    raw = (
        b"From: Yuki <yuki@example.org>\nTo: news@example.com\nSubject: Re: Our May newsletter\n"
        b"X-Apple-Action: vacation\n\nI am away until Monday.\n"
    )
    assert analyse_message(raw).kind == "auto_reply"


def test_an_exchange_system_administrator_notice_is_read() -> None:
    raw = (
        b"From: System Administrator <admin@mail.example.org>\nTo: news@example.com\n"
        b"Subject: Your message\n\nDelivery to the following recipients failed.\n\n"
        b"       w@example.org\n"
    )
    assert [r.recipient for r in analyse_message(raw).results] == ["w@example.org"]
