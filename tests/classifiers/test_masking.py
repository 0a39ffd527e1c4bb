"""The masked classification cache answers what direct classification answers.

Over every rule example and every reply in the golden samples: the text itself, then variants
with another recipient, client address and id (the cache seeded by the original first), each
against the rule set's uncached decision (outcome, reason and rule id: what ``explain`` shows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from classifiers import RuleSet, default_rules
from classifiers.masking import MaskedCache, Masker, mask, protected_literals
from classifiers.ruleset import _example_input

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

Case = tuple[str | None, int | None, str, str | None, str | None]


def _diagnostics(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("diagnostic"), str) and node["diagnostic"]:
            yield node
        for value in node.values():
            yield from _diagnostics(value)
    elif isinstance(node, list):
        for value in node:
            yield from _diagnostics(value)


def _cases() -> list[Case]:
    cases: list[Case] = []
    for rule in default_rules().rules:
        for example in rule.examples:
            given = _example_input(rule, example)
            if given["diagnostic"]:
                cases.append(
                    (
                        given["status"],
                        given["reply_code"],
                        given["diagnostic"],
                        given["remote_mta"],
                        given["recipient_domain"],
                    )
                )
    for path in sorted(SAMPLES.rglob("*.expected.json")):
        for found in _diagnostics(json.loads(path.read_text())):
            recipient = found.get("recipient") or ""
            cases.append(
                (
                    found.get("status"),
                    found.get("reply_code"),
                    found["diagnostic"],
                    found.get("remote_mta"),
                    recipient.rpartition("@")[2] or None,
                )
            )
    return cases


CASES = _cases()


def _variant(text: str) -> str:
    """Another recipient, client address and id in the same wording (same lengths)."""

    def shift(found: re.Match[str]) -> str:
        return "".join(
            chr((ord(c) - 48 + 3) % 10 + 48)
            if c.isdigit()
            else chr((ord(c) - 97 + 5) % 26 + 97)
            if "a" <= c <= "z"
            else c
            for c in found.group(0)
        )

    text = re.sub(r"[\w.+-]+(?=@)", shift, text)
    text = re.sub(r"\d{1,3}(?:\.\d{1,3}){3}", shift, text)
    return re.sub(r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]{12,}\b", shift, text)


def _direct(rules: RuleSet, case: Case) -> Any:
    status, reply, text, mta, domain = case
    from classifiers import detect_provider

    provider = detect_provider(remote_mta=mta, recipient_domain=domain) if mta or domain else None
    return rules._decide(status, reply, text, provider)


def _cached(rules: RuleSet, case: Case) -> Any:
    status, reply, text, mta, domain = case
    return rules.classify(
        status=status, reply_code=reply, diagnostic=text, remote_mta=mta, recipient_domain=domain
    )


def test_there_are_cases() -> None:
    assert len(CASES) >= 170
    assert sum(mask(c[2]) != c[2] for c in CASES) >= 30  # the mask has work on real replies


def test_cached_equals_direct_for_every_case_and_variant() -> None:
    rules = RuleSet(default_rules().rules)  # a fresh cache
    for case in CASES:
        assert _cached(rules, case) == _direct(rules, case), case
    for case in CASES:  # now seeded by the originals
        other = (case[0], case[1], _variant(case[2]), case[3], case[4])
        assert _cached(rules, other) == _direct(rules, other), other


def test_variants_first_then_originals() -> None:
    rules = RuleSet(default_rules().rules)
    for case in CASES:
        other = (case[0], case[1], _variant(case[2]), case[3], case[4])
        assert _cached(rules, other) == _direct(rules, other), other
    for case in CASES:
        assert _cached(rules, case) == _direct(rules, case), case


def test_mask_keeps_length_and_classes() -> None:
    text = "550 5.1.1 <jane.doe42@example.net>: blocked [198.51.100.7] id x12si345678pga.12"
    masked = mask(text)
    assert len(masked) == len(text)
    assert (
        masked == "550 5.1.1 <xaxa.axa00@example.net>: blocked [000.00.000.0] id x00xx000000xxa.12"
    )
    # statuses, reply codes, short codes and words are not touched
    kept = "550 5.7.1 (S3150) [TSS04] AS(201806281) smtp-error-codes.php#RL000001 user unknown"
    assert mask(kept) == kept


def test_protected_literals_are_not_masked() -> None:
    patterns = [r"tosa@rx\.t-online\.de", r"ref=ab12cd34ef56gh"]
    literals, local_parts = protected_literals(patterns)
    assert "tosa" in local_parts and "ab12cd34ef56gh" in literals
    masker = Masker(patterns)
    assert masker.mask("mail to tosa@rx.t-online.de") == "mail to tosa@rx.t-online.de"
    assert masker.mask("ref=ab12cd34ef56gh") == "ref=ab12cd34ef56gh"
    assert masker.mask("ref=zz12cd34ef56gh") == "ref=xx00aa00aa00xx"


def test_a_mask_that_changes_the_answer_is_not_cached() -> None:
    calls: list[str | None] = []

    def decide(
        status: str | None, reply: int | None, text: str | None, provider: str | None
    ) -> str:
        calls.append(text)
        return "special" if text and "special@" in text else "plain"

    cache: MaskedCache[str] = MaskedCache(decide, Masker([]))
    assert cache.get(None, None, "to special@example.net", None) == "special"
    # The mask of that text decided otherwise, so the mask is not cached: each text is decided.
    assert cache.get(None, None, "to aaaaaaa@example.net", None) == "plain"
    assert cache.get(None, None, "to special@example.net", None) == "special"


def test_the_cache_is_bounded() -> None:
    cache: MaskedCache[str] = MaskedCache(lambda *a: "x", Masker([]), maxsize=4)
    for n in range(10):
        cache.get(None, None, f"user{'a' * n}@example.net", None)
    assert len(cache._entries) == 4


@pytest.mark.parametrize("text", ["", "plain text", "550 5.1.1 user unknown"])
def test_nothing_to_mask_is_unchanged(text: str) -> None:
    assert mask(text) == text
