"""The planner alone: analysis + settings + signer in, a plan out, no database and no services.

The same messages as ``test_policy.py`` (which applies them on both backends); here only what the
planner decides is checked.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from app.container import build_signer
from app.feedback import Envelope, Plan, plan_message
from app.settings import Settings
from app.signing import Signer
from dsn import analyse_message
from tests.app.test_policy import FBL, KEYS, MAILBOX_FULL, arf, dsn

BOUNCES = Envelope(mail_from="", rcpt_to=["bounce@bounces.example.net"])


def settings(**overrides: Any) -> Settings:
    return Settings(**overrides)  # never opened: planning reads no database


def signed() -> tuple[Settings, Signer]:
    s = settings(
        signing_keys=SecretStr(KEYS),
        return_path_domain="bounces.example.net",
        unsubscribe_domain="unsubscribe.example.net",
        public_base_url="https://stoplist.example.net",
    )
    signer = build_signer(s)
    assert signer is not None
    return s, signer


def plan(raw: bytes, envelope: Envelope, s: Settings, signer: Signer | None) -> Plan:
    return plan_message(analyse_message(raw), envelope, s, signer)


def test_hard_bounce_without_keys_is_a_global_suppression() -> None:
    p = plan(dsn("ann@example.com"), BOUNCES, settings(), None)
    [step] = p.steps
    assert (step.action, step.address, step.outcome, step.stream) == (
        "suppress",
        "ann@example.com",
        "hard",
        None,
    )
    assert step.detail["stream"] == "newsletter"
    assert not p.verified


def test_soft_bounce_is_counted_not_suppressed() -> None:
    p = plan(dsn("bob@example.com", MAILBOX_FULL), BOUNCES, settings(), None)
    [step] = p.steps
    assert (step.action, step.kind, step.outcome) == ("soft_bounce", "bounce", "soft")


def test_signed_return_path_names_the_recipient() -> None:
    s, signer = signed()
    rp = signer.return_path("heidi@example.org", "billing")
    p = plan(dsn("someone-else@example.org"), Envelope("", [rp]), s, signer)
    [step] = p.steps
    assert (step.address, step.verified, p.verified) == ("heidi@example.org", True, True)
    assert step.detail["reported_recipient"] == "someone-else@example.org"


def test_unsigned_bounce_is_only_recorded_when_signatures_are_required() -> None:
    s, signer = signed()
    s = s.model_copy(update={"require_signed_bounces": True})
    p = plan(dsn("carol@example.com"), BOUNCES, s, signer)
    [step] = p.steps
    assert (step.action, step.kind) == ("record", "unverified_bounce")
    assert "bounce not applied: unsigned" in p.notes


def test_opt_out_without_stream_uses_the_default_stream() -> None:
    p = plan(arf("dave@example.com", feedback_type="opt-out"), FBL, settings(), None)
    [step] = p.steps
    assert (step.action, step.outcome, step.stream) == ("suppress", "unsubscribe", "marketing")
    assert step.detail["stream_defaulted"] is True


def test_mailto_unsubscribe_is_planned_from_the_address_alone() -> None:
    s, signer = signed()
    rcpt = signer.unsubscribe_mailto_address("erin@example.com", "promotions")
    p = plan(b"Subject: unsubscribe\n\nplease\n", Envelope("erin@example.com", [rcpt]), s, signer)
    [step] = p.steps
    assert (step.address, step.outcome, step.stream, step.verified) == (
        "erin@example.com",
        "unsubscribe",
        "promotions",
        True,
    )
