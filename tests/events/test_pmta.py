"""PowerMTA accounting CSV: header-driven columns, record types, times, bounceCat beside ours."""

from __future__ import annotations

from datetime import UTC, datetime

from events.model import Event, EventError, EventKind, Source
from events.pmta import parse_pmta

HEADER = "type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSourceIp,vmta"


def _events(text: str) -> list[Event | EventError]:
    return list(parse_pmta(text.splitlines(), "acct.csv"))


def test_columns_are_found_by_header_name_in_any_order() -> None:
    a = _events(
        "type,rcpt,timeLogged\n"  # "type" is always first (User's Guide); the rest may move
        "d,alice@example.org,1767607200\n"
    )
    b = _events(
        "type,orig,timeLogged,vmta,rcpt\n"
        "d,news@example.com,2026-01-05T10:00:00Z,v1,alice@example.org\n"
    )
    assert isinstance(a[0], Event) and isinstance(b[0], Event)
    assert a[0].recipient == b[0].recipient == "alice@example.org"
    assert a[0].time == b[0].time == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    assert b[0].vmta == "v1" and b[0].kind is EventKind.DELIVERED


def test_bounce_is_classified_and_bounce_category_kept() -> None:
    (event,) = _events(
        HEADER + "\n"
        "b,1767607200,news@example.com,bob@example.org,failed,5.0.0 (undefined status),"
        '"smtp;550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",'
        "mx.example.org (192.0.2.10),bad-mailbox,198.51.100.7,vmta1\n"
    )
    assert isinstance(event, Event)
    assert (event.kind, event.outcome, event.reason) == (EventKind.BOUNCE, "hard", "user_unknown")
    assert event.vendor_category == "bad-mailbox" and not event.disagrees
    assert event.reply_code == 550 and event.remote_mta == "mx.example.org"
    assert event.ip == "198.51.100.7"


def test_disagreement_is_flagged() -> None:
    (event,) = _events(
        HEADER + "\n"
        "b,1767607200,news@example.com,bob@example.org,failed,5.7.1,"
        '"smtp;550 5.7.1 Message rejected as spam",mx.example.org,bad-mailbox,,\n'
    )
    assert isinstance(event, Event)
    assert event.outcome == "policy" and event.vendor_outcome == "hard" and event.disagrees


def test_transient_records_are_never_hard() -> None:
    events = _events(
        HEADER + "\n"
        "t,1767607200,news@example.com,bob@example.org,delayed,5.1.1,"
        '"smtp;550 5.1.1 User unknown",mx.example.org,bad-mailbox,,\n'
        "tq,1767607200,,,,4.4.1,connection timed out,,bad-connection,198.51.100.7,vmta1\n"
    )
    deferred, queue = events
    assert isinstance(deferred, Event) and isinstance(queue, Event)
    assert deferred.kind is EventKind.DEFERRED and deferred.outcome == "soft"
    assert queue.recipient is None and queue.kind is EventKind.DEFERRED and queue.vmta == "vmta1"


def test_expiry_remote_records_and_feedback() -> None:
    events = _events(
        "type,timeLogged,rcpt,dsnAction,dsnStatus,bounceCat,feedbackType\n"
        "b,1767607200,a@example.org,failed,4.4.7,message-expired,\n"
        "rb,1767607200,b@example.org,failed,5.1.1,bad-mailbox,\n"
        "rs,1767607200,c@example.org,delayed,4.2.2,quota-issues,\n"
        "f,1767607200,d@example.org,,,,abuse\n"
        "r,1767607200,e@example.org,,,,\n"
    )
    kinds = [(e.kind, e.outcome) for e in events if isinstance(e, Event)]
    assert kinds == [
        (EventKind.EXPIRED, "soft"),
        (EventKind.BOUNCE, "hard"),
        (EventKind.DEFERRED, "soft"),
        (EventKind.COMPLAINT, "complaint"),
    ]


def test_bad_records_are_errors_and_the_rest_goes_on() -> None:
    events = _events(
        "d,1767607200,x@example.org\n"  # before any header
        + HEADER
        + "\n"
        + "d,1767607200,news@example.com\n"  # too few fields
        + "z,1767607200,news@example.com,a@example.org,,,,,,,\n"  # unknown type
        + "d,yesterday,news@example.com,a@example.org,,,,,,,\n"  # bad time
        + "d,1767607200,news@example.com,not-an-address,,,,,,,\n"
        + 'd,1767607200,"unterminated\n'
        + "\n"
    )
    errors = [e for e in events if isinstance(e, EventError)]
    assert [e.location for e in errors][:5] == [
        "acct.csv:1",
        "acct.csv:3",
        "acct.csv:4",
        "acct.csv:5",
        "acct.csv:6",
    ]
    assert all(e.reason for e in errors)


def test_same_line_same_dedupe_id() -> None:
    text = HEADER + "\nd,1767607200,news@example.com,a@example.org,,,,,,,\n"
    first, second = _events(text), _events(text)
    assert isinstance(first[0], Event) and isinstance(second[0], Event)
    assert first[0].dedupe_id == second[0].dedupe_id


def test_deliveries_can_be_counted_by_key_instead_of_an_event_each() -> None:
    """The log ingest's fast path: a ``d`` record becomes its count key, carrying what its Event
    would (time, recipient domain, MX host, stream, ip, pool, vmta); other records and bad ``d``
    records come out as before."""
    header = "type,timeLogged,rcpt,dsnMta,dlvSourceIp,vmta,vmtaPool,header_X-Stoplist-Stream"
    lines = [
        header,
        "d,1767607200,Alice@Example.org,mx1.example.org. (192.0.2.1),198.51.100.1,v1,p1,news",
        "d,1767607200,bob@example.org,mx1.example.org (192.0.2.2),198.51.100.1,v1,p1,news",
        "d,1767607201,carol@example.net,,,,,",
        "d,1767607201,not an address,,,,,",  # bad: reported, not counted
        "d,yesterday,dave@example.net,,,,,",  # bad time: reported, not counted
        "delivery,1767607202,erin@example.net,,,,,",  # a long name: the general path
        "b,1767607203,frank@example.net,,,,,",
    ]
    counted: dict[object, int] = {}
    out = list(parse_pmta(lines, "acct.csv", deliveries=counted))
    plain = list(parse_pmta(lines, "acct.csv"))
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    t1 = datetime(2026, 1, 5, 10, 0, 1, tzinfo=UTC)
    assert counted == {
        (Source.PMTA, t0, "example.org", "mx1.example.org", "news", "198.51.100.1", "p1", "v1"): 2,
        (Source.PMTA, t1, "example.net", None, None, None, None, None): 1,
    }
    assert [(type(x).__name__, x.location) for x in out] == [
        ("EventError", "acct.csv:5"),
        ("EventError", "acct.csv:6"),
        ("Event", "acct.csv:7"),
        ("Event", "acct.csv:8"),
    ]
    assert [x.to_json() for x in out] == [x.to_json() for x in plain[3:]]
    # The key is what the Event of the same line carries.
    first = plain[0]
    assert isinstance(first, Event)
    assert (first.time, first.remote_mta, first.stream, first.ip, first.pool, first.vmta) == (
        t0,
        "mx1.example.org",
        "news",
        "198.51.100.1",
        "p1",
        "v1",
    )
