"""The listening sink: admits connections (count, allowed networks), builds a protocol per
connection, offers STARTTLS when a certificate and key are set, and starts intake processing.

Connections beyond ``smtp_max_connections`` get ``421 4.3.2``; peers outside
``smtp_allowed_networks`` (when set) get ``554 5.7.1``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import Any

from app.container import Services
from app.intake import Intake
from app.intake.child import open_intake
from app.intake.smtp import internals
from app.intake.smtp.handler import Reply, SinkHandler, peer_host
from app.intake.smtp.protocol import SinkSMTP
from app.settings import Settings

log = logging.getLogger("app.smtp")


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
        self._protocols: set[SinkSMTP] = set()
        self._server: asyncio.Server | None = None

    def admit(self, peername: Any) -> str | None:
        """None to admit a new connection, else the reply to close it with."""
        host = peer_host(peername)
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

    def forget(self, proto: SinkSMTP) -> None:
        self._protocols.discard(proto)

    def _protocol(self) -> SinkSMTP:
        proto = SinkSMTP(
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
        changed = internals.problems(loop)
        if changed:
            raise RuntimeError("the SMTP sink cannot run on these libraries: " + "; ".join(changed))
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
