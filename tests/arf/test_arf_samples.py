"""Every sample in samples/arf, parsed, against what it is there to show."""

from __future__ import annotations

from pathlib import Path

import pytest

from arf import ComplaintReport, RecoveredRecipient, parse_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "arf"

R = RecoveredRecipient

# sample -> (feedback_type, outcome, provider, recipients, stream)
CASES: dict[str, tuple[str, str, str | None, list[RecoveredRecipient], str | None]] = {
    "rfc5965-01.eml": (
        "abuse",
        "complaint",
        None,
        [R("alice@example.com", "original-rcpt-to", False)],
        "marketing",
    ),
    "rfc5965-02.eml": (
        "abuse",
        "complaint",
        None,
        [R("alice@example.com", "original-rcpt-to", False)],
        "marketing",
    ),
    "yahoo-01.eml": (
        "abuse",
        "complaint",
        "yahoo",
        [R("bob@example.com", "recipient-header", False)],
        "newsletter",
    ),
    "microsoft-01.eml": (
        "abuse",
        "complaint",
        "microsoft",
        [R(None, "provider-header", True), R(None, "to-header", True)],
        "digest",
    ),
    "aol-01.eml": (
        "abuse",
        "complaint",
        "aol",
        [R("carol@example.com", "original-rcpt-to", False)],
        None,
    ),
    "optout-01.eml": (
        "opt-out",
        "unsubscribe",
        None,
        [R("dave@example.com", "original-rcpt-to", False)],
        "newsletter",
    ),
    "dmarc-01.eml": (
        "auth-failure",
        "none",
        None,
        [R("erin@example.com", "original-rcpt-to", False)],
        None,
    ),
    "notspam-01.eml": (
        "not-spam",
        "none",
        None,
        [R("frank@example.com", "original-rcpt-to", False)],
        None,
    ),
    "redacted-01.eml": (
        "abuse",
        "complaint",
        None,
        [
            R(None, "original-rcpt-to", True),
            R(None, "ref-token", False),
            R(None, "to-header", True),
        ],
        "promotions",
    ),
    # Original-Rcpt-To of 1,500 ":" and Removal-Recipient of 1,500 "(": the standard
    # library's address parser recursed until RecursionError; now they name nobody.
    "recursion-01.eml": (
        "abuse",
        "complaint",
        None,
        [
            R(None, "original-rcpt-to", True),
            R(None, "removal-recipient", True),
            R("alice@example.com", "to-header", False),
        ],
        "marketing",
    ),
    "toonly-01.eml": (
        "abuse",
        "complaint",
        None,
        [R("grace@example.com", "to-header", False)],
        None,
    ),
    "comcast-01.eml": (
        "abuse",
        "complaint",
        "comcast",
        [R("heidi@example.com", "recipient-header", False)],
        "promotions",
    ),
    "esp-01.eml": (
        "abuse",
        "complaint",
        "esp-relayed",
        [R("ivan@example.com", "original-rcpt-to", False)],
        None,
    ),
    "mailru-01.eml": (
        "abuse",
        "complaint",
        "mailru",
        [R("judy@example.com", "original-rcpt-to", False)],
        "digest",
    ),
    "fastmail-01.eml": (
        "abuse",
        "complaint",
        "fastmail",
        [R("ken@example.com", "original-rcpt-to", False)],
        "notes",
    ),
}


def load(name: str) -> ComplaintReport:
    report = parse_bytes((SAMPLES / name).read_bytes())
    assert report is not None
    return report


def test_every_sample_has_a_case() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.eml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample(name: str) -> None:
    feedback_type, outcome, provider, recipients, stream = CASES[name]
    report = load(name)
    assert report.feedback_type == feedback_type
    assert report.outcome == outcome
    assert report.provider == provider
    assert report.recipients == recipients
    assert report.stream == stream
    assert report.original_message_id is not None
    assert report.original_subject


def test_crlf_sample_is_really_crlf_and_parses_like_lf() -> None:
    raw = (SAMPLES / "rfc5965-02.eml").read_bytes()
    assert b"\r\n" in raw
    assert raw.replace(b"\r\n", b"\n") == (SAMPLES / "rfc5965-01.eml").read_bytes()
    assert load("rfc5965-02.eml") == load("rfc5965-01.eml")


def test_rfc5965_fields() -> None:
    report = load("rfc5965-01.eml")
    assert report.user_agent == "SomeGenerator/1.0"
    assert report.version == "1"
    assert report.original_mail_from == "b+alice=example.com@bounces.example.net"
    assert report.original_rcpt_to == ["Alice@Example.com"]
    assert report.arrival_date == "Thu, 8 Mar 2024 14:00:00 EDT"
    assert report.source_ip == "192.0.2.1"
    assert report.reported_domain == ["example.net"]
    assert report.reported_uri == ["https://example.net/offer"]
    assert report.authentication_results == (
        "mail.example.com; spf=pass smtp.mailfrom=bounces.example.net"
    )
    assert report.incidents == 2
    assert report.reason == "abuse"
    assert report.ref_token is None


def test_auth_failure_fields() -> None:
    report = load("dmarc-01.eml")
    assert report.reason == "auth_failure"
    assert report.auth_failure == "dmarc"
    assert report.delivery_result == "reject"
    assert report.original_subject == "Invoice overdue"


def test_redacted_sample_exposes_the_ref_token_unverified() -> None:
    report = load("redacted-01.eml")
    assert report.ref_token == "v1.ZXhhbXBsZS1yZWY.c2lnbmF0dXJl"
    assert report.addresses == []


def test_yahoo_received_date_is_the_arrival_date() -> None:
    assert load("yahoo-01.eml").arrival_date == "Tue, 2 Apr 2024 09:00:01 +0000"


def test_encoded_subject_is_decoded() -> None:
    assert load("aol-01.eml").original_subject == "Your basket is waiting \u2714"
