"""Bounce classification: (SMTP reply code, RFC 3463 status, diagnostic text, provider) -> outcome.

Pure: standard library only, synchronous. The rules are data in ``rules/*.toml`` (provider files
first, then generic text, then the RFC 3463 / RFC 5321 tables); see docs/classification.md.
"""

from classifiers.model import HARD_REASONS, Classification, Outcome, Reason
from classifiers.providers import detect_provider
from classifiers.ruleset import (
    Example,
    Rule,
    RuleError,
    RuleSet,
    check_rules,
    classify,
    default_rules,
)

__all__ = [
    "HARD_REASONS",
    "Classification",
    "Example",
    "Outcome",
    "Reason",
    "Rule",
    "RuleError",
    "RuleSet",
    "check_rules",
    "classify",
    "default_rules",
    "detect_provider",
]
