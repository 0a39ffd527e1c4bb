"""Pydantic models of the HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.streams import OPTIONAL_STREAM_PATTERN
from app.suppression import REASON_RE, STRENGTH

Outcome = Literal["hard", "soft", "complaint", "unsubscribe", "manual"]

# What the service's own validation accepts, stated in the document so clients (and schemathesis)
# know it. Empty stream = global (``scope_for``); a stream name otherwise (``STREAM_RE``).
STREAM_PATTERN = OPTIONAL_STREAM_PATTERN
REASON_PATTERN = REASON_RE.pattern
# PostgreSQL text and jsonb cannot hold U+0000: free text with one is refused (422), not stored.
NO_NUL_PATTERN = r"^[^\u0000]*$"
CURSOR_PATTERN = r"^[0-9]{0,18}$"  # a row id (bigint); empty = first page

# Query filters the routes validate themselves (with a message naming the value, as the list and
# the export always have), documented in OpenAPI with what that validation accepts.
OUTCOME_FILTER = WithJsonSchema({"type": "string", "enum": list(STRENGTH)})
REASON_FILTER = WithJsonSchema({"type": "string", "pattern": REASON_PATTERN})
STREAM_FILTER = WithJsonSchema({"type": "string", "pattern": STREAM_PATTERN})
DOMAIN_FILTER = WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255})
SINCE_FILTER = WithJsonSchema({"type": "string", "format": "date-time"})
CURSOR_FILTER = WithJsonSchema({"type": "string", "pattern": CURSOR_PATTERN})

# The filters the list and the export share, as query parameters.
OutcomeQuery = Annotated[str | None, Query(), OUTCOME_FILTER]
ReasonQuery = Annotated[str | None, Query(), REASON_FILTER]
StreamQuery = Annotated[str | None, Query(description="A stream name, or global"), STREAM_FILTER]
DomainQuery = Annotated[str | None, Query(), DOMAIN_FILTER]
SinceQuery = Annotated[
    str | None, Query(description="Last seen at or after (ISO 8601)"), SINCE_FILTER
]


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable error code")
    detail: Any = Field(description="What was wrong, naming the offending value")


_ERROR_TEXT: dict[int, str] = {
    400: "Malformed input",
    401: "No API key, or an unknown or revoked one",
    403: "The key's scope does not allow this",
    404: "Not found",
    410: "Gone",
    413: "Body over 4 MiB",
    422: "Invalid input: the detail names the value and what is wrong with it",
    503: "Storage unavailable: retry later (never answered as if nothing were suppressed)",
}
_CHALLENGE_HEADER = {
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}


def error_responses(*codes: int, **notes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each an :class:`ErrorBody`; ``notes`` override a
    description by status (``e404="No signing keys configured"``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": notes.get(f"e{code}", _ERROR_TEXT[code]),
        }
        if code == 401:
            entry["headers"] = _CHALLENGE_HEADER
        out[code] = entry
    return out


class CheckResult(BaseModel):
    address: str = Field(description="Normalised address (or the input, when invalid)")
    suppressed: bool | None = Field(description="null when the address is invalid")
    outcome: str | None = None
    reason: str | None = None
    scope: str | None = Field(default=None, description="global or the stream that blocks it")
    since: datetime | None = None
    expires_at: datetime | None = None
    verified: bool | None = Field(
        default=None, description="The suppression came from a verified (signed) bounce/report"
    )
    source: str | None = None
    error: str | None = Field(default=None, description="Why the address is invalid")


class BatchCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Items are not typed: a non-string is answered in its slot ("not a string") like an invalid
    # address, rather than failing the whole batch.
    addresses: list[Any] = Field(
        description="Up to STOPLIST_MAX_BATCH (default 10,000) address strings; anything that is "
        "not a valid address (or not a string) is answered in its slot with an error"
    )
    stream: str | None = Field(
        default=None, pattern=STREAM_PATTERN, description="Sending stream; omit for global only"
    )


class BatchCheckResponse(BaseModel):
    results: list[CheckResult]


class SuppressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="manual", pattern=REASON_PATTERN)
    outcome: Outcome = "manual"
    stream: str | None = Field(
        default=None, pattern=STREAM_PATTERN, description="Omit for a global suppression"
    )
    expires_at: datetime | None = Field(
        default=None, description="Omit for permanent; must be in the future"
    )
    note: str | None = Field(default=None, max_length=2000, pattern=NO_NUL_PATTERN)


class SuppressionOut(BaseModel):
    address: str
    domain: str
    scope: str
    outcome: str
    reason: str
    source: str
    verified: bool
    first_seen: datetime
    last_seen: datetime
    expires_at: datetime | None
    hit_count: int
    removed_at: datetime | None
    active: bool
    detail: dict[str, Any]


class SuppressResponse(BaseModel):
    created: bool
    changed: bool = Field(description="False when an existing stronger entry was kept as it was")
    suppression: SuppressionOut


class EventOut(BaseModel):
    id: int
    created_at: datetime
    kind: str
    scope: str
    outcome: str | None
    reason: str | None
    rule_id: str | None
    status: str | None
    reply_code: int | None
    diagnostic: str | None
    source: str
    actor: str | None
    verified: bool
    message_id: int | None
    detail: dict[str, Any]


class AddressDetail(BaseModel):
    address: str
    suppressed_globally: bool
    suppressions: list[SuppressionOut]
    events: list[EventOut]


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")


class UnsuppressResponse(BaseModel):
    address: str
    removed: list[dict[str, str]]


class RuleExplanation(BaseModel):
    id: str
    file: str | None = None
    outcome: str | None = None
    reason: str | None = None
    matches: dict[str, Any] = Field(default_factory=dict)
    matched_text: list[str] = Field(default_factory=list)
    source: str | None = None
    note: str = ""
    examples: list[str] = Field(default_factory=list)


class MessageExplanation(BaseModel):
    """``stoplist explain`` for a stored message (see dsn/explain.py)."""

    message_id: int
    kind: str
    why: str
    mta: str | None
    parsers_declined: list[str]
    stream: str | None = None
    original_message_id: str | None = None
    recipients: list[dict[str, Any]]


class HistoryItem(BaseModel):
    type: Literal["event", "audit"]
    id: int
    created_at: datetime
    kind: str | None = None
    action: str | None = None
    scope: str | None = None
    outcome: str | None = None
    reason: str | None = None
    rule_id: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    source: str | None = None
    actor: str | None = None
    verified: bool | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    explanation: RuleExplanation | None = Field(
        default=None,
        description="Events: the rule behind rule_id (its file, what it matches, the text that "
        "matched the diagnostic, its source and examples); null for audit entries",
    )


class HistoryResponse(BaseModel):
    address: str
    items: list[HistoryItem]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    database: str
    cache: str
    cache_kind: str
