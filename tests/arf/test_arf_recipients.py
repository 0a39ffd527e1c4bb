"""Redaction detection and recipient recovery order."""

from __future__ import annotations

import re

import pytest

from arf import RecoveredRecipient, is_redacted
from arf.recipients import extract_addresses, recover_recipients, verp_recipient

R = RecoveredRecipient


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "redacted@example.com",
        "REDACTED@example.com",
        "redacted-recipient@example.com",
        "xxxxx@example.com",
        "XXXXXXXX@example.com",
        "****@example.com",
        "***",
        "#####@example.net",
        "user@xxxxx",
        "user@***",
        "undisclosed-recipients:;",
        "undisclosed-recipients@example.com",
        "Undisclosed Recipients",
        "<Undisclosed Recipients>",
        "undisclosed",
        "hidden@example.com",
        "anyone@example.invalid",
        "undisclosed-recipient-in-headers@libsisimai.org.invalid",
        "not an address",
        "user@",
        "@example.com",
    ],
)
def test_redacted(value: str | None) -> None:
    assert is_redacted(value)


@pytest.mark.parametrize(
    "value",
    [
        "alice@example.com",
        "<alice@example.com>",
        "x@example.com",
        "alex@example.com",
        "first.last+tag@sub.example.net",
        "redactor@example.com",
    ],
)
def test_not_redacted(value: str) -> None:
    assert not is_redacted(value)


def test_extract_addresses_lowercases_and_marks_redaction() -> None:
    got = extract_addresses(
        ["Alice <Alice@Example.COM>, bob@example.com", "rfc822; Carol@example.com", "xxxx@x.com"]
    )
    assert got == ["alice@example.com", "bob@example.com", "carol@example.com", None]
    assert extract_addresses(["undisclosed-recipients:;"]) == [None]
    assert extract_addresses([""]) == [None]


def recover(**overrides: object) -> list[RecoveredRecipient]:
    sources: dict[str, object] = {
        "original_rcpt_to": [],
        "removal_recipient": [],
        "provider_header": [],
        "recipient_header": [],
        "ref_token": None,
        "verp": None,
        "to_header": [],
    }
    sources.update(overrides)
    return recover_recipients(**sources)  # type: ignore[arg-type]


def test_first_source_with_an_address_wins() -> None:
    assert recover(
        original_rcpt_to=["a@example.com"],
        recipient_header=["b@example.com"],
        ref_token="tok",
        verp="c@example.com",
        to_header=["d@example.com"],
    ) == [R("a@example.com", "original-rcpt-to", False)]
    assert recover(
        recipient_header=["b@example.com"], verp="c@example.com", to_header=["d@example.com"]
    ) == [R("b@example.com", "recipient-header", False)]
    assert recover(verp="c@example.com", to_header=["d@example.com"]) == [
        R("c@example.com", "return-path-verp", False)
    ]
    assert recover(to_header=["d@example.com"]) == [R("d@example.com", "to-header", False)]
    assert recover() == []


def test_redacted_values_are_kept_in_order_without_address() -> None:
    assert recover(
        original_rcpt_to=["redacted@example.com"],
        recipient_header=["xxxx@example.com"],
        ref_token="tok",
        to_header=["d@example.com"],
    ) == [
        R(None, "original-rcpt-to", True),
        R(None, "recipient-header", True),
        R(None, "ref-token", False),
        R("d@example.com", "to-header", False),
    ]


def test_ref_token_marks_its_place_before_verp() -> None:
    assert recover(ref_token="tok", verp="c@example.com") == [
        R(None, "ref-token", False),
        R("c@example.com", "return-path-verp", False),
    ]


def test_repeated_addresses_are_deduplicated() -> None:
    assert recover(original_rcpt_to=["a@example.com", "<A@example.com>", "b@example.com"]) == [
        R("a@example.com", "original-rcpt-to", False),
        R("b@example.com", "original-rcpt-to", False),
    ]


def test_provider_header_ranks_after_original_rcpt_to() -> None:
    assert recover(provider_header=["p@example.com"], recipient_header=["b@example.com"]) == [
        R("p@example.com", "provider-header", False)
    ]
    assert recover(removal_recipient=["r@example.com"], provider_header=["p@example.com"]) == [
        R("r@example.com", "removal-recipient", False)
    ]


LOCAL_DOMAIN = re.compile(r"b\+(?P<local>[^=]+)=(?P<domain>[^@]+)@bounces\.example\.net")
WHOLE = re.compile(r"bounce-(?P<recipient>.+)@bounces\.example\.net")


def test_verp_recipient() -> None:
    assert verp_recipient("<b+Alice=example.com@bounces.example.net>", LOCAL_DOMAIN) == (
        "alice@example.com"
    )
    assert verp_recipient("bounce-bob=example.org@bounces.example.net", WHOLE) == (
        "bob@example.org"
    )
    assert verp_recipient("news@example.net", LOCAL_DOMAIN) is None
    assert verp_recipient("b+xxxx=example.com@bounces.example.net", LOCAL_DOMAIN) is None
    assert verp_recipient(None, LOCAL_DOMAIN) is None
    assert verp_recipient("b+a=example.com@bounces.example.net", None) is None
    assert verp_recipient("bounce-nonsense@bounces.example.net", WHOLE) is None
