"""parse_report / parse_bytes on hand-built reports: fields, variants, non-reports."""

from __future__ import annotations

import email
import re
import time
from email.message import Message
from email.policy import compat32

import pytest

from arf import ArfParseError, ComplaintReport, parse_bytes, parse_report

FIELDS = """\
Feedback-Type: abuse
User-Agent: TestFBL/1.0
Version: 1
Original-Mail-From: <b+zed=example.com@bounces.example.net>
Original-Rcpt-To: <zed@example.com>
Arrival-Date: Mon, 1 Jan 2024 00:00:00 +0000
Source-IP: 192.0.2.9
"""

RETURNED = """\
Return-Path: <b+zed=example.com@bounces.example.net>
From: news@example.net
To: zed@example.com
Subject: Hi
Message-ID: <m1@example.net>
"""


def build(
    fields: str | None = FIELDS,
    returned: str | None = RETURNED,
    *,
    top: str = 'multipart/report; report-type=feedback-report; boundary="B"',
    fields_type: str = "message/feedback-report",
    returned_type: str = "message/rfc822",
    headers: str = "From: fbl@example.com\n",
) -> str:
    parts = ["--B\nContent-Type: text/plain\n\nThis is an abuse report.\n"]
    if fields is not None:
        parts.append(f"--B\nContent-Type: {fields_type}\n\n{fields}")
    if returned is not None:
        parts.append(f"--B\nContent-Type: {returned_type}\n\n{returned}\nBody.\n")
    return f"{headers}MIME-Version: 1.0\nContent-Type: {top}\n\n" + "\n".join(parts) + "--B--\n"


def parse(text: str, **kwargs: object) -> ComplaintReport:
    report = parse_bytes(text.encode(), **kwargs)
    assert report is not None
    return report


def addresses(report: ComplaintReport) -> list[str | None]:
    return [r.address for r in report.recipients]


def test_basic_fields() -> None:
    report = parse(build())
    assert report.feedback_type == "abuse"
    assert report.outcome == "complaint"
    assert report.user_agent == "TestFBL/1.0"
    assert report.original_rcpt_to == ["zed@example.com"]
    assert report.original_mail_from == "b+zed=example.com@bounces.example.net"
    assert report.source_ip == "192.0.2.9"
    assert report.original_message_id == "<m1@example.net>"
    assert report.original_subject == "Hi"
    assert addresses(report) == ["zed@example.com"]


def test_repeated_original_rcpt_to() -> None:
    fields = FIELDS + "Original-Rcpt-To: Yan@Example.com\nOriginal-Rcpt-To: zed@example.com\n"
    report = parse(build(fields))
    assert report.original_rcpt_to == ["zed@example.com", "Yan@Example.com", "zed@example.com"]
    assert addresses(report) == ["zed@example.com", "yan@example.com"]


def test_folded_fields_and_repeated_domains() -> None:
    fields = (
        "Feedback-Type: fraud\nAuthentication-Results: mx.example.com;\n  spf=fail\n"
        "Reported-Domain: example.net\nReported-Domain: example.org\nIncidents: lots\n"
    )
    report = parse(build(fields))
    assert report.reason == "fraud"
    assert report.authentication_results == "mx.example.com; spf=fail"
    assert report.reported_domain == ["example.net", "example.org"]
    assert report.incidents is None


def test_fields_after_a_stray_blank_line_are_read() -> None:
    report = parse(build("Feedback-Type: virus\n\nOriginal-Rcpt-To: late@example.com\n"))
    assert report.feedback_type == "virus"
    assert addresses(report) == ["late@example.com"]


def test_missing_feedback_type_means_abuse() -> None:
    report = parse(build("User-Agent: X/1\nOriginal-Rcpt-To: zed@example.com\n"))
    assert (report.feedback_type, report.outcome, report.reason) == ("abuse", "complaint", "abuse")


def test_feedback_report_part_typed_text_plain() -> None:
    report = parse(build(FIELDS.replace("abuse", "opt-out"), fields_type="text/plain"))
    assert report.outcome == "unsubscribe"
    assert report.user_agent == "TestFBL/1.0"


def test_hotmail_multipart_report_without_report_type() -> None:
    report = parse(build(top='multipart/report; boundary="B"'))
    assert addresses(report) == ["zed@example.com"]


def test_multipart_report_of_other_type_is_not_a_complaint() -> None:
    text = build(top='multipart/report; report-type=delivery-status; boundary="B"')
    assert parse_bytes(text.encode()) is None


@pytest.mark.parametrize(
    "returned_type", ["text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"]
)
def test_returned_headers_only(returned_type: str) -> None:
    report = parse(build("Feedback-Type: abuse\n", returned_type=returned_type))
    assert report.original_subject == "Hi"
    assert addresses(report) == ["zed@example.com"]
    assert report.recipients[0].source == "to-header"


def test_returned_headers_inline_as_text_plain() -> None:
    report = parse(build("Feedback-Type: abuse\n", returned_type="text/plain"))
    assert report.original_message_id == "<m1@example.net>"
    assert addresses(report) == ["zed@example.com"]


def test_no_returned_message() -> None:
    report = parse(build(returned=None))
    assert report.original_message_id is None
    assert addresses(report) == ["zed@example.com"]


def test_removal_recipient() -> None:
    report = parse(build("Feedback-Type: opt-out\nRemoval-Recipient: user@example.com\n"))
    assert report.recipients[0].source == "removal-recipient"
    assert addresses(report) == ["user@example.com"]


JMRP = """\
From: staff@hotmail.com
Subject: complaint about message from 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="J"

--J
Content-Type: message/rfc822

X-HmXmrOriginalRecipient: {original}
From: news@example.net
To: {to}
Subject: Hi

Body.
--J--
"""


def test_jmrp_with_recipient() -> None:
    report = parse(JMRP.format(original="Pat@example.com", to="pat@example.com"))
    assert report.provider == "microsoft"
    assert report.feedback_type == "abuse"
    assert report.recipients[0].source == "provider-header"
    assert addresses(report) == ["pat@example.com"]


def test_jmrp_redacted_is_never_an_address() -> None:
    report = parse(JMRP.format(original="redacted@hotmail.com", to="****@hotmail.com"))
    assert addresses(report) == [None, None]
    assert all(r.redacted for r in report.recipients)


def test_jmrp_sender_without_the_header() -> None:
    text = JMRP.replace("X-HmXmrOriginalRecipient: {original}\n", "").format(to="q@example.com")
    report = parse(text)
    assert report.provider == "microsoft"
    assert addresses(report) == ["q@example.com"]


def test_relayed_report_inside_a_forward() -> None:
    inner = build(headers="From: fbl@isp.example.com\n")
    outer = (
        "From: complaints@amazonses.com\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="O"\n\n--O\nContent-Type: text/plain\n\nFwd\n'
        f"--O\nContent-Type: message/rfc822\n\n{inner}\n--O--\n"
    )
    report = parse(outer)
    assert report.provider == "esp-relayed"
    assert addresses(report) == ["zed@example.com"]


def test_provider_from_user_agent_beats_relaying_platform() -> None:
    fields = FIELDS.replace("TestFBL/1.0", "Yahoo!-Mail-Feedback/2.0")
    report = parse(build(fields, headers="From: complaints@email-abuse.amazonses.com\n"))
    assert report.provider == "yahoo"


def test_custom_headers_and_verp() -> None:
    returned = (
        "Return-Path: <b+kim=example.com@bounces.example.net>\nTo: xxxx@example.com\n"
        "X-Our-Rcpt: redacted\nX-Our-Stream: alerts\nX-Our-Ref: tok-1\n"
    )
    verp = re.compile(r"b\+(?P<local>[^=]+)=(?P<domain>[^@]+)@bounces\.example\.net")
    report = parse(
        build("Feedback-Type: abuse\n", returned),
        recipient_header="X-Our-Rcpt",
        stream_header="X-Our-Stream",
        ref_header="X-Our-Ref",
        verp_pattern=verp,
    )
    assert report.stream == "alerts"
    assert report.ref_token == "tok-1"
    assert [(r.address, r.source) for r in report.recipients] == [
        (None, "recipient-header"),
        (None, "ref-token"),
        ("kim@example.com", "return-path-verp"),
    ]


def test_verp_from_original_mail_from_when_no_return_path() -> None:
    verp = re.compile(r"b\+(?P<local>[^=]+)=(?P<domain>[^@]+)@bounces\.example\.net")
    report = parse(
        build("Feedback-Type: abuse\n" + FIELDS.splitlines()[3] + "\n", "To: x\n"),
        verp_pattern=verp,
    )
    assert report.recipients[-1].address == "zed@example.com"
    assert report.recipients[-1].source == "return-path-verp"


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(ending: bytes) -> None:
    raw = build().encode()
    assert parse_bytes(raw.replace(b"\n", ending)) == parse_bytes(raw)


def test_crlf_message_parsed_without_normalising() -> None:
    raw = build().encode().replace(b"\n", b"\r\n")
    report = parse_report(email.message_from_bytes(raw, policy=compat32))
    assert report == parse_bytes(build().encode())


def test_declared_report_without_parts_raises() -> None:
    text = "Content-Type: multipart/report; report-type=feedback-report\n\nno boundary\n"
    with pytest.raises(ArfParseError):
        parse_bytes(text.encode())


def test_parse_bytes_refuses_text() -> None:
    with pytest.raises(ArfParseError):
        parse_bytes("not bytes")  # type: ignore[arg-type]


NON_REPORTS = {
    "plain": "From: a@example.com\nSubject: hi\n\nhello\n",
    "no-headers": "",
    "html": "Content-Type: text/html\n\n<p>x</p>\n",
    "alternative": (
        'Content-Type: multipart/alternative; boundary="A"\n\n--A\nContent-Type: text/plain\n\n'
        "x\n--A\nContent-Type: text/html\n\n<p>x</p>\n--A--\n"
    ),
    "dsn": (
        'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\n\n'
        "--D\nContent-Type: text/plain\n\nfailed\n--D\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; a@example.com\n"
        "Action: failed\nStatus: 5.1.1\n--D--\n"
    ),
    "forward": (
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="F"\n\n--F\n'
        "Content-Type: text/plain\n\nFYI\n--F\nContent-Type: message/rfc822\n\n"
        "From: b@example.com\nTo: c@example.com\nSubject: x\n\nbody\n--F--\n"
    ),
    "feedback-words-in-body": "Subject: report\n\nFeedback-Type: abuse\nOriginal-Rcpt-To: a@b.c\n",
}


@pytest.mark.parametrize("name", sorted(NON_REPORTS))
def test_non_reports_return_none(name: str) -> None:
    assert parse_bytes(NON_REPORTS[name].encode()) is None


def test_non_report_is_turned_away_quickly() -> None:
    msgs: list[Message] = [
        email.message_from_string(NON_REPORTS[name], policy=compat32)
        for name in ("plain", "html", "alternative", "dsn")
    ]
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        for msg in msgs:
            parse_report(msg)
    per_call = (time.perf_counter() - start) / (rounds * len(msgs))
    # A few microseconds on a laptop; the bound leaves room for slow CI machines.
    assert per_call < 100e-6
