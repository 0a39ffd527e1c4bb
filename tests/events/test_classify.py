"""Disposition limits and the vendor's category beside our classification."""

from __future__ import annotations

from typing import Any

import pytest

from classifiers import HARD_REASONS, Outcome
from events import EventKind, Source, make_event
from events.classify import VENDOR_CATEGORIES, vendor_meaning

UNKNOWN_USER = "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown"


def _event(kind: EventKind, **kw: Any) -> tuple[str, str, str, bool]:
    event = make_event(
        Source.PMTA,
        kind,
        recipient="a@example.org",
        dedupe="d",
        location="x:1",
        **kw,
    )
    return event.outcome, event.reason, event.rule_id, event.disagrees


@pytest.mark.parametrize("kind", [EventKind.DEFERRED, EventKind.EXPIRED])
def test_retried_failures_are_never_hard(kind: EventKind) -> None:
    outcome, reason, _rule, _ = _event(
        kind, reply_code=550, status="5.1.1", diagnostic=UNKNOWN_USER
    )
    assert (outcome, reason) == ("soft", "user_unknown")


def test_a_transient_bounce_is_never_hard() -> None:
    assert _event(EventKind.BOUNCE, diagnostic=UNKNOWN_USER, transient=True)[0] == "soft"
    assert _event(EventKind.BOUNCE, diagnostic=UNKNOWN_USER)[0] == "hard"


def test_vendor_category_decides_only_without_a_reply() -> None:
    assert _event(EventKind.BOUNCE, vendor_category="bad-mailbox")[:3] == (
        "hard",
        "user_unknown",
        "vendor-pmta-bad-mailbox",
    )
    outcome, _reason, rule, disagrees = _event(
        EventKind.BOUNCE, diagnostic="554 5.7.1 rejected as spam", vendor_category="bad-mailbox"
    )
    assert outcome == "policy" and not rule.startswith("vendor-") and disagrees


def test_without_anything_a_bounce_is_unclassified_and_an_expiry_expired() -> None:
    assert _event(EventKind.BOUNCE)[:3] == ("soft", "unclassified", "unclassified")
    assert _event(EventKind.EXPIRED)[:3] == ("soft", "expired", "event-expired")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (EventKind.DELIVERED, "none"),
        (EventKind.COMPLAINT, "complaint"),
        (EventKind.UNSUBSCRIBE, "unsubscribe"),
        (EventKind.DROPPED, "none"),
    ],
)
def test_kinds_that_decide_alone(kind: EventKind, expected: str) -> None:
    assert _event(kind, diagnostic=UNKNOWN_USER)[0] == expected


def test_vendor_categories_are_normalised_and_hard_only_with_address_reasons() -> None:
    assert vendor_meaning(Source.KUMOMTA, "InvalidRecipient") == vendor_meaning(
        Source.PMTA, "invalid-recipient"
    )
    assert vendor_meaning(Source.PMTA, "other") is None
    for table in VENDOR_CATEGORIES.values():
        for outcome, reason in table.values():
            assert outcome is not Outcome.HARD or reason in HARD_REASONS
