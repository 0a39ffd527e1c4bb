"""aiosmtpd's protocol with the sink's rules of a session.

* a connection gate (``SessionGate``: count and networks, see ``server``) before the greeting.
* time: each command, and all of DATA after the ``DATA`` command, must arrive within
  ``smtp_timeout_s`` of the previous command, however slowly it trickles in; a whole session
  lasts at most ``smtp_session_timeout_s``. Both end with ``421 4.4.2``; neither cuts off a
  message being stored (its answer comes first).
* abuse: ``MAX_ERRORS`` errors and ``smtp_max_recipients + COMMAND_SLACK`` commands between two
  accepted messages, then ``421 4.7.0`` and close, as Postfix does (``smtpd_hard_error_limit``,
  ``smtpd_junk_command_limit``); an accepted message resets both counts.
* STARTTLS: plaintext pipelined after it is discarded, never run inside TLS (RFC 3207 §4.2,
  CVE-2011-0411: aiosmtpd clears its buffer after the handshake); a second one is ``503 5.5.1``.
* DATA is read by :func:`app.intake.smtp.data.read_data`; replies get enhanced status codes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AnyStr, Final, Protocol

from aiosmtpd.smtp import MISSING, syntax

from app import metrics
from app.intake.smtp.data import read_data
from app.intake.smtp.handler import Reply, SinkHandler, peer_host
from app.intake.smtp.internals import AiosmtpdSession, drop_unread
from app.settings import Settings

log = logging.getLogger("app.smtp")

# Errors (4xx/5xx replies) a session may collect without delivering a message: Postfix's
# smtpd_hard_error_limit. A directory-harvest or relay probe runs into it quickly.
MAX_ERRORS: Final = 20
# Commands allowed between two accepted messages on top of the recipient limit: a transaction is
# MAIL + RCPT per recipient + DATA, and an MTA adds a few RSET/NOOP/EHLO. Beyond that it is a flood.
COMMAND_SLACK: Final = 50

# aiosmtpd's own texts for the size limit carry no enhanced status code, and it closes a session
# after five unknown commands with a 502 where RFC 5321 §3.8 wants a 421 for a closing server.
_REWRITE: Final = {
    "552 Error: Too much mail data": Reply.TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": Reply.TOO_BIG,
    "502 5.5.1 Too many unrecognized commands, goodbye.": Reply.TOO_MANY_ERRORS,
}


class SessionGate(Protocol):
    """What a session asks of its server: admission, and being let go (``server.SmtpSink``)."""

    settings: Settings

    def admit(self, peername: Any) -> str | None: ...

    def release(self) -> None: ...

    def forget(self, proto: SinkSMTP) -> None: ...


class SinkSMTP(AiosmtpdSession):
    """aiosmtpd's protocol plus a connection gate, time limits, an abuse budget and enhanced
    replies (see the module docstring)."""

    def __init__(self, sink: SessionGate, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink
        self._admitted = False
        self._refused = False
        self._greeted = False
        self._closing = False
        self._storing = False  # inside handle_DATA: the client is owed the answer to a commit
        self._close_after_reply: str | None = None
        self._errors = 0
        self._commands = 0
        self._command_cap = sink.settings.smtp_max_recipients + COMMAND_SLACK
        self._session_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again after STARTTLS with the TLS transport: only the first call is a new peer.
        if self.first_transport and not self._admitted:
            refusal = self._sink.admit(transport.get_extra_info("peername"))
            if refusal is not None:
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(refusal.encode("ascii") + b"\r\n")
                transport.close()
                return
            self._admitted = True
            self._session_timer = self.loop.call_later(
                self._sink.settings.smtp_session_timeout_s, self._session_expired
            )
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink.forget(self)
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None
        if self._refused:
            return
        if self._admitted:
            self._admitted = False
            self._sink.release()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        result: bool | None = super().eof_received()
        return result

    def data_received(self, data: bytes) -> None:
        if not (self._refused or self._closing):
            super().data_received(data)

    # -- time limits

    def on_command_timeout(self) -> None:
        # aiosmtpd's per-command timer: restarted when a command line is complete, so bytes
        # trickling in do not extend it.
        log.info("smtp: %s timed out", peer_host(self.session.peer if self.session else None))
        self._close_with(Reply.TIMEOUT)

    def _session_expired(self) -> None:
        self._session_timer = None
        log.info(
            "smtp: session of %s exceeded %.0f s",
            peer_host(self.session.peer if self.session else None),
            self._sink.settings.smtp_session_timeout_s,
        )
        self._close_with(Reply.SESSION_TOO_LONG)

    def _close_with(self, reply: str) -> None:
        """Say ``reply`` and close: now, or right after the answer to a message being stored
        (that answer is already bounded by ``smtp_storage_timeout_s``)."""
        if self._storing:
            self._close_after_reply = self._close_after_reply or reply
        else:
            self._shut(reply)

    def _shut(self, reply: str | None) -> None:
        """Close the session, saying ``reply`` first; nothing after it is read or answered."""
        self._closing = True
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            if reply is not None:
                transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()
        # Commands the client pipelined behind this point are dropped unread.
        drop_unread(self.reader)
        self.cancel_session()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd would start TLS again inside TLS; RFC 3207 §4.2 forbids the client that, and
        # the EHLO after the handshake no longer offers it.
        if self.tls_active:
            await self.push(Reply.TLS_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the content read by :func:`read_data`."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, refusal = await read_data(
            self.reader, self.data_size_limit, self.line_length_limit
        )
        if content is None:
            self.reset_after_data()
            if refusal is not None:
                await self.push(refusal)
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self.call_handler_hook("DATA")
        self.reset_after_data()
        await self.push("250 OK" if status is MISSING else status)

    async def call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super().call_handler_hook(command, *args)
        self._storing = True
        try:
            return await super().call_handler_hook(command, *args)
        finally:
            self._storing = False

    # -- replies

    async def push(self, status: AnyStr) -> None:
        if self._closing:
            return
        if not isinstance(status, str):
            await super().push(status)
            return
        reply = _REWRITE.get(status, status)
        over = self._count(reply)
        if over is not None:
            log.warning(
                "smtp: closing the session of %s: %s",
                peer_host(self.session.peer if self.session else None),
                over[10:].partition(",")[0],
            )
            self._shut(over)
            return
        await super().push(reply)
        if reply[3:4] != "-" and reply[:3].isdigit():
            metrics.SMTP_REPLIES.labels(reply[:3]).inc()
        if self._close_after_reply is not None and reply[3:4] != "-" and not self._storing:
            self._shut(self._close_after_reply)

    def _count(self, reply: str) -> str | None:
        """Counts a final reply against the session's budget (module docstring); returns the
        closing reply to send instead once the budget is spent."""
        if not self._greeted:  # the 220 greeting answers no command
            self._greeted = True
            return None
        code = reply[:3]
        if reply[3:4] == "-" or code in ("354", "421"):
            return None
        if reply in (Reply.ACCEPTED, Reply.DUPLICATE):
            self._errors = self._commands = 0
            return None
        self._commands += 1
        if code[:1] in ("4", "5"):
            self._errors += 1
            if self._errors > MAX_ERRORS:
                return Reply.TOO_MANY_ERRORS
        if self._commands > self._command_cap:
            return Reply.TOO_MANY_COMMANDS
        return None
