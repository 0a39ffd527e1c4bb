"""RFC 3464 field parsing, folding, line endings, VERP, multi-recipient, garbage."""

from __future__ import annotations

import pytest

from dsn import AnalysisOptions, ParseError, analyse_message
from dsn.address import normalise_address
from dsn.mail import header_text, normalise_line_endings, read_mail
from dsn.mta.base import find_reply_code, find_status, scan_text
from dsn.mta.rfc3464 import normalise_action, parse_fields, parse_records
from dsn.verp import decode_verp

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

Final-Recipient: rfc822; One@Example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user
    unknown
Remote-MTA: dns; MX.Example.org

Final-Recipient: rfc822; two@example.org
Action: delayed
Status: 4.4.7
Will-Retry-Until: Thu, 2 May 2024 12:00:00 +0000

--b
Content-Type: text/rfc822-headers

Message-ID: <abc@example.com>
From: news@example.com
X-Stoplist-Ref: token-1
X-Stoplist-Stream: alerts

--b--
"""


def test_fields_are_unfolded_and_lower_cased() -> None:
    blocks = parse_fields("Final-Recipient: rfc822;\n  a@example.org\nACTION: Failed\n\nX: y")
    assert blocks == [
        [("final-recipient", "rfc822; a@example.org"), ("action", "Failed")],
        [("x", "y")],
    ]


def test_records_split_on_repeated_recipient_without_blank_lines() -> None:
    text = (
        "Reporting-MTA: dns; mx.example.net\n"
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.2.2\n"
    )
    per_message, records = parse_records([text])
    assert per_message["reporting-mta"] == "dns; mx.example.net"
    assert [r["final-recipient"] for r in records] == [
        "rfc822; a@example.org",
        "rfc822; b@example.org",
    ]


@pytest.mark.parametrize(
    "text",
    [
        # Postfix: Original-Recipient right after its Final-Recipient
        "Final-Recipient: rfc822; a@example.org\nOriginal-Recipient: rfc822; x@example.org\n"
        "Action: failed\nStatus: 4.0.0\n",
        # Amazon SES inbound: Action first
        "Action: failed\nFinal-Recipient: rfc822; a@example.org\n"
        "Original-Recipient: rfc822; x@example.org\nStatus: 4.0.0\n",
        # most MTAs: Original-Recipient first
        "Original-Recipient: rfc822; x@example.org\nFinal-Recipient: rfc822; a@example.org\n"
        "Action: failed\nStatus: 4.0.0\n",
    ],
)
def test_original_recipient_in_any_order_is_one_record(text: str) -> None:
    _, records = parse_records([text + "\n" + text.replace("a@", "b@").replace("x@", "y@")])
    assert [(r["final-recipient"], r["original-recipient"], r["status"]) for r in records] == [
        ("rfc822; a@example.org", "rfc822; x@example.org", "4.0.0"),
        ("rfc822; b@example.org", "rfc822; y@example.org", "4.0.0"),
    ]


def test_original_recipient_after_a_finished_record_opens_the_next() -> None:
    text = (
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Original-Recipient: rfc822; y@example.org\nFinal-Recipient: rfc822; b@example.org\n"
        "Action: failed\nStatus: 5.2.2\n"
    )
    _, records = parse_records([text])
    assert [r.get("original-recipient") for r in records] == [None, "rfc822; y@example.org"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rfc822; <User@Example.ORG>", "user@example.org"),
        ("RFC822;user@example.org", "user@example.org"),
        ("user@example.org", "user@example.org"),
        ("rfc822; not an address", None),
        ("", None),
    ],
)
def test_normalise_address(value: str, expected: str | None) -> None:
    assert normalise_address(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("failed", "failed"),
        ("Failure", "failed"),
        ("delayed", "delayed"),
        ("relayed", "relayed"),
        ("expanded (to 3)", "expanded"),
        ("delivered", "delivered"),
        ("bogus", None),
    ],
)
def test_normalise_action(value: str, expected: str | None) -> None:
    assert normalise_action(value) == expected


def test_status_and_reply_code_from_text() -> None:
    assert find_status("550 5.1.1 <a@example.org>: unknown [192.0.2.1]") == "5.1.1"
    assert find_status("host 10.5.4.3 said nothing") is None
    assert find_reply_code("host mx said: 552 5.2.2 mailbox full") == 552
    assert find_reply_code("message of 550 bytes") is None


def test_a_transcript_reports_its_failure_not_the_replies_before_it() -> None:
    transcript = "Out: 250 2.1.5 Ok In: DATA Out: 354 End data Out: 451 4.3.0 Error In: QUIT"
    assert find_status(transcript) == "4.3.0"
    assert find_reply_code(transcript) == 451
    assert find_reply_code("250 2.1.5 Ok then 550 rejected") == 550
    assert find_status("250 2.0.0 Ok: queued") == "2.0.0"  # a delivery report keeps its own


def test_sendmail_host_verdict_is_not_the_recipient_above_it() -> None:
    text = (
        "554 <a@example.edu>... Remote protocol error\n"
        "550 example.org (smtp)... 550 Host unknown\n"
        "554 <b@example.org>... 550 Host unknown (Authoritative answer from name server)\n"
    )
    found = {f.recipient: f.diagnostic for f in scan_text(text)}
    assert "Host unknown" not in found["a@example.edu"]
    assert "Host unknown" in found["b@example.org"]


def test_multi_recipient_report() -> None:
    analysis = analyse_message(DSN)
    assert analysis.kind == "bounce"
    assert analysis.mta == "rfc3464"
    one, two = analysis.results
    assert (one.recipient, one.action, one.status, one.reply_code) == (
        "one@example.org",
        "failed",
        "5.1.1",
        550,
    )
    assert one.diagnostic == "550 5.1.1 user unknown"
    assert one.remote_mta == "mx.example.org"
    assert (two.recipient, two.action, two.will_retry_until) == (
        "two@example.org",
        "delayed",
        "Thu, 2 May 2024 12:00:00 +0000",
    )
    assert analysis.original_message_id == "abc@example.com"
    assert analysis.original_sender == "news@example.com"
    assert analysis.ref_token == "token-1"
    assert analysis.stream == "alerts"
    assert {r.stream for r in analysis.results} == {"alerts"}


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_line_endings_give_the_same_result(eol: bytes) -> None:
    converted = DSN.replace(b"\n", eol)
    assert normalise_line_endings(converted) == DSN
    assert analyse_message(converted) == analyse_message(DSN)


def test_delay_only_report_is_kind_delay() -> None:
    raw = DSN.replace(b"Action: failed", b"Action: delayed")
    analysis = analyse_message(raw)
    assert analysis.kind == "delay"
    assert {r.action for r in analysis.results} == {"delayed"}


def test_delivered_report_suppresses_nothing() -> None:
    raw = DSN.replace(b"Action: failed", b"Action: delivered").replace(
        b"Action: delayed", b"Action: relayed"
    )
    analysis = analyse_message(raw)
    assert analysis.kind == "delivery_report"
    assert {r.outcome for r in analysis.results} == {"none"}


def test_status_part_without_report_wrapper() -> None:
    raw = (
        b"From: postmaster@example.net\nSubject: Returned mail\nContent-Type: text/plain\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; x@example.org\nAction: failed\nStatus: 5.1.1\n"
    )
    analysis = analyse_message(raw)
    assert [r.recipient for r in analysis.results] == ["x@example.org"]


def test_report_inside_forwarded_message() -> None:
    raw = (
        b"From: admin@example.com\nSubject: Fwd: bounce\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\n--outer\nContent-Type: text/plain\n\n'
        b"see below\n--outer\nContent-Type: message/rfc822\n\n" + DSN + b"\n--outer--\n"
    )
    analysis = analyse_message(raw)
    assert [r.recipient for r in analysis.results] == ["one@example.org", "two@example.org"]


@pytest.mark.parametrize(
    ("pattern", "address", "expected"),
    [
        (
            "b+{local}={domain}@bounces.example.net",
            "b+user=example.com@bounces.example.net",
            "user@example.com",
        ),
        (
            "b+{local}={domain}@bounces.example.net",
            "<B+User=Example.com@bounces.example.net>",
            "user@example.com",
        ),
        ("b+{local}={domain}@bounces.example.net", "other@bounces.example.net", None),
        (
            r"^bounce-(?P<local>[^=]+)=(?P<domain>[^@]+)@example\.net$",
            "bounce-a.b=example.org@example.net",
            "a.b@example.org",
        ),
        ("*+{recipient}@example.net", "x+joe=example.org@example.net", "joe@example.org"),
    ],
)
def test_verp(pattern: str, address: str, expected: str | None) -> None:
    assert decode_verp(pattern, address) == expected


def test_verp_fills_recipient_from_envelope() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nTo: b+user=example.com@bounces.example.net\n"
        b"Subject: Undeliverable\nContent-Type: multipart/report; report-type=delivery-status;"
        b' boundary="b"\n\n--b\nContent-Type: message/delivery-status\n\n'
        b"Reporting-MTA: dns; mx.example.net\n\nAction: failed\nStatus: 5.1.1\n\n--b--\n"
    )
    options = AnalysisOptions(verp_pattern="b+{local}={domain}@bounces.example.net")
    analysis = analyse_message(raw, options=options)
    assert analysis.verp_recipient == "user@example.com"
    assert [r.recipient for r in analysis.results] == ["user@example.com"]
    envelope = analyse_message(
        raw.replace(b"To: b+user", b"To: x"),
        options=options,
        envelope_rcpt="b+joe=example.org@bounces.example.net",
    )
    assert envelope.verp_recipient == "joe@example.org"


def test_scan_text_ignores_mentioned_addresses() -> None:
    text = (
        "Please contact postmaster@example.net if you need help.\n\n"
        "<gone@example.org>:\n550 5.1.1 mailbox unavailable\n"
    )
    assert [f.recipient for f in scan_text(text)] == ["gone@example.org"]


def test_plain_mail_is_unknown() -> None:
    analysis = analyse_message(b"From: a@example.org\nSubject: hello\n\nuser@example.net: hi\n")
    assert analysis.kind == "unknown"
    assert analysis.results == []


def test_to_json_shape() -> None:
    obj = analyse_message(DSN).to_json("x.eml")
    # ref_token only because the returned message carries one
    assert set(obj) == {"file", "kind", "error", "mta", "results", "ref_token"}
    assert obj["ref_token"] == "token-1"
    assert set(obj["results"][0]) == {
        "recipient",
        "outcome",
        "reason",
        "status",
        "reply_code",
        "action",
        "diagnostic",
        "remote_mta",
        "rule_id",
        "stream",
    }


@pytest.mark.parametrize("raw", [b"", b"   \n\n", "text"])
def test_unreadable_input_raises_parse_error(raw: object) -> None:
    with pytest.raises(ParseError):
        analyse_message(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xff\xfe garbage \x80\x81",
        b'Content-Type: multipart/report; boundary="x"\n\n--x\nContent-Type: message/'
        b"delivery-status\nContent-Transfer-Encoding: base64\n\n!!!!\n--x",
        b"From: MAILER-DAEMON@x\nSubject: Undeliverable\nContent-Type: text/plain; charset=bogus"
        b"\n\n<a@example.org>:\n550 \xff\xfe no such user\n",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n%%%%",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    analyse_message(raw)


def test_a_boundary_that_prefixes_another_splits_only_its_own_parts() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b'--b\nContent-Type: multipart/alternative; boundary="b2"\n\n'
        b"--b2\nContent-Type: text/plain\n\nDelivery failed.\n--b2--\n"
        b"--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\n"
        b"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"--b  \nContent-Type: message/rfc822\n\nFrom: news@example.com\nTo: a@example.org\n"
        b"Message-ID: <m1@example.com>\n\nHello.\n--b--\nepilogue\n"
    )
    analysis = analyse_message(raw)
    assert [(r.recipient, r.status) for r in analysis.results] == [("a@example.org", "5.1.1")]
    assert analysis.original_message_id == "m1@example.com"


def test_broken_encoded_word_in_subject_is_still_analysed() -> None:
    """A broken base64 encoded word (HeaderParseError) leaves the Subject as it stands."""
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\n"
        b"To: sender@example.com\n"
        b"Subject: =?utf-8?b?abcde?= Undelivered Mail Returned to Sender\n"
        b"\n"
        b"This is the mail system at host mx.example.net.\n\n"
        b"<rcpt@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1 User unknown\n"
    )
    analysis = analyse_message(raw)
    assert analysis.kind == "bounce"
    assert [r.recipient for r in analysis.results] == ["rcpt@example.org"]
    assert header_text(read_mail(raw).message, "Subject").startswith("=?utf-8?b?abcde?=")
