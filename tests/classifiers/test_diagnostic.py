"""Normalisation and code extraction, and the anchor prefilter."""

from __future__ import annotations

import re

import pytest

from classifiers import default_rules
from classifiers.anchors import AnchorScanner, anchors_of, lower_pattern, rule_anchors
from classifiers.diagnostic import normalise, parse_status


@pytest.mark.parametrize(
    ("text", "reply", "status"),
    [
        ("smtp; 550 5.1.1 <a@example.com>: Recipient address rejected: User unknown", 550, "5.1.1"),
        ("550-5.1.1 The email account\n550-5.1.1 that you tried", 550, "5.1.1"),
        (
            "X-Postfix; host mx.example.com[192.0.2.1] said: 554 5.6.0 spam (in reply to end of DATA command)",
            554,
            "5.6.0",
        ),
        (
            "SMTP error from remote mail server after RCPT TO:<a@example.com>: host mx.example.com [192.0.2.1]: 550 5.1.1 unknown",
            550,
            "5.1.1",
        ),
        ("5.1.0 - Unknown address error 550-'5.2.2 <a@example.jp>... Mailbox Full'", 550, "5.2.2"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", None, "5.1.1"),
        ("connect to example.com[192.0.2.119]: Connection timed out", None, None),
        ("421 4.7.0 [TSS04] Messages from 192.0.2.1 deferred - 4.16.55.1; see", 421, "4.7.0"),
        ("", None, None),
    ],
)
def test_codes_found(text: str, reply: int | None, status: str | None) -> None:
    parsed = normalise(text)
    assert (parsed.reply_code, parsed.status) == (reply, status)


def test_repeated_prefixes_removed() -> None:
    parsed = normalise(
        "550-5.7.25 The IP address does not have a 550-5.7.25 PTR record setup, or 550 5.7.25 more"
    )
    assert parsed.text == "550-5.7.25 The IP address does not have a PTR record setup, or more"
    multi = normalise("550-5.1.1 one\n550-5.1.1 two\r\n550 5.1.1 three")
    assert multi.text == "550-5.1.1 one two three"


def test_non_smtp_type_kept() -> None:
    assert normalise("X-Unix; 77").text == "X-Unix; 77"
    assert normalise("smtp; 550 x").text == "550 x"


def test_parse_status() -> None:
    assert parse_status("5.0.0 (permanent failure)") == "5.0.0"
    assert parse_status("5.01.001") == "5.1.1"
    assert parse_status("failed") is None
    assert parse_status(None) is None


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("user unknown", {"user unknown"}),
        ("timed? ?out", {"time"}),
        (r"\bvirus", {"virus"}),
        ("(?:mailbox|inbox) full", {" full"}),
        ("(?:mailbox|inbox)(?: size)? exceeded", {" exceeded"}),
        ("(?:mailbox|inbox) (?:is )?(?:x|y)", {"mailbox", "inbox"}),
        (r"\[(?:CS|HM)\d\d\]", None),
        ("(?:ab|cd)", None),
    ],
)
def test_anchors_of(pattern: str, expected: set[str] | None) -> None:
    found = anchors_of(pattern)
    assert (set(found) if found is not None else None) == expected


def test_every_match_contains_an_anchor() -> None:
    """The prefilter must never skip a rule that would match: check on all examples."""
    for rule in default_rules().rules:
        if rule.pattern is None or rule.anchors is None:
            continue
        for example in rule.examples:
            text = normalise(example.diagnostic).text.lower()
            if rule.pattern.search(text):
                assert any(a in text for a in rule.anchors), rule.id


def test_scanner_finds_overlapping_anchors() -> None:
    scanner = AnchorScanner(["user", "user unknown", "unknown user", "known"])
    assert scanner.present("a user unknown user here") == {
        "user",
        "user unknown",
        "unknown user",
        "known",
    }
    assert scanner.present("nothing") == frozenset()


def test_lower_pattern_keeps_escapes() -> None:
    assert lower_pattern(r"\S+ Foo\d [A-Z]") == r"\S+ foo\d [a-z]"
    assert re.search(lower_pattern(r"RESOLVER\.ADR"), "resolver.adr")
    assert rule_anchors(("abc", r"\d+")) is None
