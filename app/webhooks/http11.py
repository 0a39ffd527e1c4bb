"""A small HTTP/1.1 client for webhook POSTs, over asyncio streams with a keep-alive pool per
(address, port, TLS name).

Why not httpx: its connection pool re-examines every connection for every request, which made a
delivery cost milliseconds of CPU (bench/webhooks.py). A webhook needs little of HTTP: one
``POST`` with a ``Content-Length`` body, the status and two headers back. So: the answer's body is
read only when its length is known and small (the connection is then reused), otherwise up to
``MAX_RESPONSE_BYTES`` and the connection is closed; redirects are answers like any other (not
followed); every step is bounded by the timeout. TLS verifies the certificate against the URL's
host name (SNI) while connecting to the address the SSRF guard checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

MAX_RESPONSE_BYTES = 64 * 1024

Key = tuple[str, int, str | None]  # (address, port, TLS server name or None)


class HttpError(Exception):
    """The exchange failed (connect, TLS, timeout, malformed or missing answer)."""


class Http11Pool:
    def __init__(self, *, timeout_s: float, connect_timeout_s: float, max_idle: int = 64) -> None:
        """``max_idle``: idle connections kept per target (as many as requests in flight)."""
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self.connect_timeout_s = connect_timeout_s
        self._idle: dict[Key, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._tls = ssl.create_default_context()

    async def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()

    async def post(
        self,
        address: str,
        port: int,
        tls_name: str | None,
        head: Mapping[str, str],
        path: str,
        body: bytes,
    ) -> tuple[int, dict[str, str]]:
        """POST ``body``; (status, lower-cased headers). A reused connection the server had
        closed meanwhile is retried once on a fresh one."""
        key = (address, port, tls_name)
        idle = self._idle.get(key)
        if idle:
            reader, writer = idle.pop()
            try:
                return await self._exchange(key, reader, writer, head, path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
        reader, writer = await self._connect(key)
        try:
            return await self._exchange(key, reader, writer, head, path, body)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None

    async def _connect(self, key: Key) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address, port, tls_name = key
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    address,
                    port,
                    ssl=self._tls if tls_name else None,
                    server_hostname=tls_name,
                    limit=MAX_RESPONSE_BYTES,
                ),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise HttpError("connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"connect failed: {exc}") from None

    async def _exchange(
        self,
        key: Key,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: Mapping[str, str],
        path: str,
        body: bytes,
    ) -> tuple[int, dict[str, str]]:
        lines = [f"POST {path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in head.items()]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            async with asyncio.timeout(self.timeout_s):
                await writer.drain()
                status, headers = await _read_head(reader)
        except TimeoutError:
            writer.close()
            raise HttpError("timed out waiting for the answer") from None
        # The answer is in; its body is skipped on a best-effort basis (a body that is slow or
        # cut short costs the connection, not the delivery).
        reusable = False
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            async with asyncio.timeout(self.timeout_s):
                reusable = await _skip_body(reader, status, headers)
        if reusable and len(self._idle.setdefault(key, [])) < self.max_idle:
            self._idle[key].append((reader, writer))
        else:
            writer.close()
        return status, headers


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue  # an interim answer: the final one follows
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return status, headers


async def _skip_body(reader: asyncio.StreamReader, status: int, headers: Mapping[str, str]) -> bool:
    """Read the answer's body (it plays no part); whether the connection can carry another
    request."""
    length = headers.get("content-length", "")
    keep = headers.get("connection", "").lower() != "close"
    if status in (204, 304):
        return keep  # no body, whatever the headers say (RFC 9112 §6.3)
    if "transfer-encoding" not in headers and length.isdigit():
        size = int(length)
        if size <= MAX_RESPONSE_BYTES:
            await reader.readexactly(size)
            return keep
    await reader.read(MAX_RESPONSE_BYTES)  # some of it, then the connection is closed
    return False
