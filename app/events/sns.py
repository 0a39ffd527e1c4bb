"""Confirming an SNS subscription: an operator's explicit step, never automatic.

SNS sends a signed ``SubscriptionConfirmation`` to a new HTTPS endpoint; the webhook keeps it
(``EventStore.record_subscription``) and ``stoplist events confirm-ses`` fetches its SubscribeURL,
which must be an SNS ``ConfirmSubscription`` URL (``check_sns_subscribe_url``) so a stored row can
never make the service fetch an address of someone else's choosing.
"""

from __future__ import annotations

import logging

import httpx

from app.events.store import EventStore, PendingSubscription
from events.signatures import SignatureError, check_sns_subscribe_url

__all__ = ["ConfirmError", "confirm_subscription"]

log = logging.getLogger("app.events")
CONFIRM_TIMEOUT_S = 10.0


class ConfirmError(RuntimeError):
    """The subscription could not be confirmed (refused URL, network, SNS said no)."""


async def confirm_subscription(
    store: EventStore, sub: PendingSubscription, client: httpx.AsyncClient | None = None
) -> None:
    """GET the SubscribeURL of ``sub`` and mark it confirmed when SNS answers 200."""
    try:
        check_sns_subscribe_url(sub.subscribe_url)
    except SignatureError as exc:
        raise ConfirmError(str(exc)) from None
    own = client is None
    http = client or httpx.AsyncClient(timeout=CONFIRM_TIMEOUT_S, follow_redirects=False)
    try:
        response = await http.get(sub.subscribe_url)
    except httpx.HTTPError as exc:
        raise ConfirmError(f"SNS could not be reached: {exc}") from None
    finally:
        if own:
            await http.aclose()
    if response.status_code != 200:
        raise ConfirmError(f"SNS answered {response.status_code}: {response.text[:200]}")
    await store.mark_confirmed(sub.id)
    log.info("SNS subscription %d to topic %s confirmed", sub.id, sub.topic_arn)
