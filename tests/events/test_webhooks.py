"""Webhook parsers: the mapping rules the golden files show, stated one by one."""

from __future__ import annotations

import json

from events import (
    Event,
    EventKind,
    parse_kumomta_request,
    parse_mailgun,
    parse_postmark,
    parse_sendgrid,
    parse_ses,
)


def _ses(record: dict[str, object], envelope: bool = True) -> list[Event]:
    body = (
        {"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": json.dumps(record)}
        if envelope
        else record
    )
    batch = parse_ses(json.dumps(body), "req")
    assert batch.errors == []
    return batch.events


def _bounce(bounce_type: str, subtype: str, diagnostic: str) -> dict[str, object]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "feedbackId": "f1",
            "bouncedRecipients": [
                {"emailAddress": "jane@example.com", "diagnosticCode": diagnostic}
            ],
        },
        "mail": {"messageId": "m1", "source": "news@example.net"},
    }


def test_ses_transient_is_never_hard() -> None:
    (event,) = _ses(_bounce("Transient", "General", "smtp; 550 5.1.1 User unknown"))
    assert event.outcome == "soft" and event.reason == "user_unknown"


def test_ses_bare_record_and_event_publishing_form() -> None:
    record = _bounce("Permanent", "General", "smtp; 550 5.1.1 User unknown")
    (bare,) = _ses(record, envelope=False)
    published = {**record, "eventType": "Bounce"}
    del published["notificationType"]
    (event,) = _ses(published)
    assert bare.outcome == event.outcome == "hard"
    assert bare.dedupe_id == event.dedupe_id  # the same feedbackId and recipient


def test_ses_subscription_confirmation_offers_the_url() -> None:
    batch = parse_ses(
        json.dumps(
            {
                "Type": "SubscriptionConfirmation",
                "TopicArn": "arn:aws:sns:eu-west-1:1:t",
                "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
            }
        )
    )
    assert batch.events == [] and batch.errors == []
    assert batch.subscribe_url is not None and batch.topic_arn == "arn:aws:sns:eu-west-1:1:t"


def test_ses_not_spam_complaint_suppresses_no_one() -> None:
    (event,) = _ses(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complaintFeedbackType": "not-spam",
                "complainedRecipients": [{"emailAddress": "jane@example.com"}],
            },
        }
    )
    assert event.kind is EventKind.COMPLAINT and event.outcome == "none"


def test_sendgrid_dedupes_by_event_id_and_tolerates_missing_status() -> None:
    item = {"email": "a@example.org", "event": "bounce", "sg_event_id": "x1", "type": "bounce"}
    batch = parse_sendgrid(json.dumps([item, item, {**item, "sg_event_id": "x2"}]))
    assert [e.dedupe_id for e in batch.events] == sorted({e.dedupe_id for e in batch.events})
    assert len(batch.events) == 2
    assert batch.events[0].status is None and batch.events[0].outcome == "hard"


def test_sendgrid_blocked_is_not_hard_whatever_the_text() -> None:
    batch = parse_sendgrid(
        json.dumps(
            [
                {
                    "email": "a@example.org",
                    "event": "bounce",
                    "type": "blocked",
                    "sg_event_id": "x",
                    "reason": "550 5.7.1 blocked by policy",
                }
            ]
        )
    )
    assert batch.events[0].outcome == "policy"


def test_postmark_typed_bounces() -> None:
    def one(bounce_type: str, details: str = "") -> Event:
        body = {"RecordType": "Bounce", "Type": bounce_type, "Email": "j@example.com", "ID": 1}
        (event,) = parse_postmark(json.dumps({**body, "Details": details})).events
        return event

    assert one("ManuallyDeactivated").kind is EventKind.DROPPED
    assert one("Unsubscribe").kind is EventKind.UNSUBSCRIBE
    assert one("SpamComplaint").kind is EventKind.COMPLAINT
    assert one("DnsError", "550 5.1.2 Host unknown").outcome == "soft"
    assert one("HardBounce").outcome == "hard"
    assert parse_postmark(json.dumps({"RecordType": "Bounce", "Type": "Subscribe"})).events == []


def test_postmark_reactivation_is_skipped() -> None:
    body = {
        "RecordType": "SubscriptionChange",
        "Recipient": "j@example.com",
        "SuppressSending": False,
    }
    batch = parse_postmark(json.dumps(body))
    assert batch.events == [] and batch.errors == []


def test_mailgun_severity_decides_kind() -> None:
    def one(severity: str, reason: str) -> Event:
        data = {
            "event": "failed",
            "id": "i",
            "severity": severity,
            "reason": reason,
            "recipient": "a@example.org",
            "delivery-status": {"code": 550, "message": "550 5.1.1 No such user"},
        }
        (event,) = parse_mailgun(json.dumps({"event-data": data})).events
        return event

    assert (one("temporary", "generic").kind, one("temporary", "generic").outcome) == (
        EventKind.DEFERRED,
        "soft",
    )
    assert one("permanent", "bounce").outcome == "hard"
    assert one("permanent", "suppress-unsubscribe").kind is EventKind.DROPPED
    assert one("permanent", "old").kind is EventKind.EXPIRED


def test_kumomta_single_object_and_transient_failure_never_hard() -> None:
    record = {
        "type": "TransientFailure",
        "id": "x",
        "recipient": ["a@example.org", "b@example.org"],
        "response": {
            "code": 550,
            "enhanced_code": {"class": 5, "subject": 1, "detail": 1},
            "content": "User unknown",
        },
        "bounce_classification": "InvalidRecipient",
    }
    batch = parse_kumomta_request(json.dumps(record), "req")
    assert [(e.recipient, e.outcome, e.disagrees) for e in batch.events] == [
        ("a@example.org", "soft", True),
        ("b@example.org", "soft", True),
    ]
    assert [e.location for e in batch.events] == ["req#0", "req#1"]
