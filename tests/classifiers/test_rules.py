"""The rule files themselves: every example lands on its own rule, and the meta-checks hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers import Outcome, Rule, RuleError, RuleSet, check_rules, default_rules
from classifiers.ruleset import RULES_DIR, _example_input

RULES = default_rules().rules
CASES = [
    pytest.param(rule, number, id=f"{rule.id}-{number}")
    for rule in RULES
    for number in range(len(rule.examples))
]


@pytest.mark.parametrize(("rule", "number"), CASES)
def test_example_lands_on_its_own_rule(rule: Rule, number: int) -> None:
    got = default_rules().classify(**_example_input(rule, rule.examples[number]))
    assert got.rule_id == rule.id, f"shadowed: lands on {got.rule_id}"
    assert got.outcome is rule.outcome
    assert got.reason is rule.reason


def test_check_rules_finds_nothing() -> None:
    assert check_rules() == []


def test_ids_unique() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))


def test_every_rule_has_examples_and_source() -> None:
    for rule in RULES:
        assert rule.examples, rule.id
        assert rule.source.strip(), rule.id


def test_every_outcome_reachable() -> None:
    outcomes = {rule.outcome for rule in RULES}
    assert {Outcome.HARD, Outcome.SOFT, Outcome.POLICY, Outcome.NONE} <= outcomes


def test_files_load_in_name_order() -> None:
    files = sorted(p.name for p in RULES_DIR.glob("*.toml"))
    origins: list[str] = []
    for rule in RULES:
        if not origins or origins[-1] != rule.origin:
            origins.append(rule.origin)
    assert origins == files


GOOD = """
[[rule]]
id = "test-rule"
outcome = "soft"
reason = "mailbox_full"
text = ['mailbox full']
examples = ["552 5.2.2 Mailbox full"]
source = "RFC 3463 section 3.3"
"""


def _write(tmp_path: Path, text: str, name: str = "10-test.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    rules = RuleSet.load([_write(tmp_path, GOOD)])
    assert rules.classify(diagnostic="452 4.2.2 MAILBOX FULL").rule_id == "test-rule"
    assert check_rules(rules) == [
        "no rule reaches outcome 'hard'",
        "no rule reaches outcome 'policy'",
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('outcome = "soft"', 'outcome = "sofft"', "unknown outcome 'sofft'"),
        ('reason = "mailbox_full"', 'reason = "mailbox_ful"', "unknown reason 'mailbox_ful'"),
        ("['mailbox full']", "['mailbox (full']", "bad regex"),
        ('examples = ["552 5.2.2 Mailbox full"]', "examples = []", "no examples"),
        ('source = "RFC 3463 section 3.3"', 'source = ""', "no source"),
        ('outcome = "soft"', 'outcome = "hard"', "may not be hard"),
        ('id = "test-rule"', 'id = "Test_Rule"', "not kebab-case"),
        ("text = ['mailbox full']", "txet = ['mailbox full']", "unknown keys"),
        ("text = ['mailbox full']", 'status = "5.2"', "bad status"),
    ],
)
def test_bad_rule_raises_naming_file_and_rule(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(RuleError) as info:
        RuleSet.load([_write(tmp_path, GOOD.replace(old, new))])
    assert "10-test.toml" in str(info.value)
    assert message in str(info.value)
    if "kebab" not in message:
        assert "test-rule" in str(info.value)


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first = _write(tmp_path, GOOD, "10-a.toml")
    second = _write(tmp_path, GOOD, "20-b.toml")
    with pytest.raises(RuleError, match="duplicate id"):
        RuleSet.load([first, second])


def test_directory_loads_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path, GOOD.replace("test-rule", "second"), "20-b.toml")
    _write(tmp_path, GOOD.replace("test-rule", "first"), "10-a.toml")
    rules = RuleSet.load([tmp_path])
    assert [rule.id for rule in rules.rules] == ["first", "second"]
    assert rules.classify(diagnostic="Mailbox full").rule_id == "first"


def test_shadowed_rule_is_reported(tmp_path: Path) -> None:
    shadow = GOOD + GOOD.replace("test-rule", "later-rule")
    problems = check_rules(RuleSet.load([_write(tmp_path, shadow)]))
    assert any("later-rule" in p and "lands on 'test-rule'" in p for p in problems)
