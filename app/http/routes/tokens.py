"""Minting signed references for outgoing mail: ``POST /v1/tokens`` (write scope).

High-volume senders should mint in their own code from the documented format
(``docs/signed-return-paths.md``) rather than call this per message; this endpoint serves batches,
tools and tests. It needs the write scope: an unsubscribe token is the power to unsubscribe.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.errors import InvalidInput, NotFound
from app.http.deps import ApiRoute, ServicesDep, WriteKey
from app.http.responses import JSONBytes
from app.http.schemas import error_responses

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], route_class=ApiRoute)


class MintBody(BaseModel):
    recipients: list[str] = Field(min_length=1, description="Recipient addresses")
    stream: str | None = Field(default=None, max_length=64, description="Sending stream")


class MintedRef(BaseModel):
    recipient: str
    x_stoplist_ref: str | None = Field(default=None, description="X-Stoplist-Ref header value")
    return_path: str | None = Field(default=None, description="Envelope sender (MAIL FROM)")
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    list_unsubscribe: str | None = Field(default=None, description="List-Unsubscribe value")
    list_unsubscribe_post: str | None = Field(default=None, description="RFC 8058 header value")
    error: str | None = Field(default=None, description="Why this recipient got nothing")


class MintResponse(BaseModel):
    results: list[MintedRef]


_ERRORS = error_responses(401, 403, 404, 413, 422, 503, e404="No signing keys configured")


@router.post("", response_model=MintResponse, responses=_ERRORS)
async def mint(services: ServicesDep, _key: WriteKey, body: MintBody) -> JSONBytes:
    """Return path, X-Stoplist-Ref and List-Unsubscribe values for each recipient, in order."""
    signer = services.signer
    if signer is None:
        raise NotFound("signing is not configured (STOPLIST_SIGNING_KEYS)")
    if len(body.recipients) > services.settings.max_batch:
        raise InvalidInput(f"at most {services.settings.max_batch} recipients per request")
    results: list[dict[str, object]] = []
    for recipient in body.recipients:
        try:
            results.append({"recipient": recipient, **signer.headers(recipient, body.stream)})
        except ValueError as exc:
            results.append({"recipient": recipient, "error": str(exc)})
    return JSONBytes({"results": results})
