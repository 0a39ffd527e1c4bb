"""What the deliverability rates count, and how a rate is defined: pure, no I/O.

An outcome is counted in buckets of 5 minutes, 1 hour and 1 day (``GRAINS``), keyed by stream,
mailbox provider, source and the sending IP / pool / vmta (``''`` where the source does not say).
The provider comes from the classifier's own table (``classifiers.providers``): the replying MX
first (a Google Workspace domain is Gmail), then the recipient's domain; ``other`` when neither
names one.

``sent`` is every message with a final disposition: delivered + bounced (final failures, an
expiry included). Deferrals are delivery attempts that will be retried, so they are not sent;
complaints, unsubscribes and drops (an ESP's own suppression) are not deliveries either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Final

from classifiers.providers import detect_provider
from events.model import DeliveryKey, Event, EventKind

__all__ = [
    "COUNTERS",
    "GRAINS",
    "KEY_COLUMNS",
    "MAIL_SOURCE",
    "MAX_AHEAD",
    "OTHER_PROVIDER",
    "RATES",
    "Occurrence",
    "bucket_start",
    "delivery_occurrence",
    "event_occurrence",
    "mail_occurrence",
    "provider_of",
    "rates_of",
]

COUNTERS: Final = (
    "sent",
    "delivered",
    "bounced",
    "hard",
    "soft",
    "policy",
    "expired",
    "deferred",
    "complaint",
    "unsubscribe",
    "dropped",
)
# Dimensions of a bucket (beside its grain and start), and the longest value each column keeps.
KEY_COLUMNS: Final[dict[str, int]] = {
    "stream": 64,
    "provider": 32,
    "source": 16,
    "ip": 45,
    "pool": 64,
    "vmta": 64,
}
GRAINS: Final[dict[str, timedelta]] = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
OTHER_PROVIDER: Final = "other"
# Bounces and complaints that arrive as mail (the SMTP sink).
MAIL_SOURCE: Final = "mail"

# rate -> (numerator, denominator counters); a rate with a zero denominator is None.
RATES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "delivery_rate": ("delivered", ("sent",)),
    "bounce_rate": ("bounced", ("sent",)),
    "hard_rate": ("hard", ("sent",)),
    "soft_rate": ("soft", ("sent",)),
    "policy_rate": ("policy", ("sent",)),
    # Share of delivery attempts that were deferred (a message retried 3 times counts 3).
    "deferral_rate": ("deferred", ("deferred", "sent")),
    # Per delivered message, as the mailbox providers measure it (Gmail's 0.1 % spam rate).
    "complaint_rate": ("complaint", ("delivered",)),
    "unsubscribe_rate": ("unsubscribe", ("delivered",)),
}

_BOUNCE_OUTCOMES: Final = frozenset({"hard", "soft", "policy"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# A clock far ahead of ours must not create buckets in the future.
MAX_AHEAD: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One thing that happened to one recipient, with the counters it adds one to."""

    time: datetime
    counters: tuple[str, ...]
    provider: str
    stream: str = ""
    source: str = ""
    ip: str = ""
    pool: str = ""
    vmta: str = ""

    def key(self) -> tuple[str, str, str, str, str, str]:
        """The bucket dimensions, in ``KEY_COLUMNS`` order, each cut to its column's size."""
        return _clean_key(self.stream, self.provider, self.source, self.ip, self.pool, self.vmta)


@lru_cache(maxsize=4096)
def _clean_key(*values: str) -> tuple[str, str, str, str, str, str]:
    # PostgreSQL refuses NUL in text and values longer than the column.
    return tuple(  # type: ignore[return-value]
        v.replace("\x00", "")[:size] for v, size in zip(values, KEY_COLUMNS.values(), strict=True)
    )


def bucket_start(time: datetime, grain: str) -> datetime:
    """The start of the ``grain`` bucket holding ``time`` (UTC; buckets align on the epoch)."""
    since_epoch = time - _EPOCH
    return _EPOCH + since_epoch - since_epoch % GRAINS[grain]


def provider_of(recipient: str | None, remote_mta: str | None = None) -> str:
    """The mailbox provider, from the classifier's table: the replying MX, else the domain."""
    return _provider(recipient.rpartition("@")[2] if recipient else None, remote_mta)


@lru_cache(maxsize=8192)
def _provider(domain: str | None, remote_mta: str | None) -> str:
    return detect_provider(remote_mta=remote_mta, recipient_domain=domain) or OTHER_PROVIDER


def _bounce_counters(outcome: str | None, *, expired: bool = False) -> tuple[str, ...]:
    counters: tuple[str, ...] = ("sent", "bounced", "expired") if expired else ("sent", "bounced")
    if outcome is not None and outcome in _BOUNCE_OUTCOMES:
        counters = (*counters, outcome)
    return counters


def _event_counters(event: Event) -> tuple[str, ...]:
    kind = event.kind
    if kind is EventKind.DELIVERED:
        return ("sent", "delivered")
    if kind is EventKind.BOUNCE:
        return _bounce_counters(event.outcome)
    if kind is EventKind.EXPIRED:
        return _bounce_counters(event.outcome, expired=True)
    if kind is EventKind.DEFERRED:
        return ("deferred",)
    if kind is EventKind.COMPLAINT:
        # A "not-spam" report is classified none: it is no complaint.
        return ("complaint",) if event.outcome == "complaint" else ()
    if kind is EventKind.UNSUBSCRIBE:
        return ("unsubscribe",)
    return ("dropped",)


def _when(time: datetime | None, now: datetime) -> datetime:
    if time is None or time > now + MAX_AHEAD:
        return now
    return time


def event_occurrence(event: Event, now: datetime) -> Occurrence | None:
    """What an MTA log record or an ESP event adds to the rates (None: nothing)."""
    counters = _event_counters(event)
    if not counters:
        return None
    return Occurrence(
        time=_when(event.time, now),
        counters=counters,
        provider=provider_of(event.recipient, event.remote_mta),
        stream=event.stream or "",
        source=event.source.value,
        ip=event.ip or "",
        pool=event.pool or "",
        vmta=event.vmta or "",
    )


_DELIVERY_COUNTERS: Final = ("sent", "delivered")


def delivery_occurrence(key: DeliveryKey, now: datetime) -> Occurrence:
    """What a delivery counted by its key (``events.DeliveryKey``) adds: what its ``Event``
    would (``event_occurrence``), the provider looked up once per key."""
    source, time, domain, remote_mta, stream, ip, pool, vmta = key
    return Occurrence(
        time=_when(time, now),
        counters=_DELIVERY_COUNTERS,
        provider=_provider(domain or None, remote_mta),
        stream=stream or "",
        source=source.value,
        ip=ip or "",
        pool=pool or "",
        vmta=vmta or "",
    )


# Event kinds the mail policy (app.feedback.planner) records, and what each counts. Unverified
# reports (a forged bounce may name anyone) and complaints of other feedback types count nothing.
_MAIL_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "delay": ("deferred",),
    "complaint": ("complaint",),
    "unsubscribe": ("unsubscribe",),
}


def mail_occurrence(
    *,
    kind: str,
    outcome: str | None,
    address: str,
    stream: str | None,
    remote_mta: str | None,
    now: datetime,
) -> Occurrence | None:
    """What a bounce or complaint that arrived as mail adds to the rates (None: nothing).

    ``kind`` is the kind of the history event the policy writes (``bounce``, ``policy_block``,
    ``delay``, ``complaint``, ``unsubscribe``, ...)."""
    if kind in ("bounce", "policy_block"):
        counters = _bounce_counters(outcome)
    else:
        counters = _MAIL_KINDS.get(kind, ())
    if not counters:
        return None
    return Occurrence(
        time=now,
        counters=counters,
        provider=provider_of(address, remote_mta if isinstance(remote_mta, str) else None),
        stream=stream or "",
        source=MAIL_SOURCE,
    )


def rates_of(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Every rate of ``RATES`` over ``counts`` (None where its denominator is zero)."""
    out: dict[str, float | None] = {}
    for name, (numerator, denominator) in RATES.items():
        total = sum(counts.get(c, 0) for c in denominator)
        out[name] = counts.get(numerator, 0) / total if total else None
    return out
