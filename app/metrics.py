"""Prometheus metrics (exposed at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHECK_REQUESTS = Counter("stoplist_check_requests_total", "Pre-send check requests", ["mode"])
CHECK_ADDRESSES = Counter("stoplist_check_addresses_total", "Addresses checked")
CHECK_HITS = Counter("stoplist_check_hits_total", "Checked addresses found suppressed")
CHECK_LATENCY = Histogram(
    "stoplist_check_latency_seconds",
    "Pre-send check latency",
    ["mode"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CHECK_UNAVAILABLE = Counter(
    "stoplist_check_unavailable_total", "Checks answered 503 because cache and database failed"
)
CACHE_FALLBACKS = Counter(
    "stoplist_cache_fallbacks_total",
    "Checks answered from the database because the cache was cold, stale or unreachable",
    ["reason"],
)
CACHE_WRITE_FAILURES = Counter(
    "stoplist_cache_write_failures_total", "Write-throughs to the cache that failed"
)
CACHE_REBUILDS = Counter("stoplist_cache_rebuilds_total", "Completed cache rebuilds")
CACHE_REPAIRS = Counter(
    "stoplist_cache_repairs_total",
    "Failed write-throughs written again without a rebuild (the replica stayed ready)",
)
SUPPRESSIONS_WRITTEN = Counter(
    "stoplist_suppressions_written_total", "Suppression writes", ["outcome", "source"]
)
SUPPRESSIONS_ACTIVE = Gauge(
    "stoplist_suppressions", "Active suppressions by outcome (refreshed on scrape)", ["outcome"]
)
AUTH_FAILURES = Counter("stoplist_auth_failures_total", "Rejected API requests", ["status"])
SMTP_MESSAGES = Counter(
    "stoplist_smtp_messages_total",
    "Messages at the end of DATA, by what the sink answered",
    ["result"],  # accepted | duplicate | too_big | storage_timeout | storage_error
)
SMTP_REPLIES = Counter("stoplist_smtp_replies_total", "Final SMTP replies sent, by code", ["code"])
INTAKE_MESSAGES = Gauge(
    "stoplist_intake_messages",
    "Stored inbound messages not processed: pending (waiting or being processed) and failed "
    "(refreshed on scrape)",
    ["state"],
)
INTAKE_OLDEST_PENDING = Gauge(
    "stoplist_intake_oldest_pending_seconds",
    "Age of the oldest message waiting to be processed, 0 when none (refreshed on scrape)",
)
RATE_LAST_HOUR = Gauge(
    "stoplist_rate_last_hour",
    "Deliverability rates of the last hour per provider and stream (docs/events.md; refreshed on "
    "scrape): hard_rate = hard / sent, deferral_rate = deferred / (deferred + sent), "
    "complaint_rate = complaint / delivered, ...",
    ["rate", "provider", "stream"],
)
RATE_COUNTS_LAST_HOUR = Gauge(
    "stoplist_rate_counts_last_hour",
    "Deliverability counts of the last hour per provider and stream (refreshed on scrape)",
    ["counter", "provider", "stream"],
)
