"""Support staff's REST API: look up, add, list, unsuppress, history (with an audit trail)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.convertors import Convertor, register_url_convertor

from app.container import Services
from app.errors import InvalidInput
from app.http.deps import ApiRoute, ReadKey, ServicesDep, WriteKey
from app.http.responses import JSONBytes
from app.http.schemas import (
    CURSOR_FILTER,
    STREAM_PATTERN,
    AddressDetail,
    DomainQuery,
    HistoryResponse,
    OutcomeQuery,
    ReasonQuery,
    SinceQuery,
    StreamQuery,
    SuppressBody,
    SuppressionPage,
    SuppressResponse,
    UnsuppressResponse,
    error_responses,
)
from app.keys import KeyInfo, scope_allows
from app.suppression import (
    SuppressionFilter,
    SuppressRequest,
    normalise_or_422,
    parse_since,
    row_to_dict,
)


class AddressConvertor(Convertor[str]):
    """``{address:address}``: the rest of the path, line breaks included, unless it ends in
    ``/history`` (no address does: it ends in its domain) or is ``import`` / ``export`` (the bulk
    routes).

    Starlette's ``path`` convertor (``.*``) stops at a line break, so an address holding one
    missed every route and got the router's bare 404 instead of the 422 naming it; ``PUT
    …/x@example.com/history`` reached ``PUT /{address}`` with the address ``x@example.com/history``
    (422) instead of 405, and ``PUT …/export`` was a suppression of the address ``export`` (all
    found by schemathesis)."""

    regex = r"(?!(?:import|export)$)(?![\s\S]*/history$)[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class AddressThenConvertor(AddressConvertor):
    """``{address:address_then}``: any text, line breaks included, before a fixed suffix such as
    ``/history``."""

    regex = r"[\s\S]*"


register_url_convertor("address", AddressConvertor())
register_url_convertor("address_then", AddressThenConvertor())

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], route_class=ApiRoute)

_ERRORS = error_responses(401, 403, 404, 422, 503)
_WRITE_ERRORS = error_responses(401, 403, 404, 413, 422, 503)

Address = Annotated[
    str,
    Path(
        min_length=1,
        max_length=1000,
        description="Any form (display name, angle brackets, any case, Unicode domain); normalised",
        examples=["jane@example.com", "Jane Doe <Jane.Doe@Bücher.example>", '"a b"@example.org'],
    ),
]
# At least one character that is not white space, and no NUL (PostgreSQL cannot store one).
WHY_PATTERN = r"^[\s\u001c-\u001f]*[^\s\u0000\u001c-\u001f][^\u0000]*$"
# The query of a lift (an address's or a domain's): why, which scope, and the complaint override.
LiftReason = Annotated[
    str, Query(min_length=3, max_length=2000, pattern=WHY_PATTERN, description="Why (kept)")
]
LiftScope = Annotated[
    str | None,
    Query(
        pattern=STREAM_PATTERN,
        description="Only this scope (a stream or global; empty = global); omit for all",
    ),
]
LiftForce = Annotated[bool, Query(description="Needed (with admin) to remove a complaint")]


@router.get("", response_model=SuppressionPage, responses=_ERRORS)
async def list_suppressions(
    services: ServicesDep,
    _key: ReadKey,
    outcome: OutcomeQuery = None,
    reason: ReasonQuery = None,
    stream: StreamQuery = None,
    domain: DomainQuery = None,
    since: SinceQuery = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page"), CURSOR_FILTER
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """Active suppressions, oldest first, in pages."""
    after: int | None = None
    if cursor:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses (was a 500), and
        # the id is a bigint (a longer one overflowed the database driver: 500 or 503).
        if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise InvalidInput(f"cursor {cursor!r}: use next_cursor from the previous page")
        after = int(cursor)
    flt = SuppressionFilter(
        outcome=outcome, reason=reason, stream=stream, domain=domain, since=parse_since(since)
    )
    items, nxt = await services.suppressions.list(flt, cursor=after, limit=limit)
    return JSONBytes({"items": items, "next_cursor": str(nxt) if nxt is not None else None})


@router.get("/{address:address_then}/history", response_model=HistoryResponse, responses=_ERRORS)
async def address_history(
    services: ServicesDep,
    _key: ReadKey,
    address: Address,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONBytes:
    """Events and audit entries for an address, newest first."""
    items = await services.suppressions.history(address, limit=limit)
    return JSONBytes({"address": normalise_or_422(address), "items": items})


@router.get("/{address:address}", response_model=AddressDetail, responses=_ERRORS)
async def get_suppression(services: ServicesDep, _key: ReadKey, address: Address) -> JSONBytes:
    """Every scope of an address (active or not) and its recent events: "why is this blocked?"."""
    return JSONBytes(await services.suppressions.get(address))


@router.put("/{address:address}", response_model=SuppressResponse, responses=_WRITE_ERRORS)
async def put_suppression(
    services: ServicesDep, key: WriteKey, address: Address, body: SuppressBody
) -> JSONBytes:
    """Suppress an address by hand. Never weakens an existing entry."""
    return await manual_suppress(services, key, address, body)


@router.delete("/{address:address}", response_model=UnsuppressResponse, responses=_ERRORS)
async def delete_suppression(
    services: ServicesDep,
    key: WriteKey,
    address: Address,
    reason: LiftReason,
    stream: LiftScope = None,
    force: LiftForce = False,
) -> JSONBytes:
    """Unsuppress with a reason; the audit log names the key. Complaints need admin + force."""
    removed = await lift(services, key, address, reason, stream, force)
    return JSONBytes({"address": normalise_or_422(address), "removed": removed})


async def manual_suppress(
    services: Services, key: KeyInfo, target: str, body: SuppressBody, *, whole_domain: bool = False
) -> JSONBytes:
    """A suppression by hand through the API (an address, or with ``whole_domain`` a domain),
    audited with the key's name; the answer of both PUT routes."""
    result = await services.suppressions.suppress(
        SuppressRequest(
            address=target,
            outcome=body.outcome,
            reason=body.reason,
            source="api",
            stream=body.stream,
            expires_at=body.expires_at,
            actor=key.name,
            note=body.note,
            event_kind="manual_suppress",
            whole_domain=whole_domain,
        )
    )
    return JSONBytes(
        {
            "created": result.created,
            "changed": result.changed,
            "suppression": row_to_dict(result.row),
        }
    )


async def lift(
    services: Services,
    key: KeyInfo,
    target: str,
    reason: str,
    stream: str | None,
    force: bool,
    *,
    whole_domain: bool = False,
) -> list[dict[str, Any]]:
    """Unsuppress through the API: every scope unless ``stream``; complaints only with admin and
    ``force``. The entries removed."""
    return await services.suppressions.unsuppress(
        target,
        stream=stream,
        all_scopes=stream is None,
        reason=reason,
        actor=key.name,
        may_remove_complaints=force and scope_allows(key.scope, "admin"),
        whole_domain=whole_domain,
    )
