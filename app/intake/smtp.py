"""The SMTP sink: receives bounces and feedback-loop reports (RFC 5321) and stores them durably.

It runs as an aiosmtpd protocol server on the service's own event loop (``loop.create_server``),
never as a relay:

* ``RCPT`` is accepted only for ``STOPLIST_SMTP_DOMAINS`` (a domain, or an exact address);
  anything else is ``550 5.7.1``. More than ``smtp_max_recipients`` is ``452 4.5.3``.
* a message over ``smtp_max_message_bytes`` is ``552 5.3.4`` (announced in ``EHLO SIZE`` too).
* the 250 after ``DATA`` is sent only once the bytes and envelope are committed
  (``app.intake``); a storage failure or a store slower than ``smtp_storage_timeout_s`` is
  ``451 4.3.0``, so the sending MTA keeps the message and retries. Never a 5xx for our trouble.
* any exception in a hook is the fixed ``451 4.3.0 Temporary local problem``: aiosmtpd's own
  default would answer ``500`` and echo the exception text to the peer.
* end of data is ``<CRLF>.<CRLF>`` only (:func:`read_data`, aiosmtpd's rules read in bulk), so
  a bare ``<LF>.<LF>`` or ``<CR>.<CR>`` inside a message cannot end it early (SMTP smuggling).
* a recipient whose local part routes elsewhere (``"u@elsewhere"@ours``, ``u%elsewhere@ours``,
  ``elsewhere!u@ours``: RFC 5321 §3.6.1 lets a server refuse them) is ``550 5.7.1`` like any
  relay attempt, so open-relay probes get the answer they look for; the ``%`` or ``!`` of a
  recipient's own local part inside one of our signed return paths is not a route and is
  accepted. A source route (``<@a,@b:u@d>``) is ignored as RFC 5321 §4.1.1.3 says: ``u@d``
  decides.
* connections beyond ``smtp_max_connections`` get ``421 4.3.2`` and are closed; peers outside
  ``smtp_allowed_networks`` (when set) get ``554 5.7.1``. STARTTLS is offered when a certificate
  and key are set; plaintext pipelined after ``STARTTLS`` is discarded, never run inside TLS
  (RFC 3207 §4.2, CVE-2011-0411: aiosmtpd clears its buffer when the handshake completes), and a
  second ``STARTTLS`` inside TLS is ``503 5.5.1``.
* time: each command, and all of DATA after the ``DATA`` command, must arrive within
  ``smtp_timeout_s`` of the previous command, however slowly it trickles in (the timer restarts
  only when a command is complete); a whole session lasts at most ``smtp_session_timeout_s``.
  Both end with ``421 4.4.2``; neither cuts off a message being stored (its answer comes first).
* abuse: a session may make ``MAX_ERRORS`` errors (4xx/5xx replies) and ``smtp_max_recipients +
  COMMAND_SLACK`` commands of any kind (NOOP floods) between two accepted messages, then it gets
  ``421 4.7.0`` and is closed, as Postfix does (``smtpd_hard_error_limit``,
  ``smtpd_junk_command_limit``). An accepted message resets both counts: an MTA reusing one
  connection for many messages is never cut off for that.

aiosmtpd finds a handler's hooks by name (``handle_RCPT``, ``handle_DATA``, ``handle_exception``);
``SinkHandler`` defines exactly those and the tests drive each through a real connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from typing import Any, AnyStr, Final

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from app import metrics
from app.container import Services
from app.db import DB_ERRORS
from app.intake import Intake
from app.intake.child import open_intake
from app.settings import Settings
from app.signing import has_signed_address_form

log = logging.getLogger("app.smtp")


class Reply:
    """Every reply the sink composes itself (RFC 5321 codes, RFC 3463 enhanced status)."""

    ACCEPTED: Final = "250 2.0.0 Message accepted for delivery"
    DUPLICATE: Final = "250 2.0.0 Message accepted (already received)"
    RCPT_OK: Final = "250 2.1.5 Recipient OK"
    RELAY_DENIED: Final = "550 5.7.1 Relaying denied: not a mailbox of this service"
    TOO_MANY_RECIPIENTS: Final = "452 4.5.3 Too many recipients"
    TOO_BIG: Final = "552 5.3.4 Message size exceeds fixed maximum message size"
    TEMPORARY: Final = "451 4.3.0 Temporary local problem"
    TOO_MANY_CONNECTIONS: Final = "421 4.3.2 Too many connections, try again later"
    NETWORK_DENIED: Final = "554 5.7.1 Access denied"
    TIMEOUT: Final = "421 4.4.2 Idle timeout, closing connection"
    SESSION_TOO_LONG: Final = "421 4.4.2 Session time limit reached, closing connection"
    TOO_MANY_ERRORS: Final = "421 4.7.0 Too many errors, closing connection"
    TOO_MANY_COMMANDS: Final = "421 4.7.0 Too many commands without a message, closing connection"
    TLS_ACTIVE: Final = "503 5.5.1 TLS already active"


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


def _peer_host(peer: Any) -> str | None:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None if peer is None else str(peer)


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd keeps the null reverse-path of a bounce as "<>"; we store it empty.
    return "" if mail_from in (None, "<>") else str(mail_from)


class RecipientPolicy:
    """Which recipients the sink accepts: whole domains, or single addresses; never a local part
    that names another destination (see the module docstring)."""

    def __init__(self, entries: Sequence[str], signed_prefixes: Sequence[str] = ()) -> None:
        self.domains = {e.lower().lstrip("@") for e in entries if "@" not in e.lstrip("@")}
        self.addresses = {e.lower() for e in entries if "@" in e.lstrip("@")}
        self.signed_prefixes = frozenset(signed_prefixes)

    def accepts(self, address: str) -> bool:
        address = address.strip().lower()
        if address in self.addresses:
            return True
        local, at, domain = address.rpartition("@")
        if not (at and local) or domain not in self.domains:
            return False
        return not self.routes_elsewhere(local)

    def routes_elsewhere(self, local: str) -> bool:
        """A sender-specified route in the local part: quoted or escaped (``"u@elsewhere"``),
        a second ``@``, the ``%`` hack or a UUCP bang path."""
        if any(ch in local for ch in '"\\@'):
            return True
        if "%" in local or "!" in local:
            return not has_signed_address_form(local, self.signed_prefixes)
        return False


class SinkHandler:
    """aiosmtpd hooks: recipient checks, durable store before 250, fixed reply for exceptions."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.recipients = RecipientPolicy(
            settings.smtp_domains,
            (settings.return_path_prefix, settings.unsubscribe_local_prefix),
        )

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.recipients.accepts(address):
            log.info("smtp: refused relay to %s from %s", address, _peer_host(session.peer))
            return Reply.RELAY_DENIED
        if len(envelope.rcpt_tos) >= self.settings.smtp_max_recipients:
            return Reply.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return Reply.RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        if len(raw) > self.settings.smtp_max_message_bytes:
            metrics.SMTP_MESSAGES.labels("too_big").inc()
            return Reply.TOO_BIG
        try:
            result = await asyncio.wait_for(
                self.intake.accept(
                    mail_from=_reverse_path(envelope.mail_from),
                    rcpt_to=list(envelope.rcpt_tos),
                    peer=_peer_host(session.peer),
                    raw=raw,
                ),
                timeout=self.settings.smtp_storage_timeout_s,
            )
        except TimeoutError:
            metrics.SMTP_MESSAGES.labels("storage_timeout").inc()
            log.error(
                "smtp: storing a message took over %.1f s: answered 451",
                self.settings.smtp_storage_timeout_s,
            )
            return Reply.TEMPORARY
        except DB_ERRORS as exc:
            metrics.SMTP_MESSAGES.labels("storage_error").inc()
            log.error("smtp: storing a message failed (answered 451): %s", exc)
            return Reply.TEMPORARY
        metrics.SMTP_MESSAGES.labels("duplicate" if result.duplicate else "accepted").inc()
        return Reply.DUPLICATE if result.duplicate else Reply.ACCEPTED

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp: session error (answered 451): %r", error, exc_info=error)
        return Reply.TEMPORARY


_DATA_END: Final = b"\r\n.\r\n"
_DATA_CHUNK: Final = 1 << 16
# aiosmtpd's reply for a line over RFC 5321 §4.5.3.1.6's limit (RFC 5321 §4.5.3.1.10's text).
LINE_TOO_LONG: Final = "500 Line too long (see RFC5321 4.5.3.1.6)"


def _buffer_of(reader: asyncio.StreamReader) -> bytearray:
    """The bytes a StreamReader holds unread. asyncio has no public way to push bytes back or
    drop them; its buffer is this bytearray (aiosmtpd clears it after STARTTLS too)."""
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise RuntimeError(
            "asyncio.StreamReader keeps its buffer elsewhere: update app.intake.smtp"
        )
    return buffer


async def read_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> tuple[bytes | None, str | None]:
    """The content of DATA up to the lone dot, dot-stuffing undone (RFC 5321 §4.1.1.4, §4.5.2):
    ``(content, None)``; ``(None, refusal)`` once everything up to the dot has been read, for a
    line longer than ``line_limit`` octets (CRLF and a transparency dot included,
    §4.5.3.1.6) or content over ``size_limit``; ``(None, None)`` if the connection ended.

    The same rules as aiosmtpd's own DATA, which reads a line per call: only <CRLF>.<CRLF> ends
    the data and only CRLF ends a line, so a bare LF or CR next to a dot ends nothing (SMTP
    smuggling). This reads in chunks and scans them with bytes methods instead: a message of
    short lines costs microseconds a chunk, not ~3 µs a line of event-loop time (a 10 MiB
    message of empty lines was about 14 s of it, during which nothing else ran). Bytes read past
    the dot belong to the commands after it and go back to the reader.
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
                _buffer_of(reader)[:0] = body[end + 5 :]  # the next commands: unread
            if refusal is not None:
                return None, refusal
            return bytes(body[: end + 2]).replace(b"\r\n.", b"\r\n")[2:], None
        if refusal is None:
            start = stop
        else:
            # Refused: only the end matters now; keep what may be its beginning.
            del body[: len(body) - 4]
            start = 2


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol plus a connection gate, time limits, an abuse budget and enhanced
    replies (see the module docstring)."""

    def __init__(self, sink: SmtpSink, handler: SinkHandler, **kwargs: Any) -> None:
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
        if self._original_transport is None and not self._admitted:
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

    def _timeout_cb(self) -> None:
        # aiosmtpd's per-command timer: restarted when a command line is complete, so bytes
        # trickling in do not extend it.
        log.info("smtp: %s timed out", _peer_host(self.session.peer if self.session else None))
        self._close_with(Reply.TIMEOUT)

    def _session_expired(self) -> None:
        self._session_timer = None
        log.info(
            "smtp: session of %s exceeded %.0f s",
            _peer_host(self.session.peer if self.session else None),
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
        _buffer_of(self._reader).clear()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd would start TLS again inside TLS; RFC 3207 §4.2 forbids the client that, and
        # the EHLO after the handshake no longer offers it.
        if self._tls_protocol is not None:
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
            self._reader, self.data_size_limit, self.line_length_limit
        )
        if content is None:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            if refusal is not None:
                await self.push(refusal)
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        self._storing = True
        try:
            return await super()._call_handler_hook(command, *args)
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
                _peer_host(self.session.peer if self.session else None),
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


class SmtpSink:
    """The listening server; ``start()`` inside a running loop, ``stop()`` closes every session."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.handler = SinkHandler(settings, intake)
        self.networks = [
            ipaddress.ip_network(n, strict=False) for n in settings.smtp_allowed_networks
        ]
        self.tls_context = _tls_context(settings)
        self.connections = 0
        self._protocols: set[_SinkSMTP] = set()
        self._server: asyncio.Server | None = None

    def admit(self, peername: Any) -> str | None:
        """None to admit a new connection, else the reply to close it with."""
        host = _peer_host(peername)
        if self.networks:
            try:
                addr = ipaddress.ip_address((host or "").split("%", 1)[0])
            except ValueError:
                return Reply.NETWORK_DENIED
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            if not any(addr in net for net in self.networks):
                log.info("smtp: refused connection from %s (not an allowed network)", host)
                return Reply.NETWORK_DENIED
        if self.connections >= self.settings.smtp_max_connections:
            log.warning("smtp: refused connection from %s: %d open", host, self.connections)
            return Reply.TOO_MANY_CONNECTIONS
        self.connections += 1
        return None

    def release(self) -> None:
        self.connections -= 1

    def forget(self, proto: _SinkSMTP) -> None:
        self._protocols.discard(proto)

    def _protocol(self) -> _SinkSMTP:
        proto = _SinkSMTP(
            self,
            self.handler,
            data_size_limit=self.settings.smtp_max_message_bytes,
            hostname=self.settings.smtp_hostname,
            ident="Stoplist",
            tls_context=self.tls_context,
            timeout=self.settings.smtp_timeout_s,
            loop=asyncio.get_running_loop(),
        )
        self._protocols.add(proto)
        return proto

    async def start(self) -> None:
        # aiosmtpd's own log writes a dozen INFO lines per message, sender and recipient addresses
        # included (personal data), and a normal QUIT as a lost connection: warnings only.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=self.settings.smtp_host, port=self.settings.smtp_port
        )
        log.info("smtp sink listening on %s:%d", self.settings.smtp_host, self.port)
        if not self.settings.smtp_domains:
            log.warning("STOPLIST_SMTP_DOMAINS is empty: the sink refuses every recipient")

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.close()
        self._protocols.clear()
        await self._server.wait_closed()
        self._server = None

    async def close(self) -> None:
        """Stop listening, then stop processing (unfinished claims are retried later)."""
        await self.stop()
        await self.intake.close()


async def start_sink(
    services: Services, *, process: bool = True, settings: Settings | None = None
) -> SmtpSink:
    """The sink and (unless ``process`` is false) the processing loop: on the running loop, or in
    a child process (``intake_process = "separate"`` on PostgreSQL, see ``app.intake.child``)."""
    intake = open_intake(services)
    if process:
        await intake.start()
    sink = SmtpSink(settings or services.settings, intake)
    try:
        await sink.start()
    except BaseException:
        await intake.close()
        raise
    return sink


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.smtp_tls_cert and not settings.smtp_tls_key:
        return None
    if not (settings.smtp_tls_cert and settings.smtp_tls_key):
        raise ValueError("STOPLIST_SMTP_TLS_CERT and STOPLIST_SMTP_TLS_KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.smtp_tls_cert), str(settings.smtp_tls_key))
    return context
