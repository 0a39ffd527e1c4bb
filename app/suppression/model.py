"""The suppression list's vocabulary: requests, results, filters, validation, and the shapes a
check or a support read answers with. No I/O.

Semantics (the contract every intake path relies on):

* scope ``global`` blocks every stream; a stream scope (e.g. an unsubscribe from ``marketing``)
  blocks only that stream. A check without a stream sees only global suppressions.
* an entry with ``expires_at`` stops blocking at that instant; nothing has to run for it (the
  expiry sweep records the end soon after: ``SuppressionService.expire_due``).
* re-suppressing never weakens an entry (``app.suppression.merge``).
* every change is an event; every manual change is also an audit entry naming the API key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.addresses import InvalidAddress, domain_of, normalise_address
from app.cache import CachedEntry, Entries
from app.errors import InvalidAddressError, InvalidInput
from app.models import AuditEntry, Event, Suppression, utcnow
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.suppression.merge import STRENGTH, is_active, stronger_or_equal

SUPPRESSING_OUTCOMES = frozenset(STRENGTH)
SOURCES = frozenset({"bounce", "complaint", "unsubscribe", "api", "cli", "import"})
REASON_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,47}$")


def scope_for(stream: str | None) -> str:
    """``None``/empty/"global" -> the global scope; otherwise a validated stream name."""
    if stream is None or stream == "" or stream == GLOBAL_SCOPE:
        return GLOBAL_SCOPE
    if not STREAM_RE.match(stream):
        raise InvalidInput(
            f"stream {stream!r}: use 1-64 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return stream


class InvalidDomain(InvalidInput):
    """A domain filter that is not a domain (the OpenAPI document cannot say what is one)."""

    error = "invalid_domain"


class ExpiryInPast(InvalidInput):
    """An ``expires_at`` at or before now: it would suppress nothing."""

    error = "expiry_in_past"


# A whole domain is suppressed by a row whose address is "@" + the domain: no address has an empty
# local part, so the key cannot be a mailbox, and a check looks it up beside the address's own.
DOMAIN_KEY_PREFIX = "@"


def normalise_domain(raw: str) -> str:
    """A domain as addresses store it (lower-case IDNA); a leading "@" is allowed; 422 if not
    a domain."""
    text = raw.strip().removeprefix(DOMAIN_KEY_PREFIX)
    try:
        return normalise_address("x@" + text).rpartition("@")[2]
    except InvalidAddress:
        raise InvalidDomain(f"domain {raw!r}: not a valid domain") from None


def domain_key(domain: str) -> str:
    """The list key of a whole-domain suppression (``domain`` already normalised)."""
    return DOMAIN_KEY_PREFIX + domain


def domain_keys(addresses: Sequence[str]) -> list[str]:
    """The domain key of each distinct domain among ``addresses`` (normalised).

    On the batch check's hot path: one ``rpartition`` per address into a set (the fastest of the
    forms measured), the keys built once per distinct domain."""
    return [DOMAIN_KEY_PREFIX + d for d in {a.rpartition("@")[2] for a in addresses}]


def with_domain_keys(addresses: Sequence[str]) -> list[str]:
    """``addresses`` followed by their ``domain_keys``: every key a check of them reads."""
    return [*addresses, *domain_keys(addresses)]


def merge_domain_entries(
    addresses: Sequence[str], found: Sequence[Entries | None], domains: Sequence[str]
) -> list[Entries | None]:
    """Each address's entries joined with its domain's; ``found`` holds the entries of
    ``addresses`` then of ``domains`` (their ``domain_keys``). Nearly always no domain has an
    entry: then this is one pass over the distinct domains."""
    n = len(addresses)
    out = list(found[:n])
    blocked = {key: entries for key, entries in zip(domains, found[n:], strict=True) if entries}
    if blocked:
        for i, address in enumerate(addresses):
            dom = blocked.get(address[address.rindex("@") :])
            if dom:
                own = out[i]
                out[i] = tuple(own) + tuple(dom) if own else dom
    return out


def list_key(address: str, *, whole_domain: bool = False) -> str:
    """The key an address (or, with ``whole_domain``, its domain) is stored under; 422 if
    invalid."""
    return domain_key(normalise_domain(address)) if whole_domain else normalise_or_422(address)


def parse_since(raw: str | None, name: str = "since") -> datetime | None:
    """A ``since`` (or other ``name``) filter: ISO 8601 (naive = UTC); 422 naming it otherwise.

    Only ISO 8601: pydantic's datetime also read a bare number as epoch seconds, so ``since=30``
    silently meant 1970."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(
            f"{name} {raw!r}: an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def normalise_or_422(address: str) -> str:
    try:
        return normalise_address(address)
    except InvalidAddress as exc:
        raise InvalidAddressError({"address": exc.address, "why": exc.why}) from None


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _iso_dt(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decide(entries: Entries | None, scope: str, now: float) -> CachedEntry | None:
    """The entry that blocks ``scope`` now (the strongest), or None."""
    if not entries:
        return None
    best: CachedEntry | None = None
    for e in entries:
        if e.scope != GLOBAL_SCOPE and e.scope != scope:
            continue
        if e.expires is not None and e.expires <= now:
            continue
        if best is None or not stronger_or_equal(best.outcome, e.outcome):
            best = e
    return best


def check_answer(address: str, hit: CachedEntry | None) -> dict[str, Any]:
    if hit is None:
        return {"address": address, "suppressed": False}
    return {
        "address": address,
        "suppressed": True,
        "outcome": hit.outcome,
        "reason": hit.reason,
        "scope": hit.scope,
        "since": hit.since,
        "expires_at": hit.expires_at,
        "verified": hit.verified,
        "source": hit.source,
    }


@dataclass(frozen=True, slots=True)
class SuppressionFilter:
    """Which active suppressions a listing or an export wants; validated on construction."""

    outcome: str | None = None
    reason: str | None = None
    stream: str | None = None
    domain: str | None = None
    since: datetime | None = None  # last seen at or after
    source: str | None = None  # bounce, complaint, unsubscribe, api, cli, import

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise InvalidInput(f"source {self.source!r}: one of {', '.join(sorted(SOURCES))}")
        if self.outcome is not None and self.outcome not in SUPPRESSING_OUTCOMES:
            raise InvalidInput(f"outcome {self.outcome!r}: one of {', '.join(STRENGTH)}")
        if self.reason is not None and not REASON_RE.match(self.reason):
            raise InvalidInput(f"reason {self.reason!r}: snake_case, at most 48 characters")
        if self.stream is not None:
            scope_for(self.stream)
        if self.since is not None and self.since.tzinfo is None:
            object.__setattr__(self, "since", self.since.replace(tzinfo=UTC))
        if self.domain is not None:
            # The stored form: lower-case IDNA, as normalise_address writes it.
            object.__setattr__(self, "domain", normalise_domain(self.domain))


@dataclass(slots=True)
class SuppressRequest:
    address: str
    outcome: str
    reason: str
    source: str
    stream: str | None = None
    expires_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    actor: str | None = None  # API key name / "cli" for manual actions: writes an audit entry
    note: str | None = None
    event_kind: str | None = None  # defaults to the source
    rule_id: str | None = None
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str | None = None
    message_id: int | None = None
    whole_domain: bool = False  # suppress every address of the domain named by ``address``


def validate_request(req: SuppressRequest, now: datetime) -> SuppressRequest:
    """``req`` with its address normalised and ``stream`` set to the scope; 422 if invalid."""
    address = list_key(req.address, whole_domain=req.whole_domain)
    scope = scope_for(req.stream)
    if req.outcome not in SUPPRESSING_OUTCOMES:
        raise InvalidInput(f"outcome {req.outcome!r}: one of {sorted(SUPPRESSING_OUTCOMES)}")
    if not REASON_RE.match(req.reason):
        raise InvalidInput(f"reason {req.reason!r}: snake_case, at most 48 characters")
    if req.source not in SOURCES:
        raise InvalidInput(f"source {req.source!r}: one of {sorted(SOURCES)}")
    if req.expires_at is not None and req.expires_at <= now:
        raise ExpiryInPast("expires_at is in the past")
    if req.note is not None and "\x00" in req.note:
        # PostgreSQL's text and jsonb cannot hold U+0000: refuse it rather than fail the write.
        raise InvalidInput("note contains a NUL character")
    if address == req.address and scope == req.stream:
        return req
    return dataclasses.replace(req, address=address, stream=scope)


def new_row(req: SuppressRequest, scope: str, now: datetime) -> dict[str, Any]:
    return {
        "address": req.address,
        "domain": domain_of(req.address),
        "scope": scope,
        "outcome": req.outcome,
        "reason": req.reason,
        "source": req.source,
        "detail": req.detail,
        "verified": req.verified,
        "first_seen": now,
        "last_seen": now,
        "expires_at": req.expires_at,
        "hit_count": 1,
        "revision": 1,
        "updated_at": now,
    }


def cache_items(
    addresses: Sequence[str], records: Iterable[Sequence[Any]], now: datetime
) -> list[tuple[str, int, list[CachedEntry]]]:
    """The cache value of each address from its rows (``CACHE_COLUMNS`` order, read after the
    commit): the version is the sum of the rows' revisions, the entries are the active rows."""
    versions = dict.fromkeys(addresses, 0)
    entries: dict[str, list[CachedEntry]] = {a: [] for a in addresses}
    for address, scope, outcome, reason, first, expires, verified, source, rev, gone in records:
        versions[address] += rev
        if is_active(gone, expires, now):
            entries[address].append(
                make_entry(scope, outcome, reason, first, expires, bool(verified), source)
            )
    return [(a, versions[a], entries[a]) for a in addresses]


@dataclass(frozen=True, slots=True)
class SuppressResult:
    address: str
    scope: str
    created: bool
    changed: bool  # outcome, reason, expiry or scope activity changed (not just a hit)
    row: Suppression


def make_entry(
    scope: str,
    outcome: str,
    reason: str,
    first_seen: datetime,
    expires_at: datetime | None,
    verified: bool,
    source: str,
) -> CachedEntry:
    return CachedEntry(
        scope=scope,
        outcome=outcome,
        reason=reason,
        since=_iso_dt(first_seen),
        expires=_epoch(expires_at),
        expires_at=_iso_dt(expires_at) if expires_at is not None else None,
        verified=verified,
        source=source,
    )


def row_to_dict(row: Suppression, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "address": row.address,
        "domain": row.domain,
        "scope": row.scope,
        "outcome": row.outcome,
        "reason": row.reason,
        "source": row.source,
        "verified": row.verified,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "expires_at": row.expires_at,
        "hit_count": row.hit_count,
        "removed_at": row.removed_at,
        "active": is_active(row.removed_at, row.expires_at, now),
        "detail": row.detail or {},
    }


def event_to_dict(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "created_at": e.created_at,
        "kind": e.kind,
        "scope": e.scope,
        "outcome": e.outcome,
        "reason": e.reason,
        "rule_id": e.rule_id,
        "status": e.status,
        "reply_code": e.reply_code,
        "diagnostic": e.diagnostic,
        "source": e.source,
        "actor": e.actor,
        "verified": e.verified,
        "message_id": e.message_id,
        "detail": e.detail or {},
    }


def audit_to_dict(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.id,
        "created_at": a.created_at,
        "actor": a.actor,
        "action": a.action,
        "scope": a.scope,
        "reason": a.reason,
        "detail": a.detail or {},
    }


def invalid_slot(raw: object) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else repr(raw)
    why = "not a string"
    if isinstance(raw, str):
        try:
            normalise_address(raw)
            why = "invalid"
        except InvalidAddress as exc:
            why = exc.why
    return {"address": text, "suppressed": None, "error": why}
