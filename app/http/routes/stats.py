"""Deliverability statistics: counts and rates per bucket and key (app.rates)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.errors import InvalidInput
from app.http.deps import ApiRoute, ReadKey, ServicesDep
from app.http.responses import JSONBytes
from app.http.schemas import SINCE_FILTER, error_responses
from app.rates import StatsQuery, query_stats
from app.suppression import parse_since

router = APIRouter(prefix="/v1/stats", tags=["stats"], route_class=ApiRoute)


class RateCounts(BaseModel):
    sent: int = Field(description="delivered + bounced: messages with a final disposition")
    delivered: int
    bounced: int = Field(description="final failures (hard, soft, policy or unclassified)")
    hard: int
    soft: int
    policy: int
    expired: int = Field(description="bounced because the MTA gave up retrying")
    deferred: int = Field(description="delivery attempts that will be retried (not in sent)")
    complaint: int
    unsubscribe: int
    dropped: int = Field(description="not sent: the ESP's own suppression list")


class Rates(BaseModel):
    """Each rate is null where its denominator is zero."""

    delivery_rate: float | None = Field(description="delivered / sent")
    bounce_rate: float | None = Field(description="bounced / sent")
    hard_rate: float | None = Field(description="hard / sent")
    soft_rate: float | None = Field(description="soft / sent")
    policy_rate: float | None = Field(description="policy / sent")
    deferral_rate: float | None = Field(description="deferred / (deferred + sent)")
    complaint_rate: float | None = Field(description="complaint / delivered")
    unsubscribe_rate: float | None = Field(description="unsubscribe / delivered")


class StatsGroup(BaseModel):
    key: str = Field(description="the value of `by` ('' where the source did not say)")
    counts: RateCounts
    rates: Rates


class StatsPoint(StatsGroup):
    bucket: datetime = Field(description="start of the bucket (UTC)")


class Stats(BaseModel):
    by: str
    granularity: str
    since: datetime = Field(description="start of the first bucket asked for")
    until: datetime
    groups: list[StatsGroup] = Field(description="per key, over the whole window")
    series: list[StatsPoint] = Field(description="per bucket and key, oldest first")


TimeQuery = Annotated[str | None, Query(), SINCE_FILTER]


@router.get("", response_model=Stats, responses=error_responses(401, 403, 422, 503))
async def stats(
    services: ServicesDep,
    _key: ReadKey,
    by: Literal["provider", "stream", "source", "ip", "pool", "vmta"] = "provider",
    granularity: Literal["5m", "1h", "1d"] = "1h",
    since: TimeQuery = None,
    until: TimeQuery = None,
) -> JSONBytes:
    """Counts and rates of delivery outcomes in [since, until) (default: the last 24 hours), per
    value of ``by`` over the window and per bucket of ``granularity``. 5-minute buckets are kept
    ``STOPLIST_RATES_5MIN_DAYS``, hourly ``STOPLIST_RATES_HOURLY_DAYS``, daily
    ``STOPLIST_RATES_DAILY_DAYS``; at most 2016 buckets per query."""
    try:
        query = StatsQuery.make(by, granularity, parse_since(since), parse_since(until, "until"))
    except (OverflowError, ValueError) as exc:  # a date at the edge of the calendar
        raise InvalidInput(f"since/until out of range: {exc}") from None
    return JSONBytes((await query_stats(services.db, query)).to_json())
