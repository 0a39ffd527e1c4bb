"""Bounce analysis: RFC 3464 delivery status notifications and the formats real MTAs send.

``analyse_message(raw)`` returns a ``MessageAnalysis`` with one classified
``RecipientResult`` per recipient the message reports on.
"""

from dsn.analysis import analyse_message
from dsn.errors import ParseError
from dsn.model import (
    DEFAULT_OPTIONS,
    MAX_RECIPIENTS,
    AnalysisOptions,
    MessageAnalysis,
    RecipientResult,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "MAX_RECIPIENTS",
    "AnalysisOptions",
    "MessageAnalysis",
    "ParseError",
    "RecipientResult",
    "analyse_message",
]
