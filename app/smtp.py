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
* end of data is ``<CRLF>.<CRLF>`` only (aiosmtpd reads DATA by CRLF lines), so a bare
  ``<LF>.<LF>`` or ``<CR>.<CR>`` inside a message cannot end it early (SMTP smuggling).
* connections beyond ``smtp_max_connections`` get ``421 4.3.2`` and are closed; peers outside
  ``smtp_allowed_networks`` (when set) get ``554 5.7.1``; an idle connection is closed after
  ``smtp_timeout_s`` with ``421 4.4.2``. STARTTLS is offered when a certificate and key are set.

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

from aiosmtpd.smtp import SMTP, Envelope, Session

from app.api.deps import Services
from app.intake import Intake
from app.settings import Settings
from app.suppressions import DB_ERRORS

log = logging.getLogger(__name__)


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


# aiosmtpd's own texts for the size limit carry no enhanced status code.
_REWRITE: Final = {
    "552 Error: Too much mail data": Reply.TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": Reply.TOO_BIG,
}


def _peer_host(peer: Any) -> str | None:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None if peer is None else str(peer)


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd keeps the null reverse-path of a bounce as "<>"; we store it empty.
    return "" if mail_from in (None, "<>") else str(mail_from)


class RecipientPolicy:
    """Which recipients the sink accepts: whole domains, or single addresses."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.domains = {e.lower().lstrip("@") for e in entries if "@" not in e.lstrip("@")}
        self.addresses = {e.lower() for e in entries if "@" in e.lstrip("@")}

    def accepts(self, address: str) -> bool:
        address = address.strip().lower()
        if address in self.addresses:
            return True
        _, at, domain = address.rpartition("@")
        return bool(at) and domain in self.domains


class SinkHandler:
    """aiosmtpd hooks: recipient checks, durable store before 250, fixed reply for exceptions."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.recipients = RecipientPolicy(settings.smtp_domains)

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
            log.error(
                "smtp: storing a message took over %.1f s: answered 451",
                self.settings.smtp_storage_timeout_s,
            )
            return Reply.TEMPORARY
        except DB_ERRORS as exc:
            log.error("smtp: storing a message failed (answered 451): %s", exc)
            return Reply.TEMPORARY
        return Reply.DUPLICATE if result.duplicate else Reply.ACCEPTED

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp: session error (answered 451): %r", error, exc_info=error)
        return Reply.TEMPORARY


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol plus a connection gate, a timeout reply and enhanced size replies."""

    def __init__(self, sink: SmtpSink, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink
        self._admitted = False
        self._refused = False

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
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink.forget(self)
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
        if not self._refused:
            super().data_received(data)

    def _timeout_cb(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(Reply.TIMEOUT.encode("ascii") + b"\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(_REWRITE.get(status, status))
        else:
            await super().push(status)


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
    a child process (``intake_process = "separate"`` on PostgreSQL, see ``app.intake_process``)."""
    intake = Intake(services)
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
