"""Postfix's joiner and KumoMTA's log file: streaming, joining by queue id, bad lines."""

from __future__ import annotations

import pytest

from events import Event, EventError, EventKind, PostfixJoiner, parse_kumomta_lines, parse_postfix
from events import postfix as postfix_module

QMGR = "Jan  5 10:00:00 mx postfix/qmgr[1]: ABCDE12345: from=<News@Example.com>, size=1, nrcpt=2 (queue active)"


def _status(to: str, status: str, text: str, dsn: str, stamp: str = "Jan  5 10:00:01") -> str:
    return (
        f"{stamp} mx postfix/submission/smtp[2]: ABCDE12345: to=<{to}>, relay=mx.example.net"
        f"[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn={dsn}, status={status} ({text})"
    )


def test_sender_joined_from_qmgr_and_retried_recipient_not_expired() -> None:
    lines = [
        QMGR,
        _status(
            "a@example.net",
            "deferred",
            "host mx said: 451 4.3.0 try later (in reply to RCPT TO command)",
            "4.3.0",
        ),
        _status("a@example.net", "sent", "250 2.0.0 Ok: queued", "2.0.0", "Jan  5 10:10:00"),
        "Jan  6 10:00:00 mx postfix/qmgr[1]: ABCDE12345: from=<News@Example.com>, status=expired, returned to sender",
    ]
    events = list(parse_postfix(lines, "maillog", year=2026))
    assert [(e.kind, e.sender) for e in events if isinstance(e, Event)] == [
        (EventKind.DEFERRED, "news@example.com"),
        (EventKind.DELIVERED, "news@example.com"),
    ]
    assert events[0].reply_code == 451 and events[0].diagnostic == "451 4.3.0 try later"


def test_rfc3339_stamps_and_null_sender() -> None:
    joiner = PostfixJoiner("maillog", year=1999)
    joiner.feed(
        "2026-01-05T10:00:00Z mx postfix/qmgr[1]: ABCDE12345: from=<>, size=1, nrcpt=1 (queue active)",
        1,
    )
    (event,) = joiner.feed(
        _status(
            "a@example.net",
            "bounced",
            "host mx said: 550 5.1.1 No such user",
            "5.1.1",
            "2026-01-05T10:00:01.5+02:00",
        ),
        2,
    )
    assert isinstance(event, Event)
    assert event.sender is None and event.time is not None and event.time.hour == 8
    assert event.outcome == "hard" and event.location == "maillog:2"


def test_status_line_without_qmgr_line_still_counts() -> None:
    (event,) = list(
        parse_postfix(
            [_status("a@example.net", "bounced", "550 5.1.1 unknown", "5.1.1")], year=2026
        )
    )
    assert isinstance(event, Event) and event.sender is None and event.outcome == "hard"


def test_removed_forgets_and_the_queue_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postfix_module, "MAX_QUEUE_IDS", 3)
    joiner = PostfixJoiner(year=2026)
    for n in range(10):
        joiner.feed(QMGR.replace("ABCDE12345", f"ABCDE1234{n}"), n)
    assert len(joiner._queue) <= 3
    joiner.feed("Jan  5 10:00:00 mx postfix/qmgr[1]: ABCDE12349: removed", 11)
    assert "ABCDE12349" not in joiner._queue


def test_kumomta_log_lines_keep_going_after_bad_ones() -> None:
    lines = [
        '{"type":"Bounce","recipient":"a@example.org","response":{"code":550,"content":"5.1.1 user unknown"}}',
        "{not json",
        "",
        '{"type":"Delivery","recipient":"b@example.org"}',
        '{"type":"Nonsense","recipient":"c@example.org"}',
    ]
    items = list(parse_kumomta_lines(lines, "kumo.log"))
    assert [type(i).__name__ for i in items] == ["Event", "EventError", "Event", "EventError"]
    assert [i.location for i in items if isinstance(i, EventError)] == ["kumo.log:2", "kumo.log:5"]


def test_kumomta_source_address_port_is_dropped() -> None:
    lines = [
        '{"type":"Delivery","recipient":"a@example.org","source_address":{"address":"198.51.100.7:0"}}',
        '{"type":"Delivery","recipient":"b@example.org","source_address":{"address":"[2001:db8::7]:0"}}',
        '{"type":"Delivery","recipient":"c@example.org","source_address":{"address":"2001:db8::8"}}',
    ]
    ips = [e.ip for e in parse_kumomta_lines(lines) if isinstance(e, Event)]
    assert ips == ["198.51.100.7", "2001:db8::7", "2001:db8::8"]
