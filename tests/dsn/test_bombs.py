"""Parser bombs: hostile messages finish in bounded CPU time and memory, or raise the parser's
own error -- never a crash, never a hang.

The SMTP sink stores whatever it accepted; a parse worker then runs ``dsn.analyse_message``
under ``STOPLIST_PARSE_TIMEOUT_S`` / ``STOPLIST_PARSE_MEMORY_MB`` (10 s, 512 MB).  A message
that costs seconds ties a worker up, and one that needs the cap fails for good, so the parsers
themselves must be linear: every bomb here is parsed by ``analyse_message`` and by
``arf.parse_bytes`` in well under ``CPU_LIMIT`` seconds of CPU (the process's own CPU time, so a
busy machine does not make the test flaky; none takes more than 0.25 s now).

The shapes named by the reliability issue (100,000 tiny parts, a 10,000-address To:, 1,000
nesting levels, a 40 KB folded header, NUL and 8-bit bytes, LF-only and CR-only files), then
one bomb per super-linear path or crash that the fuzzing and these tests found.  Those took
1.7 to 15 s of CPU, or raised RecursionError, on the code before their fix; each is sized so
that unfixed code fails here within a minute rather than hanging for hours.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Callable

import pytest

from arf import ArfParseError, ComplaintReport, parse_bytes
from classifiers import default_rules
from dsn import MAX_RECIPIENTS, MessageAnalysis, ParseError, analyse_message

CPU_LIMIT = 2.0
MB = 1024 * 1024

default_rules()  # compiled once per process: not inside the first bomb's measured time

BOUNCE_HEAD = (
    b"From: MAILER-DAEMON@mx.example.net\n"
    b"To: news@example.com\n"
    b"Subject: Undelivered Mail Returned to Sender\n"
)
DSN_HEAD = (
    BOUNCE_HEAD + b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
    b"--b\nContent-Type: text/plain\n\nThis is the mail system at host mx.example.net.\n\n"
    b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
)
ARF_HEAD = (
    b"From: staff@hotmail.com\nTo: fbl@fbl.example.net\nSubject: complaint\nMIME-Version: 1.0\n"
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n"
    b"--b\nContent-Type: text/plain\n\nA complaint.\n\n"
    b"--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\n"
)
ARF_TAIL = (
    b"\n--b\nContent-Type: text/rfc822-headers\n\nFrom: news@example.com\n"
    b"To: alice@example.org\nSubject: hello\n\n--b--\n"
)


def tiny_parts(report_type: bytes) -> bytes:
    """The email package built every one of the parts for arf.parse_bytes (2.5 s); a
    multipart now keeps its first arf.mime.MAX_PARTS."""
    parts = b"--p\nContent-Type: text/plain\n\nx\n" * 100_000
    return (
        BOUNCE_HEAD + b"Content-Type: multipart/" + report_type + b"; boundary=p\n\n" + parts
    ) + b"--p--\n"


def ten_thousand_to() -> bytes:
    """A 10,000-address To: on the bounce and on its returned original, 10,000 refusals."""
    to = b", ".join(b"user%d@example.com" % i for i in range(10_000))
    refusals = b"".join(
        b"<user%d@example.com>: host mx.example.com said: 550 5.1.1 unknown\n" % i
        for i in range(10_000)
    )
    return (
        b"From: MAILER-DAEMON@mx.example.net\nTo: " + to + b"\nSubject: Undelivered Mail\n\n"
        b"This is the mail system at host mx.example.net.\n\n" + refusals + b"\n"
        b"--- Below this line is a copy of the message.\n\nFrom: news@example.com\nTo: "
        + to
        + b"\nSubject: hello\n\nhi\n"
    )


def ten_thousand_to_complaint() -> bytes:
    to = b", ".join(b"user%d@example.com" % i for i in range(10_000))
    return ARF_HEAD + ARF_TAIL.replace(b"To: alice@example.org", b"To: " + to)


def nested_multipart(levels: int = 1000) -> bytes:
    """The email package's parser recursed per level: RecursionError in arf.parse_bytes."""
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n" % (i, i) for i in range(levels)
    )
    closing = b"".join(b"\n--n%d--\n" % i for i in reversed(range(levels)))
    return BOUNCE_HEAD + opening + b"Content-Type: text/plain\n\nhello\n" + closing


def nested_rfc822(levels: int = 1000) -> bytes:
    return BOUNCE_HEAD + b"Content-Type: message/rfc822\n\n" * levels + b"Subject: x\n\nhi\n"


def folded_header(size: int = 40 * 1024) -> bytes:
    """A 40 KB header folded into 13,000 lines, on the bounce and in its status fields."""
    fold = b"\n a" * (size // 3)
    return (
        DSN_HEAD.replace(
            b"Subject: Undelivered", b"Subject: x" + fold + b"\nX-Subject: Undelivered"
        )
        + b"Final-Recipient: rfc822; alice@example.org\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 unknown" + fold + b"\n\n--b--\n"
    )


def nul_and_8bit(size: int = MB) -> bytes:
    junk = bytes(range(256)) * (size // 512)
    return (
        BOUNCE_HEAD.replace(b"Subject: ", b"Subject: \x00\xff\xfe ")
        + b"X-Failed-Recipients: alice@example.org\x00\xff\n\n"
        + junk
        + b"\n<alice@example.org>: 550 5.1.1 unknown\x00\n"
        + junk
    )


def lf_only(size: int = 30 * 1024) -> bytes:
    """Blank lines after a bounce's headers: with re.M, a \\s* after ^ ran across all of them
    from each of them (sendmail and Domino markers: 15 s for these 30 KB)."""
    return BOUNCE_HEAD + b"\n" * size


def cr_only(size: int = 60 * 1024) -> bytes:
    body = b"This is the mail system at host mx.example.net.\r\r" + b"\r" * (size // 2)
    body += b"<alice@example.org>: host mx.example.org said: 550 5.1.1 unknown\r" * 2000
    return BOUNCE_HEAD.replace(b"\n", b"\r") + b"\r" + body


def atext_run(size: int = 20 * 1024) -> bytes:
    """One long run of address characters without "@": every start inside the run used to be
    tried again (X-Failed-Recipients of 20 KB of "!": 10 s)."""
    return BOUNCE_HEAD + b"X-Failed-Recipients: " + b"!" * size + b"\n\nmail failed\n"


def content_type_parameters(size: int = 400 * 1024) -> bytes:
    """The email package parses parameters in time quadratic in their number (12 s)."""
    return BOUNCE_HEAD + b"Content-Type: multipart/report; boundary=b" + b";" * size + b"\n\nx\n"


def encoded_words(count: int = 70_000) -> bytes:
    """RFC 2047 decoding is quadratic in the number of encoded words (15 s)."""
    return BOUNCE_HEAD + b"X-Failed-Recipients: " + b"=?utf-8?q?a?= " * count + b"\n\nmail failed\n"


def address_recursion() -> bytes:
    """email.utils.getaddresses recurses per group ":" and per nested comment "(":
    RecursionError escaped both parsers."""
    return ARF_HEAD + b"Original-Rcpt-To: " + b":" * 20_000 + b"(" * 20_000 + b"\n" + ARF_TAIL


def many_status_records(count: int = 120_000) -> bytes:
    """Every record was parsed and classified (3.1 s); now dsn.MAX_RECIPIENTS of them."""
    records = b"".join(
        b"Final-Recipient: rfc822; u%d@example.org\nAction: failed\nStatus: 5.1.1\n\n" % i
        for i in range(count)
    )
    return DSN_HEAD + records + b"--b--\n"


def folded_status_field(lines: int = 500_000) -> bytes:
    """One folded Diagnostic-Code of 500,000 lines: appending each line to the value so far
    copied it again per line (7 s)."""
    return (
        DSN_HEAD + b"Final-Recipient: rfc822; alice@example.org\nAction: failed\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 unknown\n" + b" x\n" * lines + b"\n--b--\n"
    )


def repeated_recipient(parts: int = 60) -> bytes:
    """One address named over and over, with a different explanation each time, in 60 text
    parts: its diagnostic grew, and was searched, once per mention (2.9 s; the texts of all
    parts are now read up to dsn.mail.TEXT_TOTAL_LIMIT)."""
    text = b"".join(b"<alice@example.org>: error %d\n" % i for i in range(2_000))
    part = b"--p\nContent-Type: text/plain\n\n" + text
    return (
        BOUNCE_HEAD + b"Content-Type: multipart/mixed; boundary=p\n\n" + part * parts + b"--p--\n"
    )


def many_header_fields(count: int = 800_000) -> bytes:
    """Every lookup in a compat32 Message scans all fields (1.7 s, 2.9 s for arf)."""
    return BOUNCE_HEAD + b"X-Junk: x\n" * count + b"\n<alice@example.org>: 550 5.1.1 unknown\n"


def many_complaint_recipients(count: int = 100_000) -> bytes:
    """Every field went through email.utils.getaddresses (4.1 s)."""
    fields = b"".join(b"Original-Rcpt-To: u%d@example.org\n" % i for i in range(count))
    return ARF_HEAD + fields + ARF_TAIL


def huge_line(size: int = 9 * MB) -> bytes:
    return BOUNCE_HEAD + b"\n" + b"a@b.example " * (size // 12) + b"\n"


BOMBS: dict[str, Callable[[], bytes]] = {
    "100000-tiny-parts": lambda: tiny_parts(b"mixed"),
    "100000-tiny-parts-feedback-report": lambda: tiny_parts(b"report; report-type=feedback-report"),
    "10000-address-to": ten_thousand_to,
    "10000-address-to-complaint": ten_thousand_to_complaint,
    "1000-nested-multiparts": nested_multipart,
    "1000-nested-rfc822": nested_rfc822,
    "40kb-folded-header": folded_header,
    "nul-and-8bit": nul_and_8bit,
    "lf-only-blank-lines": lf_only,
    "cr-only": cr_only,
    "atext-run": atext_run,
    "content-type-parameters": content_type_parameters,
    "encoded-words": encoded_words,
    "address-recursion": address_recursion,
    "120000-status-records": many_status_records,
    "folded-status-field": folded_status_field,
    "repeated-recipient": repeated_recipient,
    "800000-header-fields": many_header_fields,
    "100000-complaint-recipients": many_complaint_recipients,
    "9mb-line": huge_line,
}


def _cpu(
    parse: Callable[[bytes], object], raw: bytes, error: type[Exception]
) -> tuple[object, float]:
    started = time.process_time()
    result: object = None
    with contextlib.suppress(error):
        result = parse(raw)
    return result, time.process_time() - started


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_parses_in_bounded_cpu_time(name: str) -> None:
    raw = BOMBS[name]()
    assert len(raw) < 10 * MB  # under the sink's default size limit: it would be accepted
    analysis, took = _cpu(analyse_message, raw, ParseError)
    assert took < CPU_LIMIT, f"analyse_message: {took:.2f} s CPU"
    assert analysis is None or isinstance(analysis, MessageAnalysis)
    if isinstance(analysis, MessageAnalysis):
        assert len(analysis.results) <= MAX_RECIPIENTS
    report, took = _cpu(parse_bytes, raw, ArfParseError)
    assert took < CPU_LIMIT, f"arf.parse_bytes: {took:.2f} s CPU"
    assert report is None or isinstance(report, ComplaintReport)


def test_bombs_still_yield_what_they_carry() -> None:
    """Bounded is not blind: the recipients a bomb names are read up to the cap."""
    many = analyse_message(ten_thousand_to())
    assert many.kind == "bounce"
    # the report text is read up to dsn.mail.TEXT_LIMIT (64 KB, ~990 of these lines), whole lines
    assert 900 < len(many.results) <= MAX_RECIPIENTS
    assert many.results[0].recipient == "user0@example.com"
    assert {r.outcome for r in many.results} == {"hard"}
    records = analyse_message(many_status_records())
    assert [r.recipient for r in records.results[:2]] == ["u0@example.org", "u1@example.org"]
    assert len(records.results) == MAX_RECIPIENTS
    folded = analyse_message(folded_status_field())
    assert [(r.recipient, r.outcome) for r in folded.results] == [("alice@example.org", "hard")]
    complaint = parse_bytes(address_recursion())
    assert complaint is not None  # the unreadable field names nobody; the To: header still does
    assert complaint.addresses == ["alice@example.org"]


@pytest.mark.parametrize(
    "name", ["1000-nested-multiparts", "100000-tiny-parts", "nul-and-8bit", "9mb-line"]
)
def test_bomb_memory_is_bounded(name: str) -> None:
    """Peak memory a small multiple of the message: parts are offsets into one decoded copy
    (nested parts were copied at every level: 440 MB for a 10 MB message)."""
    raw = BOMBS[name]()
    tracemalloc.start()
    try:
        with contextlib.suppress(ParseError):
            analyse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * len(raw) + 16 * MB, f"{peak / MB:.0f} MB for {len(raw) / MB:.1f} MB"


def test_deep_8bit_nesting_memory_is_bounded() -> None:
    levels = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n" % (i, i) for i in range(12)
    )
    raw = BOUNCE_HEAD + levels + b"Content-Type: text/plain\n\n" + bytes(range(128, 256)) * 40_000
    tracemalloc.start()
    try:
        analyse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * len(raw) + 16 * MB, f"{peak / MB:.0f} MB for {len(raw) / MB:.1f} MB"
