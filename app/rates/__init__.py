"""Deliverability rates: counts of sent, delivered, bounced (hard, soft, policy), deferred,
complained and unsubscribed per 5-minute, hourly and daily bucket, by stream, mailbox provider,
source and sending IP / pool / vmta; their retention, the ``/v1/stats`` query and the Prometheus
gauges of the last hour.

``model`` is pure (what is counted, what a rate is); ``recorder`` adds to the buckets inside a
caller's transaction; ``repository`` holds the reads and the retention. May import the pure
packages (classifiers, events), ``app.models``, ``app.db``, ``app.settings`` and ``app.metrics``;
nothing of the flows above.
"""

from app.rates.model import COUNTERS, GRAINS, RATES, Occurrence, mail_occurrence, rates_of
from app.rates.recorder import merge_deliveries, record_events, record_occurrences
from app.rates.repository import (
    BY_DIMENSIONS,
    StatsQuery,
    StatsResult,
    prune,
    query_stats,
    refresh_gauges,
)

__all__ = [
    "BY_DIMENSIONS",
    "COUNTERS",
    "GRAINS",
    "RATES",
    "Occurrence",
    "StatsQuery",
    "StatsResult",
    "mail_occurrence",
    "merge_deliveries",
    "prune",
    "query_stats",
    "rates_of",
    "record_events",
    "record_occurrences",
    "refresh_gauges",
]
