"""Reading the content of DATA (RFC 5321 §4.1.1.4, §4.5.2) in chunks, smuggling-proof.

Only <CRLF>.<CRLF> ends the data and only CRLF ends a line (aiosmtpd's own rules), so a bare LF or
CR next to a dot ends nothing (SMTP smuggling). Reading in chunks and scanning them with bytes
methods keeps a message of many short lines from holding the event loop a few µs per line.
"""

from __future__ import annotations

import asyncio
from typing import Final

from app.intake.smtp.handler import Reply
from app.intake.smtp.internals import unread

_DATA_END: Final = b"\r\n.\r\n"
_DATA_CHUNK: Final = 1 << 16
# aiosmtpd's reply for a line over RFC 5321 §4.5.3.1.6's limit (RFC 5321 §4.5.3.1.10's text).
LINE_TOO_LONG: Final = "500 Line too long (see RFC5321 4.5.3.1.6)"


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> tuple[bytes | None, str | None]:
    """The content of DATA up to the lone dot, dot-stuffing undone (RFC 5321 §4.1.1.4, §4.5.2):
    ``(content, None)``; ``(None, refusal)`` once everything up to the dot has been read, for a
    line longer than ``line_limit`` octets (CRLF and a transparency dot included,
    §4.5.3.1.6) or content over ``size_limit``; ``(None, None)`` if the connection ended.

    Bytes read past the dot belong to the commands after it and go back to the reader.
    """
    body = bytearray(b"\r\n")  # a line starts here: the lone dot may be the first line
    start = 2  # body[2:start] is whole lines already checked
    refusal: str | None = None
    while True:
        chunk = await reader.read(_DATA_CHUNK)
        if not chunk:
            return None, None
        body += chunk
        end = body.find(_DATA_END, start - 2)
        # Whole lines received so far end at ``stop`` (a CRLF always precedes ``start``).
        stop = end + 2 if end != -1 else body.rfind(b"\r\n", start - 2) + 2
        if refusal is None:
            # The longest line with its CRLF: of the whole lines, and of the unfinished one
            # (whose CR may have come without its LF yet).
            whole = max(map(len, body[start:stop].split(b"\r\n"))) + 2 if stop > start else 0
            unfinished = len(body) - stop + 1 if end == -1 else 0
            if max(whole, unfinished) > line_limit:
                refusal = LINE_TOO_LONG
            elif size_limit and (end if end != -1 else len(body) - 5) > size_limit:
                refusal = Reply.TOO_BIG
        if end != -1:
            if len(body) > end + 5:
                unread(reader, body[end + 5 :])  # the next commands
            if refusal is not None:
                return None, refusal
            return bytes(body[: end + 2]).replace(b"\r\n.", b"\r\n")[2:], None
        if refusal is None:
            start = stop
        else:
            # Refused: only the end matters now; keep what may be its beginning.
            del body[: len(body) - 4]
            start = 2
