"""The sink's aiosmtpd handler: which recipients it accepts, and storing a message before 250.

* ``RCPT`` is accepted only for ``STOPLIST_SMTP_DOMAINS`` (a domain, or an exact address);
  anything else, and a local part routing elsewhere (``"u@elsewhere"@ours``, ``u%elsewhere@ours``,
  ``elsewhere!u@ours``: RFC 5321 §3.6.1 lets a server refuse them) is ``550 5.7.1``; the ``%`` or
  ``!`` of a recipient's own local part inside one of our signed return paths is not a route.
  More than ``smtp_max_recipients`` is ``452 4.5.3``.
* the 250 after ``DATA`` is sent only once the bytes and envelope are committed (``app.intake``);
  a storage failure or a store slower than ``smtp_storage_timeout_s`` is ``451 4.3.0`` so the
  sending MTA retries; any exception in a hook is the same fixed 451 (aiosmtpd's default would
  answer 500 and echo the exception text to the peer).

aiosmtpd finds a handler's hooks by name; ``SinkHandler`` defines exactly those three.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from aiosmtpd.smtp import SMTP, Envelope, Session

from app import metrics
from app.db import DB_ERRORS
from app.intake import Intake
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


def peer_host(peer: Any) -> str | None:
    """The host part of a socket peer name, for logs and the stored message."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None if peer is None else str(peer)


def reverse_path(mail_from: str | None) -> str:
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
            log.info("smtp: refused relay to %s from %s", address, peer_host(session.peer))
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
                    mail_from=reverse_path(envelope.mail_from),
                    rcpt_to=list(envelope.rcpt_tos),
                    peer=peer_host(session.peer),
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
