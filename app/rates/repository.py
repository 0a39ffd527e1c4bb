"""Reads of the rate buckets (``/v1/stats``, the Prometheus gauges) and their retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from sqlalchemy import delete, func, select

from app import metrics
from app.db import Database
from app.errors import InvalidInput
from app.models import RateCount, utcnow
from app.rates.model import COUNTERS, GRAINS, bucket_start, rates_of
from app.rates.recorder import RATES_TABLE
from app.settings import Settings

__all__ = ["BY_DIMENSIONS", "StatsQuery", "StatsResult", "prune", "query_stats", "refresh_gauges"]

By = Literal["provider", "stream", "source", "ip", "pool", "vmta"]
Granularity = Literal["5m", "1h", "1d"]
BY_DIMENSIONS: Final[tuple[str, ...]] = ("provider", "stream", "source", "ip", "pool", "vmta")
# A query answers at most this many buckets per key (a week of 5-minute buckets).
MAX_BUCKETS: Final = 2016
# The gauges cover the 12 latest 5-minute buckets, the current (partial) one included.
GAUGE_WINDOW: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """A validated ``/v1/stats`` question: buckets of ``granularity`` in [since, until)."""

    by: By
    granularity: Granularity
    since: datetime
    until: datetime

    @classmethod
    def make(
        cls,
        by: By,
        granularity: Granularity,
        since: datetime | None,
        until: datetime | None,
        now: datetime | None = None,
    ) -> StatsQuery:
        """Defaults: until now, since 24 hours before until. ``since`` is floored to its bucket
        and raised to at most ``MAX_BUCKETS`` buckets before ``until``; since >= until is an
        empty window."""
        if (since is not None and since.tzinfo is None) or (
            until is not None and until.tzinfo is None
        ):
            raise InvalidInput("since and until need a time zone (e.g. 2026-12-06T10:00:00Z)")
        grain = GRAINS[granularity]
        until = until or now or utcnow()
        since = since or _minus(until, timedelta(days=1))
        since = max(bucket_start(since, granularity), _minus(until, grain * MAX_BUCKETS))
        return cls(by, granularity, since, until)


def _minus(time: datetime, delta: timedelta) -> datetime:
    """``time - delta``, or the first moment of the calendar where that is before it."""
    try:
        return time - delta
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class StatsResult:
    """Counts per key over the whole window (``totals``) and per bucket (``series``)."""

    query: StatsQuery
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    series: list[tuple[datetime, str, dict[str, int]]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        q = self.query
        return {
            "by": q.by,
            "granularity": q.granularity,
            "since": q.since,
            "until": q.until,
            "groups": [
                {"key": key, "counts": counts, "rates": rates_of(counts)}
                for key, counts in sorted(self.totals.items())
            ],
            "series": [
                {"bucket": bucket, "key": key, "counts": counts, "rates": rates_of(counts)}
                for bucket, key, counts in self.series
            ],
        }


_SUMS = [func.sum(RATES_TABLE.c[c]) for c in COUNTERS]


async def query_stats(db: Database, q: StatsQuery) -> StatsResult:
    """The counts of ``q``'s window, grouped by bucket and by ``q.by``."""
    dim = RATES_TABLE.c[q.by]
    stmt = (
        select(RateCount.bucket, dim, *_SUMS)
        .where(
            RateCount.grain == q.granularity,
            RateCount.bucket >= q.since,
            RateCount.bucket < q.until,
        )
        .group_by(RateCount.bucket, dim)
        .order_by(RateCount.bucket, dim)
    )
    result = StatsResult(q)
    async with db.read() as s:
        rows = (await s.execute(stmt)).all()
    for bucket, key, *sums in rows:
        counts = {c: int(n or 0) for c, n in zip(COUNTERS, sums, strict=True)}
        result.series.append((bucket, str(key), counts))
        total = result.totals.setdefault(str(key), dict.fromkeys(COUNTERS, 0))
        for c, n in counts.items():
            total[c] += n
    return result


def retention(settings: Settings) -> dict[str, timedelta]:
    """How long buckets of each grain are kept."""
    return {
        "5m": timedelta(days=settings.rates_5min_days),
        "1h": timedelta(days=settings.rates_hourly_days),
        "1d": timedelta(days=settings.rates_daily_days),
    }


async def prune(db: Database, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Delete the buckets past their grain's retention; rows deleted per grain."""
    now = now or utcnow()
    deleted: dict[str, int] = {}
    async with db.write() as s:
        for grain, keep in retention(settings).items():
            stmt = delete(RateCount).where(RateCount.grain == grain, RateCount.bucket < now - keep)
            deleted[grain] = int((await s.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
    return deleted


async def refresh_gauges(db: Database, now: datetime | None = None) -> None:
    """Set the last hour's counts and rates per provider and stream (``app.metrics``).

    Series of a provider and stream with nothing in the last hour are removed, not left at their
    last value."""
    start = bucket_start((now or utcnow()) - GAUGE_WINDOW, "5m") + GRAINS["5m"]
    stmt = (
        select(RateCount.provider, RateCount.stream, *_SUMS)
        .where(RateCount.grain == "5m", RateCount.bucket >= start)
        .group_by(RateCount.provider, RateCount.stream)
    )
    async with db.read() as s:
        rows = (await s.execute(stmt)).all()
    metrics.RATE_LAST_HOUR.clear()
    metrics.RATE_COUNTS_LAST_HOUR.clear()
    for provider, stream, *sums in rows:
        counts = {c: int(n or 0) for c, n in zip(COUNTERS, sums, strict=True)}
        for counter, n in counts.items():
            metrics.RATE_COUNTS_LAST_HOUR.labels(counter, provider, stream).set(n)
        for rate, value in rates_of(counts).items():
            if value is not None:
                metrics.RATE_LAST_HOUR.labels(rate, provider, stream).set(value)
