"""One signed webhook request: resolve and judge the target (``guard``), then POST over
``http11`` to the address that was judged (the Host header and the TLS server name stay the URL's
host): short timeouts, no redirects followed, at most 64 KiB of the answer read."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.webhooks.guard import Network, TargetRefused, check_target
from app.webhooks.http11 import Http11Pool, HttpError
from app.webhooks.signing import sign

USER_AGENT = "Stoplist-Webhooks/1"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one request came to."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None  # the receiver's Retry-After, when it sent one


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class Sender:
    """Signs and posts events; one connection pool per process."""

    def __init__(
        self, *, timeout_s: float, allowed: Sequence[Network], concurrency: int = 64
    ) -> None:
        self.allowed = tuple(allowed)
        self.pool = Http11Pool(
            timeout_s=timeout_s, connect_timeout_s=min(timeout_s, 3.0), max_idle=concurrency
        )

    async def close(self) -> None:
        await self.pool.close()

    async def post(
        self, url: str, msg_id: str, body: bytes, secrets: Sequence[str], *, at: float | None = None
    ) -> Attempt:
        """POST ``body`` as event ``msg_id``, signed with every secret in ``secrets``."""
        try:
            target = await check_target(url, self.allowed)
        except TargetRefused as exc:
            return Attempt(False, error=str(exc.detail))
        timestamp = math.floor(at if at is not None else time.time())
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, msg_id, timestamp, body),
        }
        tls_name = target.host if target.scheme == "https" else None
        try:
            status, answer = await self.pool.post(
                target.addresses[0], target.port, tls_name, headers, target.path, body
            )
        except HttpError as exc:
            return Attempt(False, error=str(exc)[:500])
        if 200 <= status < 300:
            return Attempt(True, status)
        wait = retry_after(answer.get("retry-after"), datetime.now(UTC).timestamp())
        return Attempt(False, status, f"HTTP {status}", wait)
