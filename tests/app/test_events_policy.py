"""What a delivery event asks of the suppression list, decided by the feedback planner (no I/O)."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from pydantic import SecretStr

from app.events import event_settings, plan_event
from app.settings import Settings
from events import Event, EventKind, Source


def _event(kind: EventKind, outcome: str, reason: str, **extra: object) -> Event:
    return Event(
        source=Source.PMTA,
        kind=kind,
        recipient="jane@example.com",
        outcome=outcome,
        reason=reason,
        rule_id="rfc3463-5-1-1",
        dedupe_id="d1",
        location="acct.csv:2",
        time=datetime(2026, 1, 5, tzinfo=UTC),
        **extra,  # type: ignore[arg-type]
    )


def _steps(event: Event, settings: Settings | None = None) -> list[tuple[str, str]]:
    plan = plan_event(event, event_settings(settings or Settings()))
    return [] if plan is None else [(s.action, s.kind) for s in plan.steps]


def test_each_kind_goes_through_the_planner() -> None:
    assert _steps(_event(EventKind.BOUNCE, "hard", "user_unknown")) == [("suppress", "bounce")]
    assert _steps(_event(EventKind.BOUNCE, "soft", "mailbox_full")) == [("soft_bounce", "bounce")]
    assert _steps(_event(EventKind.EXPIRED, "soft", "expired")) == [("soft_bounce", "bounce")]
    assert _steps(_event(EventKind.BOUNCE, "policy", "blocked")) == [("record", "policy_block")]
    assert _steps(_event(EventKind.DEFERRED, "hard", "user_unknown")) == [("record", "delay")]
    assert _steps(_event(EventKind.COMPLAINT, "complaint", "complaint")) == [
        ("suppress", "complaint")
    ]
    assert _steps(_event(EventKind.UNSUBSCRIBE, "unsubscribe", "unsubscribe")) == [
        ("suppress", "unsubscribe")
    ]
    assert _steps(_event(EventKind.DELIVERED, "none", "delivered")) == []
    assert _steps(_event(EventKind.DROPPED, "none", "suppressed")) == []


def test_scopes_and_details() -> None:
    plan = plan_event(
        _event(EventKind.UNSUBSCRIBE, "unsubscribe", "unsubscribe", stream="newsletter"),
        Settings(),
    )
    assert plan is not None and plan.steps[0].stream == "newsletter"
    plan = plan_event(
        _event(EventKind.COMPLAINT, "complaint", "complaint", stream="newsletter"), Settings()
    )
    assert plan is not None and plan.steps[0].stream is None  # complaints are global
    hard = _event(EventKind.BOUNCE, "hard", "user_unknown", vendor_category="bad-mailbox")
    plan = plan_event(hard, Settings())
    assert plan is not None
    detail = plan.steps[0].detail
    assert detail["event_source"] == "pmta" and detail["vendor_category"] == "bad-mailbox"
    assert detail["event_location"] == "acct.csv:2" and detail["delivery_event"] == "d1"


def test_signed_return_path_requirements_do_not_apply_to_events() -> None:
    strict = Settings(
        signing_keys=SecretStr("k1:" + base64.b64encode(secrets.token_bytes(32)).decode()),
        require_signed_bounces=True,
        require_signed_reports=True,
    )
    assert _steps(_event(EventKind.BOUNCE, "hard", "user_unknown"), strict) == [
        ("suppress", "bounce")
    ]
    assert _steps(_event(EventKind.COMPLAINT, "complaint", "complaint"), strict) == [
        ("suppress", "complaint")
    ]
