"""Delivery events from MTA accounting logs and ESP webhooks: parsed, classified, never raised.

Pure: standard library (plus ``cryptography`` for signature checks), synchronous, no I/O. Each
parser turns one source's records into ``Event`` objects (one per recipient) and ``EventError``
records for input it cannot read; see docs/events.md. Log parsers take lines and yield; webhook
parsers take one request body and return a ``Batch``.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from events.classify import make_event, vendor_meaning
from events.kumomta import parse_kumomta_lines, parse_kumomta_record, parse_kumomta_request
from events.mailgun import parse_mailgun
from events.model import Batch, DeliveryKey, Event, EventError, EventKind, Source, dedupe_id
from events.pmta import parse_pmta
from events.postfix import PostfixJoiner, parse_postfix
from events.postmark import parse_postmark
from events.sendgrid import parse_sendgrid
from events.ses import parse_ses

LogParser = Callable[[Iterable[str], str], Iterator[Event | EventError]]
WebhookParser = Callable[[bytes | str, str], Batch]

# ``stoplist ingest <name>`` and ``POST /v1/events/<name>``: one written table each.
LOG_PARSERS: Final[dict[str, LogParser]] = {
    "pmta": parse_pmta,
    "postfix": parse_postfix,
    "kumomta": parse_kumomta_lines,
}
WEBHOOK_PARSERS: Final[dict[str, WebhookParser]] = {
    "kumomta": parse_kumomta_request,
    "ses": parse_ses,
    "sendgrid": parse_sendgrid,
    "postmark": parse_postmark,
    "mailgun": parse_mailgun,
}

__all__ = [
    "LOG_PARSERS",
    "WEBHOOK_PARSERS",
    "Batch",
    "DeliveryKey",
    "Event",
    "EventError",
    "EventKind",
    "LogParser",
    "PostfixJoiner",
    "Source",
    "WebhookParser",
    "dedupe_id",
    "make_event",
    "parse_kumomta_lines",
    "parse_kumomta_record",
    "parse_kumomta_request",
    "parse_mailgun",
    "parse_pmta",
    "parse_postfix",
    "parse_postmark",
    "parse_sendgrid",
    "parse_ses",
    "vendor_meaning",
]
