"""Feedback types -> (outcome, reason)."""

from __future__ import annotations

import pytest

from arf import normalise_feedback_type, outcome_for


@pytest.mark.parametrize(
    ("feedback_type", "expected"),
    [
        ("abuse", ("complaint", "abuse")),
        ("fraud", ("complaint", "fraud")),
        ("virus", ("complaint", "virus")),
        ("other", ("complaint", "other")),
        ("opt-out", ("unsubscribe", "opt_out")),
        ("unsubscribe", ("unsubscribe", "opt_out")),
        ("optout", ("unsubscribe", "opt_out")),
        ("not-spam", ("none", "not_spam")),
        ("auth-failure", ("none", "auth_failure")),
        ("dmarc", ("none", "auth_failure")),
        ("Auth-Failure", ("none", "auth_failure")),
        ("", ("complaint", "abuse")),
        ("something-new", ("complaint", "other")),
    ],
)
def test_outcome_for(feedback_type: str, expected: tuple[str, str]) -> None:
    assert outcome_for(feedback_type) == expected


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (None, "abuse"),
        ("  ABUSE ", "abuse"),
        ("abuse; comment", "abuse"),
        ("Opt Out", "opt-out"),
        ("NotSpam", "not-spam"),
        ("complaint", "abuse"),
        ("Something-New", "something-new"),
    ],
)
def test_normalise_feedback_type(raw: str | None, normalised: str) -> None:
    assert normalise_feedback_type(raw) == normalised


def test_every_reason_is_snake_case() -> None:
    for ft in ("abuse", "fraud", "virus", "other", "opt-out", "not-spam", "auth-failure", "x"):
        outcome, reason = outcome_for(ft)
        assert outcome in {"complaint", "unsubscribe", "none"}
        assert reason.isidentifier()
        assert reason == reason.lower()
