"""Bulk CSV import and export of the suppression list (``docs/bulk.md``).

The import body is read with ``request.stream()`` and never held whole: it goes through
``app.bulk`` batch by batch, so it is exempt from the JSON body limit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, WithJsonSchema

from app import bulk
from app.http.deps import ApiRoute, ReadKey, ServicesDep, WriteKey
from app.http.responses import JSONBytes
from app.http.schemas import (
    REASON_PATTERN,
    STREAM_PATTERN,
    DomainQuery,
    OutcomeQuery,
    ReasonQuery,
    SinceQuery,
    StreamQuery,
    error_responses,
)
from app.suppression import parse_since

router = APIRouter(prefix="/v1/suppressions", tags=["bulk"], route_class=ApiRoute)

IMPORT_PATH = "/v1/suppressions/import"

_ERRORS = error_responses(401, 403, 422, 503)
_FORMAT = WithJsonSchema({"type": "string", "enum": ["auto", *bulk.PRESETS]})

_CSV_BODY = {"type": "string", "format": "binary"}


class RowProblem(BaseModel):
    line: int = Field(description="Physical line (1-based) where the row starts")
    value: str = Field(description="The offending cell")
    reason: str = Field(description="What is wrong with it")


class ImportSummaryOut(BaseModel):
    rows: int = Field(description="Data rows read (header and blank lines not counted)")
    inserted: int
    updated: int = Field(description="Existing entries made stronger (or replaced: overwrite)")
    unchanged: int = Field(description="Rows that changed nothing (already as strong or stronger)")
    skipped: int = Field(description="Valid rows whose expires_at has already passed")
    invalid: int
    errors: list[RowProblem] = Field(description="The first 100 invalid rows")
    dry_run: bool
    atomic: bool
    committed: bool = Field(description="False for a dry run or an atomic import with bad rows")
    format: str = Field(description="The preset used (detected from the header unless given)")
    duration_s: float


@router.post(
    "/import",
    response_model=ImportSummaryOut,
    responses=error_responses(
        401, 403, 422, 503, e422="Invalid options, an empty body, or a file without addresses"
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "CSV (optionally gzip: Content-Encoding or magic bytes), or a "
            "multipart/form-data upload with a `file` part.",
            "content": {
                "text/csv": {"schema": _CSV_BODY},
                "application/gzip": {"schema": _CSV_BODY},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": _CSV_BODY},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def import_suppressions(
    request: Request,
    services: ServicesDep,
    key: WriteKey,
    dry_run: Annotated[bool, Query(description="Validate and count; write nothing")] = False,
    atomic: Annotated[bool, Query(description="Any invalid row: write nothing")] = False,
    overwrite: Annotated[
        bool, Query(description="Replace existing entries even when that weakens them")
    ] = False,
    stream: Annotated[
        str | None,
        Query(description="Stream for rows without one (else global)"),
        WithJsonSchema({"type": "string", "pattern": STREAM_PATTERN}),
    ] = None,
    reason: Annotated[
        str | None,
        Query(description="Reason for rows without one (import)"),
        WithJsonSchema({"type": "string", "pattern": REASON_PATTERN}),
    ] = None,
    format: Annotated[
        str,
        Query(description="The file's layout (see docs/bulk.md); auto: from its header"),
        _FORMAT,
    ] = "auto",
) -> JSONBytes:
    """Import suppressions from CSV, streamed. Never weakens an entry unless `overwrite`;
    importing the same file twice changes nothing the second time."""
    options = bulk.ImportOptions(
        dry_run=dry_run,
        atomic=atomic,
        overwrite=overwrite,
        stream=stream,
        reason=reason,
        format=format,
        soft_days=services.settings.soft_suppression_days,
    )
    body = bulk.request_body(
        await bulk.non_empty(request.stream()),
        request.headers.get("content-type"),
        request.headers.get("content-encoding"),
    )
    summary = await bulk.import_csv(services.suppressions, body, options, actor=key.name)
    return JSONBytes(summary.as_dict())


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": _CSV_BODY}},
            "description": "address,outcome,reason,stream,expires_at,created_at,note",
        },
        **_ERRORS,
    },
)
async def export_suppressions(
    services: ServicesDep,
    _key: ReadKey,
    outcome: OutcomeQuery = None,
    reason: ReasonQuery = None,
    stream: StreamQuery = None,
    domain: DomainQuery = None,
    since: SinceQuery = None,
    hashed: Annotated[
        bool, Query(description="SHA-256 hex of each normalised address instead of it")
    ] = False,
) -> StreamingResponse:
    """Active suppressions as CSV, streamed, in the format the import reads."""
    flt = bulk.ExportFilter(
        outcome=outcome,
        reason=reason,
        stream=stream,
        domain=domain,
        since=parse_since(since),
        hashed=hashed,
    )
    return StreamingResponse(
        bulk.export_csv(services.suppressions, flt),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )
