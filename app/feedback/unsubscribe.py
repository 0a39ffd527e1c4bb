"""Unsubscribes by link: RFC 8058 one-click (``POST``) and its confirmation page (``GET``).

A token names the recipient and stream it was signed for; a stream-less token unsubscribes in
``unsubscribe_default_stream``. Mail to the ``mailto:`` unsubscribe address is planned with other
inbound mail (``app.feedback.planner``).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.container import Services
from app.errors import AppError
from app.feedback.planner import unsubscribe_stream
from app.signing import RejectReason, TokenError, VerifiedRef
from app.streams import GLOBAL_SCOPE
from app.suppression import SuppressRequest
from app.suppression.merge import stronger_or_equal

__all__ = [
    "SigningDisabled",
    "TokenRejected",
    "UnsubscribeResult",
    "preview_unsubscribe_token",
    "unsubscribe_with_token",
]


@dataclass(frozen=True, slots=True)
class UnsubscribeResult:
    address: str
    scope: str
    already: bool  # the address was already unsubscribed in that scope: nothing written
    stream_defaulted: bool


class TokenRejected(AppError):
    """A reference that does not verify: 400 malformed, 410 expired, 404 otherwise."""

    error = "invalid_token"

    def __init__(self, exc: TokenError) -> None:
        super().__init__({"reason": str(exc.reason), "message": _TOKEN_MESSAGES[exc.reason]})
        self.reason = exc.reason
        self.status_code = {RejectReason.MALFORMED: 400, RejectReason.EXPIRED: 410}.get(
            exc.reason, 404
        )


_TOKEN_MESSAGES = {
    RejectReason.MALFORMED: "this is not a valid unsubscribe link; check it was copied whole",
    RejectReason.UNKNOWN_KEY: "this unsubscribe link is not known here",
    RejectReason.FORGED: "this unsubscribe link is not known here",
    RejectReason.TAMPERED: "this unsubscribe link is not known here",
    RejectReason.EXPIRED: "this unsubscribe link has expired; use the link in a recent message",
}


class SigningDisabled(AppError):
    status_code = 404
    error = "not_found"


async def preview_unsubscribe_token(services: Services, token: str) -> VerifiedRef:
    """What a one-click token would unsubscribe, without doing it (the GET confirmation page)."""
    signer = services.signer
    if signer is None:
        raise SigningDisabled("unsubscribe links are not enabled on this server")
    try:
        return signer.verify_unsubscribe_token(token)
    except TokenError as exc:
        raise TokenRejected(exc) from None


async def unsubscribe_with_token(
    services: Services, token: str, *, via: str = "one_click"
) -> UnsubscribeResult:
    """RFC 8058 one-click: verify, then unsubscribe in the token's stream. Idempotent."""
    ref = await preview_unsubscribe_token(services, token)
    stream, defaulted = unsubscribe_stream(services.settings, ref.stream)
    scope = stream or GLOBAL_SCOPE
    # A repeated click (or a provider retrying its POST) writes nothing new.
    (entries,) = await services.suppressions.lookup_entries([ref.recipient])
    for e in entries or ():
        if e.scope == scope and e.expires is None and stronger_or_equal(e.outcome, "unsubscribe"):
            return UnsubscribeResult(ref.recipient, scope, True, defaulted)
    await services.suppressions.suppress(
        SuppressRequest(
            address=ref.recipient,
            outcome="unsubscribe",
            reason=via,
            source="unsubscribe",
            stream=stream,
            verified=True,
            event_kind="unsubscribe",
            detail={"via": via, "key_id": ref.key_id, "stream_defaulted": defaulted},
        )
    )
    return UnsubscribeResult(ref.recipient, scope, False, defaulted)
