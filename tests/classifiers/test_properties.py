"""Property tests of ``classify`` on arbitrary and mangled input.

Whatever the status string, reply code, diagnostic text, provider, remote MTA or recipient
domain (a bounce's fields are written by whoever sent it), ``classify``:

* never raises, and answers with a known outcome, reason and rule id;
* says ``hard`` only through a rule whose outcome is hard, with an address-level reason, never
  for a transient reply (4xx, or a specific 4.x.y status), and never for text no rule matched
  (``unclassified`` is always soft);
* answers exactly what a first-match scan of every rule without the literal-anchor prefilter
  answers (``classifiers.anchors`` is an optimisation: it must never change a result).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifiers import (
    HARD_REASONS,
    Classification,
    Outcome,
    Reason,
    Rule,
    RuleSet,
    default_rules,
)
from classifiers.diagnostic import is_generic, parse_status
from classifiers.model import UNCLASSIFIED
from classifiers.providers import MTA_SUFFIXES

RULES = default_rules()
BY_ID = {rule.id: rule for rule in RULES.rules}
EXAMPLES = sorted({e.diagnostic for r in RULES.rules for e in r.examples if e.diagnostic})
HARD_EXAMPLES = sorted(
    {e.diagnostic for r in RULES.rules if r.outcome is Outcome.HARD for e in r.examples} - {None}
)


def _unanchored(rule: Rule) -> Rule:
    copy = replace(rule)  # __post_init__ derives the anchors again: drop them after
    object.__setattr__(copy, "anchors", None)
    return copy


# The same rules with no anchors: every rule's matchers are tried on every input.
REFERENCE = RuleSet([_unanchored(rule) for rule in RULES.rules])

_ANY_TEXT = st.text(max_size=300)


@st.composite
def mangled_example(draw: st.DrawFn, examples: list[str] = EXAMPLES) -> str:
    """A real reply line from the rule files, cut, spliced and re-cased."""
    text = draw(st.sampled_from(examples))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["cut", "insert", "upper", "fold"]))
        if how == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif how == "insert":
            text = text[:at] + draw(st.text(max_size=20)) + text[at:]
        elif how == "upper":
            text = text.upper()
        else:
            text = text[:at] + "\r\n550-5.1.1 " + text[at:]
    return text


statuses = st.one_of(
    st.none(),
    st.from_regex(r"\A[245]\.\d{1,3}\.\d{1,3}\Z"),
    st.sampled_from(["5.0.0", "4.0.0", "5.1.1", "4.2.2", "5.7.1", "2.0.0", "5.0.0 (permanent)"]),
    st.text(max_size=20),
)
replies = st.one_of(st.none(), st.integers(200, 599), st.integers(-(10**6), 10**6))
diagnostics = st.one_of(st.none(), _ANY_TEXT, st.sampled_from(EXAMPLES), mangled_example())
providers = st.one_of(
    st.none(), st.sampled_from(sorted(set(MTA_SUFFIXES.values()))), st.text(max_size=12)
)
hosts = st.one_of(
    st.none(),
    st.sampled_from(sorted(MTA_SUFFIXES)).map(lambda s: f"dns; mx1.{s}"),
    st.text(max_size=60),
)
domains = st.one_of(
    st.none(), st.sampled_from(["gmail.com", "hotmail.co.uk", "yahoo.fr"]), st.text(max_size=30)
)


def _transient(status: str | None, reply: int | None) -> bool:
    given_status = parse_status(status)
    specific_4xx = given_status is not None and given_status[0] == "4"
    return (reply is not None and 400 <= reply < 500) or (
        specific_4xx and given_status is not None and not is_generic(given_status)
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, replies, diagnostics, providers, hosts, domains)
def test_classify_is_total_and_hard_needs_a_rule(
    status: str | None,
    reply: int | None,
    diagnostic: str | None,
    provider: str | None,
    remote_mta: str | None,
    domain: str | None,
) -> None:
    kwargs = {
        "status": status,
        "reply_code": reply,
        "diagnostic": diagnostic,
        "provider": provider,
        "remote_mta": remote_mta,
        "recipient_domain": domain,
    }
    got = RULES.classify(**kwargs)  # type: ignore[arg-type]
    assert isinstance(got, Classification)
    assert isinstance(got.outcome, Outcome)
    assert isinstance(got.reason, Reason)
    if got.rule_id == UNCLASSIFIED.rule_id:
        assert got == UNCLASSIFIED
    else:
        rule = BY_ID[got.rule_id]
        assert got.reason is rule.reason
        # a hard rule on a transient reply is demoted to soft, nothing else changes the outcome
        assert got.outcome is rule.outcome or (
            rule.outcome is Outcome.HARD and got.outcome is Outcome.SOFT
        )
    if got.outcome is Outcome.HARD:
        assert got.reason in HARD_REASONS
        assert not _transient(status, reply), (got, status, reply)
    assert REFERENCE.classify(**kwargs) == got  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=["Nd"]), max_size=400))
def test_text_without_codes_is_hard_only_when_a_text_rule_matches(text: str) -> None:
    """No reply code or status anywhere: ``hard`` must come from a rule's own words."""
    got = RULES.classify(diagnostic=text)
    if got.outcome is Outcome.HARD:
        rule = BY_ID[got.rule_id]
        assert rule.pattern is not None and not rule.status and not rule.reply, rule.id
    assert REFERENCE.classify(diagnostic=text) == got


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.sampled_from(HARD_EXAMPLES), mangled_example(HARD_EXAMPLES)),
    st.one_of(
        st.tuples(st.none(), st.integers(400, 499)),
        st.tuples(st.from_regex(r"\A4\.\d{1,2}\.[1-9]\d?\Z"), st.none()),
    ),
    st.one_of(st.none(), st.sampled_from(sorted(set(MTA_SUFFIXES.values())))),
)
def test_words_of_a_hard_rule_under_a_transient_code_are_never_hard(
    text: str, codes: tuple[str | None, int | None], provider: str | None
) -> None:
    """A 4xx reply or a specific 4.x.y status means "try again": the address may be fine."""
    status, reply = codes
    got = RULES.classify(status=status, reply_code=reply, diagnostic=text, provider=provider)
    assert got.outcome is not Outcome.HARD, (got, status, reply, text)
