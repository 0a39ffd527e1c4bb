"""Field readers shared by the event parsers: times, addresses, SMTP replies, plain values."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from dsn.address import normalise_address

__all__ = [
    "address",
    "diagnostic",
    "obj",
    "parse_reply",
    "parse_time",
    "status_of",
    "text",
    "to_int",
]

_REPLY: Final = re.compile(r"^\s*([245]\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?\b")
_STATUS: Final = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$|\()")
_PLAIN_ADDRESS: Final = re.compile(r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@[a-z0-9-]+(?:\.[a-z0-9-]+)+")
_NUMBER: Final = re.compile(r"^\d{9,11}(?:\.\d+)?$")
_OFFSET: Final = re.compile(r"([+-]\d\d)(\d\d)$")
# Times before 2000 or after 2100 are a field read wrongly, not a real event.
_EARLIEST: Final = 946684800.0
_LATEST: Final = 4102444800.0


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        return _parse_time_text(value)
    return _parse_time(value)


@lru_cache(maxsize=4096)
def _parse_time_text(value: str) -> datetime | None:
    # A log's lines share their seconds: a thousand events can carry one stamp.
    return _parse_time(value)


def _parse_time(value: Any) -> datetime | None:
    """A Unix time (seconds, possibly fractional, or milliseconds) or an ISO 8601 / RFC 3339 time.

    Naive times are taken as UTC. Returns None for anything else (the caller decides whether a
    missing time is an error).
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    raw = str(value).strip()
    if _NUMBER.match(raw) or (raw.isdigit() and len(raw) == 13):
        return _from_epoch(float(raw))
    # Python 3.11's fromisoformat takes "Z" and most RFC 3339 forms; "+0000" needs a colon, and
    # more than six fraction digits (.NET's seven in Postmark) must be cut.
    raw = raw.replace(" ", "T", 1) if len(raw) > 10 and raw[10] == " " else raw
    raw = _OFFSET.sub(r"\1:\2", raw)
    raw = re.sub(r"(\.\d{6})\d+", r"\1", raw)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _from_epoch(seconds: float) -> datetime | None:
    if seconds > _LATEST * 10:  # milliseconds
        seconds /= 1000.0
    if not _EARLIEST <= seconds <= _LATEST:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def address(value: Any) -> str | None:
    """A bare lower-cased address from a field (``<a@b.example>``, ``rfc822;a@b.example``)."""
    if not isinstance(value, str) or not value:
        return None
    lowered = value.lower()
    if _PLAIN_ADDRESS.fullmatch(lowered):
        return lowered  # the common case, as normalise_address would return it, without its work
    return normalise_address(value)


def text(value: Any) -> str | None:
    """A non-empty string field, or None (numbers are kept as their text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return None


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def status_of(value: Any) -> str | None:
    """An RFC 3463 enhanced status ``c.s.d`` from a field, or None."""
    raw = text(value)
    if raw is None:
        return None
    # "smtp; 5.1.1", PowerMTA's "5.1.1 (bad destination mailbox address)"
    raw = raw.split(";")[-1].strip() if ";" in raw else raw
    match = _STATUS.match(raw)
    return match.group(1) if match is not None else None


def parse_reply(value: str | None) -> tuple[int | None, str | None]:
    """The reply code and enhanced status at the start of an SMTP reply (``550 5.1.1 ...``)."""
    if not value:
        return None, None
    match = _REPLY.match(value)
    if match is None:
        return None, None
    return int(match.group(1)), match.group(2)


def obj(value: Any) -> dict[str, Any]:
    """A JSON object field, or an empty one when absent or of another type."""
    return value if isinstance(value, dict) else {}


def diagnostic(value: Any) -> str | None:
    """A reply text without its RFC 3464 diagnostic-type prefix (``smtp;550 ...``)."""
    raw = text(value)
    if raw is None:
        return None
    head, sep, tail = raw.partition(";")
    if sep and head.strip().lower() in ("smtp", "x-unix", "x-local", "x-postfix"):
        return tail.strip() or None
    return raw
