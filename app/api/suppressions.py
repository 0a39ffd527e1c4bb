"""Support staff's REST API: look up, add, list, unsuppress, history (with an audit trail)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import ReadKey, ServicesDep, WriteKey
from app.api.responses import JSONBytes
from app.api.schemas import (
    AddressDetail,
    ErrorBody,
    HistoryResponse,
    SuppressBody,
    SuppressionPage,
    SuppressResponse,
    UnsuppressResponse,
)
from app.auth import scope_allows
from app.errors import InvalidInput
from app.suppressions import SuppressionFilter, SuppressRequest, normalise_or_422, row_to_dict

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


@router.get("", response_model=SuppressionPage, responses=_ERRORS)
async def list_suppressions(
    services: ServicesDep,
    _key: ReadKey,
    outcome: str | None = None,
    reason: str | None = None,
    stream: Annotated[str | None, Query(description="A stream name, or global")] = None,
    domain: str | None = None,
    since: Annotated[datetime | None, Query(description="Last seen at or after")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """Active suppressions, oldest first, in pages."""
    after: int | None = None
    if cursor:
        if not cursor.isdigit():
            raise InvalidInput(f"cursor {cursor!r}: use next_cursor from the previous page")
        after = int(cursor)
    flt = SuppressionFilter(
        outcome=outcome, reason=reason, stream=stream, domain=domain, since=since
    )
    items, nxt = await services.suppressions.list(flt, cursor=after, limit=limit)
    return JSONBytes({"items": items, "next_cursor": str(nxt) if nxt is not None else None})


@router.get("/{address:path}/history", response_model=HistoryResponse, responses=_ERRORS)
async def address_history(
    services: ServicesDep,
    _key: ReadKey,
    address: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """Events and audit entries for an address, newest first."""
    items = await services.suppressions.history(address, limit=limit)
    return JSONBytes({"address": normalise_or_422(address), "items": items})


@router.get("/{address:path}", response_model=AddressDetail, responses=_ERRORS)
async def get_suppression(services: ServicesDep, _key: ReadKey, address: str) -> JSONBytes:
    """Every scope of an address (active or not) and its recent events: "why is this blocked?"."""
    return JSONBytes(await services.suppressions.get(address))


@router.put("/{address:path}", response_model=SuppressResponse, responses=_ERRORS)
async def put_suppression(
    services: ServicesDep, key: WriteKey, address: str, body: SuppressBody
) -> JSONBytes:
    """Suppress an address by hand. Never weakens an existing entry."""
    result = await services.suppressions.suppress(
        SuppressRequest(
            address=address,
            outcome=body.outcome,
            reason=body.reason,
            source="api",
            stream=body.stream,
            expires_at=body.expires_at,
            actor=key.name,
            note=body.note,
            event_kind="manual_suppress",
        )
    )
    return JSONBytes(
        {
            "created": result.created,
            "changed": result.changed,
            "suppression": row_to_dict(result.row),
        }
    )


@router.delete("/{address:path}", response_model=UnsuppressResponse, responses=_ERRORS)
async def delete_suppression(
    services: ServicesDep,
    key: WriteKey,
    address: str,
    reason: Annotated[str, Query(min_length=3, max_length=2000, description="Why (kept)")],
    stream: Annotated[
        str | None, Query(description="Only this scope (a stream or global); omit for all")
    ] = None,
    force: Annotated[bool, Query(description="Needed (with admin) to remove a complaint")] = False,
) -> JSONBytes:
    """Unsuppress with a reason; the audit log names the key. Complaints need admin + force."""
    removed = await services.suppressions.unsuppress(
        address,
        stream=stream,
        all_scopes=stream is None,
        reason=reason,
        actor=key.name,
        may_remove_complaints=force and scope_allows(key.scope, "admin"),
    )
    return JSONBytes({"address": normalise_or_422(address), "removed": removed})
