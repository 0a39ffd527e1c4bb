"""The suppression list: who must not be mailed, in which scope, and why.

Owns the ``suppressions`` table and the events and audit entries written with it. ``merge`` states
the never-weaken rule and when an entry is active (once, for Python and SQL); ``model`` the
requests, filters and answers; ``repository`` all SQL; ``replica`` the cache upkeep; ``lookup``
the pre-send check (the hot path); ``service`` writes and support reads.

May import: ``app.db``, ``app.models``, ``app.cache``, ``app.addresses``, ``app.errors``,
``app.streams``, ``app.metrics`` and the pure packages. Never the HTTP layer, the CLI or the
container.
"""

from app.suppression.merge import STRENGTH, merge_into
from app.suppression.model import (
    REASON_RE,
    SUPPRESSING_OUTCOMES,
    SuppressionFilter,
    SuppressRequest,
    SuppressResult,
    list_key,
    normalise_or_422,
    parse_since,
    row_to_dict,
    scope_for,
)
from app.suppression.service import SuppressionService

__all__ = [
    "REASON_RE",
    "STRENGTH",
    "SUPPRESSING_OUTCOMES",
    "SuppressRequest",
    "SuppressResult",
    "SuppressionFilter",
    "SuppressionService",
    "list_key",
    "merge_into",
    "normalise_or_422",
    "parse_since",
    "row_to_dict",
    "scope_for",
]
