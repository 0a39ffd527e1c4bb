"""The SMTP sink (RFC 5321): receives bounces and feedback-loop reports and stores them durably,
on the service's own event loop, never as a relay.

``handler`` (aiosmtpd hooks: recipients, store before 250), ``data`` (the DATA reader),
``protocol`` (aiosmtpd's protocol with time limits, an abuse budget, STARTTLS rules), ``server``
(the listening socket, connection gate, ``start_sink``) and ``internals`` (the private parts of
asyncio and aiosmtpd the others use, checked at start). May import ``app.intake``,
``app.intake.child``, the container and everything below them.
"""

from app.intake.smtp.data import LINE_TOO_LONG, read_data
from app.intake.smtp.handler import RecipientPolicy, Reply, SinkHandler
from app.intake.smtp.protocol import COMMAND_SLACK, MAX_ERRORS, SinkSMTP
from app.intake.smtp.server import SmtpSink, start_sink

__all__ = [
    "COMMAND_SLACK",
    "LINE_TOO_LONG",
    "MAX_ERRORS",
    "RecipientPolicy",
    "Reply",
    "SinkHandler",
    "SinkSMTP",
    "SmtpSink",
    "read_data",
    "start_sink",
]
