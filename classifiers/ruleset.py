"""Rules as data: load ``rules/*.toml``, validate them, compile once, classify first-match-wins.

A rule matches when every matcher it gives matches: ``provider`` (the detected provider is one of
them), ``reply`` (the reply code is one of them), ``status`` (the enhanced status equals an entry,
or starts with an entry ending in "." such as "5.1." or "4." -- a prefix never matches a generic
failure code such as 5.1.0), and ``text`` (any regex is found in
the normalised diagnostic, case-insensitively). Files are read in the order given (the default set
in file-name order: provider files, then generic text, then the RFC 3463 / RFC 5321 tables).

Two guards sit outside the rules because a false hard bounce suppresses a real customer for good:
a rule may only say ``hard`` with an address-level reason (``HARD_REASONS``), and a hard rule that
matches a transient reply (4xx or 4.x.x) yields ``soft`` with the same reason and rule id.
Between a specific enhanced status and a text rule about something else, ``precedence.py``
decides (an address status is not overruled by text about the message, and the reverse).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from classifiers.anchors import AnchorScanner, lower_pattern, rule_anchors
from classifiers.diagnostic import is_generic, normalise, parse_status
from classifiers.masking import MaskedCache, Masker
from classifiers.model import (
    HARD_REASONS,
    UNCLASSIFIED,
    Classification,
    Outcome,
    Reason,
)
from classifiers.precedence import StatusScope, outranked, status_scope
from classifiers.providers import TEXT_HINTS, detect_provider, provider_from_text

RULES_DIR = Path(__file__).parent / "rules"
CACHE_SIZE = 8192

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_STATUS_EXACT = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_STATUS_PREFIX = re.compile(r"^[245]\.(?:\d{1,3}\.)?$")
_RULE_KEYS = frozenset(
    {"id", "outcome", "reason", "status", "reply", "text", "provider", "examples", "source", "note"}
)
_EXAMPLE_KEYS = frozenset(
    {"diagnostic", "status", "reply", "provider", "remote_mta", "recipient_domain"}
)


class RuleError(ValueError):
    """A rule file is wrong: unknown outcome or reason, duplicate id, bad regex, missing parts."""


@dataclass(frozen=True, slots=True)
class Example:
    """One anonymised reply a rule must classify (the shadowing test runs every one)."""

    diagnostic: str | None = None
    status: str | None = None
    reply_code: int | None = None
    provider: str | None = None
    remote_mta: str | None = None
    recipient_domain: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    id: str
    outcome: Outcome
    reason: Reason
    source: str
    origin: str  # the file it came from, for messages
    status: tuple[str, ...] = ()
    reply: frozenset[int] = frozenset()
    text: tuple[str, ...] = ()
    provider: frozenset[str] = frozenset()
    examples: tuple[Example, ...] = ()
    note: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    status_exact: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    status_prefixes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    anchors: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.text and self.pattern is None:
            object.__setattr__(self, "pattern", _compile(self.text, self.origin, self.id))
        object.__setattr__(
            self, "status_exact", frozenset(s for s in self.status if not s.endswith("."))
        )
        object.__setattr__(
            self, "status_prefixes", tuple(s for s in self.status if s.endswith("."))
        )
        found = rule_anchors(self.text) if self.text else None
        object.__setattr__(self, "anchors", tuple(sorted(found)) if found is not None else None)

    def matches(
        self, status: str | None, reply: int | None, text: str, provider: str | None
    ) -> bool:
        """True when every matcher this rule gives matches (``text`` already lower-cased)."""
        if self.provider and provider not in self.provider:
            return False
        if self.reply and reply not in self.reply:
            return False
        if self.status and (
            status is None
            or (status not in self.status_exact and not _prefix_match(status, self.status_prefixes))
        ):
            return False
        if self.pattern is None:
            return True
        if self.anchors is not None and not any(anchor in text for anchor in self.anchors):
            return False
        return self.pattern.search(text) is not None


def _compile(patterns: Iterable[str], origin: str, rule_id: str) -> re.Pattern[str]:
    parts = []
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RuleError(f"{origin}: rule {rule_id!r}: bad regex {pattern!r}: {exc}") from exc
        parts.append(f"(?:{lower_pattern(pattern)})")
    # Text is lower-cased once per call; lower-case patterns without IGNORECASE run ~3x faster.
    return re.compile("|".join(parts))


def _prefix_match(status: str, prefixes: tuple[str, ...]) -> bool:
    """A prefix ("5.1.", "4.") never matches a generic failure code (5.0.0, 5.1.0): those say too
    little, and end unclassified unless a text rule or an exact status names them."""
    return status.startswith(prefixes) and (status[0] == "2" or not is_generic(status))


def _is_transient(status: str | None, reply: int | None) -> bool:
    return (status is not None and status.startswith("4.")) or (
        reply is not None and 400 <= reply < 500
    )


class RuleSet:
    """An ordered, compiled set of rules; ``classify`` returns the first match."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._scanner = AnchorScanner(a for rule in self.rules for a in rule.anchors or ())
        # Two levels: the exact text (a reply repeated word for word), then the text with its
        # recipient, client address and ids masked (masking.py: the same reply to another
        # recipient), each bounded.
        patterns = [p for rule in self.rules for p in rule.text]
        patterns += [hint.pattern for _, hint in TEXT_HINTS]
        self._masked = MaskedCache(self._decide, Masker(patterns), maxsize=CACHE_SIZE)
        self._decide_cached = lru_cache(maxsize=CACHE_SIZE)(self._decide_masked)

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules)"

    @classmethod
    def load(cls, paths: Sequence[Path]) -> Self:
        """Read rule files in the order given (a directory stands for its ``*.toml`` by name)."""
        rules: list[Rule] = []
        seen: dict[str, str] = {}
        for path in paths:
            files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
            for file in files:
                for rule in _load_file(file):
                    if rule.id in seen:
                        raise RuleError(
                            f"{file.name}: rule {rule.id!r}: duplicate id (first in {seen[rule.id]})"
                        )
                    seen[rule.id] = file.name
                    rules.append(rule)
        return cls(rules)

    def classify(
        self,
        *,
        status: str | None = None,
        reply_code: int | None = None,
        diagnostic: str | None = None,
        provider: str | None = None,
        remote_mta: str | None = None,
        recipient_domain: str | None = None,
    ) -> Classification:
        """Classify one failed (or delivered) recipient; see the module docstring."""
        if provider is None and (remote_mta or recipient_domain):
            provider = detect_provider(remote_mta=remote_mta, recipient_domain=recipient_domain)
        return self._decide_cached(status, reply_code, diagnostic, provider)

    def _decide_masked(
        self,
        status: str | None,
        reply_code: int | None,
        diagnostic: str | None,
        provider: str | None,
    ) -> Classification:
        if not diagnostic:
            return self._decide(status, reply_code, diagnostic, provider)
        return self._masked.get(status, reply_code, diagnostic, provider)

    def _decide(
        self,
        status: str | None,
        reply_code: int | None,
        diagnostic: str | None,
        provider: str | None,
    ) -> Classification:
        parsed = normalise(diagnostic)
        text = parsed.text.lower()
        given = parse_status(status)
        # The Status field is the reporting MTA's summary; a generic one (5.0.0) yields to the
        # specific status the remote server put in its own reply.
        effective = given
        if parsed.status is not None and (
            given is None or (is_generic(given) and not is_generic(parsed.status))
        ):
            effective = parsed.status
        # Postfix address verification: a transient refusal quoting the probe's permanent answer
        # (the remote server said 550 5.1.1) is that permanent answer (diagnostic.py).
        verified = parsed.verified_status
        if verified is not None and (effective is None or effective.startswith("4.")):
            effective, reply_code = verified, None
        # A reply found in the text must agree with the status class: a session transcript
        # ("Out: 250 2.1.0 Ok ... In: 550 5.1.1 ...") must not turn a failure into a success.
        reply = reply_code
        found = parsed.reply_code
        if (
            reply is None
            and found is not None
            and (effective is None or str(found)[0] == effective[0])
        ):
            reply = found
        if provider is None and text:
            provider = provider_from_text(text)
        present = self._scanner.present(text)
        scope = status_scope(effective)
        # Rule.matches inlined: this loop is the hot path of the whole pipeline.
        for rule in self.rules:
            if rule.provider and provider not in rule.provider:
                continue
            if rule.reply and reply not in rule.reply:
                continue
            if rule.status and (
                effective is None
                or (
                    effective not in rule.status_exact
                    and not _prefix_match(effective, rule.status_prefixes)
                )
            ):
                continue
            if rule.pattern is not None:
                if rule.anchors is not None and present.isdisjoint(rule.anchors):
                    continue
                if rule.pattern.search(text) is None:
                    continue
                # A specific status outranks text about the other thing (precedence.py); a rule
                # that names a status or a provider was written for that signal.
                if (
                    scope is not StatusScope.GENERIC
                    and not (rule.status or rule.provider)
                    and outranked(scope, rule.reason)
                ):
                    continue
            if rule.outcome is Outcome.HARD and _is_transient(effective, reply):
                return Classification(Outcome.SOFT, rule.reason, rule.id)
            return Classification(rule.outcome, rule.reason, rule.id)
        return UNCLASSIFIED


def _as_list(value: Any, what: str, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [value]
    raise RuleError(f"{where}: {what} must be a value or a list, not {type(value).__name__}")


def _example(raw: Any, where: str) -> Example:
    if isinstance(raw, str):
        return Example(diagnostic=raw)
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: an example is a reply line or a table")
    unknown = set(raw) - _EXAMPLE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown example keys {sorted(unknown)}")
    reply = raw.get("reply")
    if reply is not None and not isinstance(reply, int):
        raise RuleError(f"{where}: example reply must be an integer")
    return Example(
        diagnostic=raw.get("diagnostic"),
        status=raw.get("status"),
        reply_code=reply,
        provider=raw.get("provider"),
        remote_mta=raw.get("remote_mta"),
        recipient_domain=raw.get("recipient_domain"),
    )


def _rule(raw: dict[str, Any], origin: str, index: int) -> Rule:
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise RuleError(f"{origin}: rule #{index + 1}: id {rule_id!r} is not kebab-case")
    where = f"{origin}: rule {rule_id!r}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        outcome = Outcome(str(raw.get("outcome")))
    except ValueError:
        raise RuleError(
            f"{where}: unknown outcome {raw.get('outcome')!r} "
            f"(one of {', '.join(o.value for o in Outcome)})"
        ) from None
    try:
        reason = Reason(str(raw.get("reason")))
    except ValueError:
        raise RuleError(f"{where}: unknown reason {raw.get('reason')!r}") from None
    if outcome is Outcome.HARD and reason not in HARD_REASONS:
        raise RuleError(f"{where}: reason {reason.value!r} may not be hard")
    statuses = [str(s) for s in _as_list(raw.get("status"), "status", where)]
    for status in statuses:
        if not (_STATUS_EXACT.match(status) or _STATUS_PREFIX.match(status)):
            raise RuleError(f"{where}: bad status {status!r} (want 5.1.1, or a prefix 5.1. / 5.)")
    replies = _as_list(raw.get("reply"), "reply", where)
    for reply in replies:
        if not isinstance(reply, int) or not 200 <= reply <= 599:
            raise RuleError(f"{where}: bad reply code {reply!r}")
    texts = _as_list(raw.get("text"), "text", where)
    if not all(isinstance(t, str) and t for t in texts):
        raise RuleError(f"{where}: text must be non-empty regex strings")
    providers = _as_list(raw.get("provider"), "provider", where)
    if not (statuses or replies or texts):
        raise RuleError(f"{where}: no matcher (status, reply or text)")
    examples = [_example(e, where) for e in _as_list(raw.get("examples"), "examples", where)]
    if not examples:
        raise RuleError(f"{where}: no examples")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise RuleError(f"{where}: no source (an RFC section or the provider's page)")
    return Rule(
        id=rule_id,
        outcome=outcome,
        reason=reason,
        source=source,
        origin=origin,
        status=tuple(statuses),
        reply=frozenset(replies),
        text=tuple(texts),
        provider=frozenset(str(p) for p in providers),
        examples=tuple(examples),
        note=str(raw.get("note", "")),
        pattern=_compile(texts, origin, rule_id) if texts else None,
    )


def _load_file(path: Path) -> list[Rule]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path.name}: not valid TOML: {exc}") from exc
    extra = set(data) - {"rule"}
    if extra:
        raise RuleError(f"{path.name}: unknown top-level keys {sorted(extra)} (use [[rule]])")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleError(f"{path.name}: 'rule' must be an array of tables ([[rule]])")
    return [_rule(raw, path.name, i) for i, raw in enumerate(raw_rules)]


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rule set, loaded and compiled once."""
    return RuleSet.load([RULES_DIR])


def classify(
    *,
    status: str | None = None,
    reply_code: int | None = None,
    diagnostic: str | None = None,
    provider: str | None = None,
    remote_mta: str | None = None,
    recipient_domain: str | None = None,
) -> Classification:
    """Classify with the default rule set (see ``RuleSet.classify``)."""
    return default_rules().classify(
        status=status,
        reply_code=reply_code,
        diagnostic=diagnostic,
        provider=provider,
        remote_mta=remote_mta,
        recipient_domain=recipient_domain,
    )


def _example_input(rule: Rule, example: Example) -> dict[str, Any]:
    provider = example.provider
    if provider is None and rule.provider and not (example.remote_mta or example.recipient_domain):
        provider = sorted(rule.provider)[0]
    return {
        "status": example.status,
        "reply_code": example.reply_code,
        "diagnostic": example.diagnostic,
        "provider": provider,
        "remote_mta": example.remote_mta,
        "recipient_domain": example.recipient_domain,
    }


def check_rules(rules: RuleSet | None = None) -> list[str]:
    """Problems in a rule set (empty means fine): the checks CI and ``rules validate`` run."""
    ruleset = rules if rules is not None else default_rules()
    problems: list[str] = []
    seen: set[str] = set()
    reached: set[Outcome] = set()
    for rule in ruleset.rules:
        where = f"{rule.origin}: rule {rule.id!r}"
        if rule.id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(rule.id)
        if not rule.examples:
            problems.append(f"{where}: no examples")
        if not rule.source.strip():
            problems.append(f"{where}: no source")
        for number, example in enumerate(rule.examples, 1):
            got = ruleset.classify(**_example_input(rule, example))
            if got.rule_id != rule.id:
                problems.append(
                    f"{where}: example {number} lands on {got.rule_id!r} "
                    f"({got.outcome.value}/{got.reason.value}): shadowed or not matching"
                )
            elif got.outcome is not rule.outcome:
                problems.append(
                    f"{where}: example {number} yields {got.outcome.value} "
                    f"(a transient code demotes hard): give a permanent example"
                )
            else:
                reached.add(rule.outcome)
    for outcome in (Outcome.HARD, Outcome.SOFT, Outcome.POLICY):
        if outcome not in reached:
            problems.append(f"no rule reaches outcome {outcome.value!r}")
    return problems
