"""Tricky address forms in a bounce name exactly the address they name, or none.

A forged or odd bounce must not make the parser act on an address the field does not name:
a display name that looks like an address (the ``parseaddr`` confusion of CVE-2023-27043), a
quoted local part holding an "@", ``%`` and ``!`` routing (the literal address, never the
host it might be relayed to), obsolete source routes (RFC 5321 §4.1.2: the mailbox after the
route), domain literals, and runs of address characters with no address in them.
"""

from __future__ import annotations

import time

import pytest

from dsn import analyse_message
from dsn.address import find_addresses, normalise_address
from dsn.mail import TEXT_LIMIT

CASES = [
    # the angle-addr is the address; the quoted display name is not
    ('"alice@example.org" <bob@example.net>', "bob@example.net"),
    ("alice@example.org <bob@example.net>", "bob@example.net"),
    ("alice@example.org)<bob@example.net>", "bob@example.net"),
    ("rfc822; Jane Doe <Jane@Example.NET>", "jane@example.net"),
    ("rfc822;<A@B.example>", "a@b.example"),
    # routing forms stay literal
    ("alice%example.org@relay.example.net", "alice%example.org@relay.example.net"),
    ("relay.example.net!alice@example.org", "relay.example.net!alice@example.org"),
    ("<@relay.example.net:alice@example.org>", "alice@example.org"),
    ("<@a.example,@b.example:alice@example.org>", "alice@example.org"),
    ("alice@[192.0.2.1]", "alice@[192.0.2.1]"),
    # a quoted local part is one local part, whatever it contains
    ('"bob@example.net"@example.org', '"bob@example.net"@example.org'),
    # no address at all
    ("<>", None),
    ("undisclosed-recipients:;", None),
    ("!" * 2000, None),
    ("alice@localhost", None),
    ("a@b@c.example", None),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_normalise_address(value: str, expected: str | None) -> None:
    assert normalise_address(value) == expected


def test_a_run_of_address_characters_is_linear() -> None:
    """20 KB of "!" took 20 s: each character restarted the scan of the whole run."""
    started = time.process_time()
    assert find_addresses("!" * 20_000 + " alice@example.org") == ["alice@example.org"]
    assert time.process_time() - started < 1.0


DSN = b"""From: MAILER-DAEMON@mx.example.net
To: news@example.com
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Delivery failed.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; "victim@example.org" <real@example.net>
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--b--
"""


def test_a_display_name_in_final_recipient_is_not_the_recipient() -> None:
    analysis = analyse_message(DSN)
    assert [(r.recipient, r.outcome) for r in analysis.results] == [("real@example.net", "hard")]


def test_a_size_bound_never_cuts_an_address_short() -> None:
    """The report text is read up to dsn.mail.TEXT_LIMIT.  Cut inside a line, the last line
    read "<alice@example.co" and alice@example.co -- another domain, someone else -- was
    hard-bounced.  Cut between lines, the address beyond the bound is not read at all."""
    head = b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\n\n"
    body = b"This is the mail system at host mx.example.net.\n\n"
    body = body.ljust(TEXT_LIMIT - 400, b"x") + b"\n"
    cut_inside = b"User unknown:\n<alice@example.co"
    body += b"y" * (TEXT_LIMIT - len(body) - len(cut_inside) - 1) + b"\n"
    body += b"User unknown:\n<alice@example.com>\n"
    assert body[:TEXT_LIMIT].endswith(cut_inside)
    recipients = [r.recipient for r in analyse_message(head + body).results]
    assert "alice@example.co" not in recipients


def test_single_quoted_address_loses_its_quotes() -> None:
    """Exim at demon.co.uk: "addressed to 'x@host'"; a quote inside a local part stays."""
    from dsn.address import find_addresses, normalise_address
    from dsn.mta.base import scan_text

    assert normalise_address("'x@host.example.org'") == "x@host.example.org"
    assert find_addresses("to 'x@host.example.org' and o'brien@example.org") == [
        "x@host.example.org",
        "o'brien@example.org",
    ]
    text = "Your message addressed to 'x@host.example.org' could not be delivered:\n  550 5.1.1 User unknown\n"
    assert [f.recipient for f in scan_text(text)] == ["x@host.example.org"]
