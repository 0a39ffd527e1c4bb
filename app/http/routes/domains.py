"""Whole-domain suppressions over the API: look up, suppress and unsuppress every address of a
domain (one entry keyed ``@domain``), with the same audit trail and guardrails as an address."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.http.deps import ApiRoute, ReadKey, ServicesDep, WriteKey
from app.http.responses import JSONBytes
from app.http.routes.suppressions import LiftForce, LiftReason, LiftScope, lift, manual_suppress
from app.http.schemas import (
    AddressDetail,
    SuppressBody,
    SuppressResponse,
    UnsuppressResponse,
    error_responses,
)
from app.suppression import list_key

router = APIRouter(prefix="/v1/domain-suppressions", tags=["suppressions"], route_class=ApiRoute)

_ERRORS = error_responses(401, 403, 404, 422, 503)
_WRITE_ERRORS = error_responses(401, 403, 404, 413, 422, 503)

Domain = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,
        description="A domain (any case, Unicode or IDNA; a leading @ is allowed); normalised. "
        "Only this exact domain: its subdomains are not covered",
        examples=["example.com", "bücher.example", "@example.org"],
    ),
]


@router.get("/{domain}", response_model=AddressDetail, responses=_ERRORS)
async def get_domain_suppression(services: ServicesDep, _key: ReadKey, domain: Domain) -> JSONBytes:
    """The domain's own entries (active or not) and recent events; ``address`` is ``@domain``."""
    return JSONBytes(await services.suppressions.get(domain, whole_domain=True))


@router.put("/{domain}", response_model=SuppressResponse, responses=_WRITE_ERRORS)
async def put_domain_suppression(
    services: ServicesDep, key: WriteKey, domain: Domain, body: SuppressBody
) -> JSONBytes:
    """Suppress every address of a domain (audited with the key's name). Never weakens an
    existing entry."""
    return await manual_suppress(services, key, domain, body, whole_domain=True)


@router.delete("/{domain}", response_model=UnsuppressResponse, responses=_ERRORS)
async def delete_domain_suppression(
    services: ServicesDep,
    key: WriteKey,
    domain: Domain,
    reason: LiftReason,
    stream: LiftScope = None,
    force: LiftForce = False,
) -> JSONBytes:
    """Lift a domain's suppression with a reason; the audit log names the key. Addresses of the
    domain suppressed on their own stay suppressed."""
    removed = await lift(services, key, domain, reason, stream, force, whole_domain=True)
    return JSONBytes({"address": list_key(domain, whole_domain=True), "removed": removed})
