"""Stored bounce and complaint messages: why the analysis decided what it did about one."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path

from app.errors import Gone, NotFound
from app.http.deps import ApiRoute, ReadKey, ServicesDep
from app.http.responses import JSONBytes
from app.http.schemas import MessageExplanation, error_responses
from app.intake import IntakeStore
from dsn.explain import explain_message

router = APIRouter(prefix="/v1/messages", tags=["messages"], route_class=ApiRoute)


@router.get(
    "/{message_id}/explanation",
    response_model=MessageExplanation,
    responses=error_responses(401, 403, 404, 410, 422, 503, e410="The raw bytes were purged"),
)
async def message_explanation(
    services: ServicesDep,
    _key: ReadKey,
    message_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> JSONBytes:
    """What ``stoplist explain`` says about a stored message (the ``message_id`` of a history
    event): the parser that claimed it, the lines naming each recipient, the signals read and the
    rule that decided, with its source and examples. Re-read from the stored bytes with today's
    rules, so after a rule change it shows what ``reprocess`` would decide."""
    exists, raw = await IntakeStore(services.db).raw(message_id)
    if not exists:
        raise NotFound(f"no stored message {message_id}")
    if raw is None:
        raise Gone(f"message {message_id}: its raw bytes were purged (stoplist purge)")
    # Parsing is CPU work on untrusted bytes: off the event loop, like intake's parse pool.
    explanation = await asyncio.to_thread(explain_message, raw)
    return JSONBytes({"message_id": message_id, **explanation.to_json()})
