"""One signed webhook request: resolve and judge the target (``guard``), connect to the address
that was judged (the Host header and the TLS server name stay the URL's host), short timeouts,
no redirects followed, at most ``MAX_RESPONSE_BYTES`` of the answer read."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from app.webhooks.guard import Network, TargetRefused, check_target
from app.webhooks.signing import sign

MAX_RESPONSE_BYTES = 64 * 1024
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

    def __init__(self, *, timeout_s: float, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,  # never through a proxy the environment names
        )

    async def close(self) -> None:
        await self.client.aclose()

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
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            request = self.client.build_request(
                "POST",
                target.url_for(target.addresses[0]),
                content=body,
                headers=headers,
                extensions=extensions,
            )
            response = await self.client.send(request, stream=True)
            try:
                await _read_capped(response)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            return Attempt(False, error=f"{type(exc).__name__}: {exc}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(True, status)
        wait = retry_after(response.headers.get("retry-after"), datetime.now(UTC).timestamp())
        return Attempt(False, status, f"HTTP {status}", wait)


async def _read_capped(response: httpx.Response) -> None:
    """Read at most ``MAX_RESPONSE_BYTES`` of the answer (its content plays no part)."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES:
            break
