"""Pydantic models of the HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["hard", "soft", "complaint", "unsubscribe", "manual"]


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable error code")
    detail: Any = Field(description="What was wrong, naming the offending value")


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
    addresses: list[str] = Field(description="Up to STOPLIST_MAX_BATCH (default 10,000) addresses")
    stream: str | None = Field(default=None, description="Sending stream; omit for global only")


class BatchCheckResponse(BaseModel):
    results: list[CheckResult]


class SuppressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="manual", pattern=r"^[a-z0-9][a-z0-9_]{0,47}$")
    outcome: Outcome = "manual"
    stream: str | None = Field(default=None, description="Omit for a global suppression")
    expires_at: datetime | None = Field(default=None, description="Omit for permanent")
    note: str | None = Field(default=None, max_length=2000)


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
