"""Complaint mail (RFC 5965 Abuse Reporting Format, RFC 6591 auth-failure reports and the
feedback loops' variants of them) -> ComplaintReport.

Pure: standard library only, no I/O, synchronous.
"""

from arf.model import (
    ArfParseError,
    ComplaintReport,
    RecoveredRecipient,
    normalise_feedback_type,
    outcome_for,
)
from arf.parser import parse_bytes, parse_report
from arf.recipients import is_redacted

__all__ = [
    "ArfParseError",
    "ComplaintReport",
    "RecoveredRecipient",
    "is_redacted",
    "normalise_feedback_type",
    "outcome_for",
    "parse_bytes",
    "parse_report",
]
