"""Ipswitch IMail Server (``X-Mailer: <SMTP32 v...>``): one line per failed recipient,
the reason before the address ("Unknown user: addr", "Invalid final delivery userid: addr",
"Delivery failed 20 attempts: addr", "undeliverable to addr"), then the remote server's
reply under "Body of message generated response:" (or "DATA command generated response:",
"Additional RCPT TO generated following response:", ...) below that recipient's line,
up to "Original message follows."."""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, delay_action, find_reply_code, find_status

__all__ = ["parse"]

_RECIPIENT: Final = re.compile(
    # "why" has a space or ends in " to": a single word and a colon is a header ("To:").
    rf"^[ \t]*(?P<why>[A-Za-z][^:@\n]{{0,80}}?(?:[ \t][^:@\n]*?:|[ \t]to))"
    rf"[ \t]*<?{ADDRESS.pattern}>?[ \t]*$",
    re.M,
)
_RESPONSE: Final = re.compile(
    r"^(?:Body of message|DATA command|Additional RCPT TO|Server response to MAIL FROM"
    r"|Unexpected response to EHLO/HELO|Unexpected connection response from server"
    r"|SMTP connection failed)[^\n]*:[ \t]*$",
    re.M,
)


def parse(mail: Mail) -> list[Found] | None:
    if not str(mail.message.get("X-Mailer", "")).lstrip().startswith("<SMTP32 v"):
        return None
    matches = list(_RECIPIENT.finditer(mail.text))
    found: list[Found] = []
    for position, match in enumerate(matches):
        addr = normalise_address(match.group(2))
        if addr is None or any(f.recipient == addr for f in found):
            continue
        # The reply under a recipient's line is that recipient's, up to the next one.
        stop = matches[position + 1].start() if position + 1 < len(matches) else None
        reply = _response(mail.text[match.end() : stop])
        diagnostic = f"{match.group('why').strip().rstrip(':')} {reply}".strip()
        found.append(
            Found(
                recipient=addr,
                diagnostic=diagnostic,
                status=find_status(reply),
                reply_code=find_reply_code(reply),
                action=delay_action(mail, diagnostic),
            )
        )
    return found or None


def _response(text: str) -> str:
    """The remote server's reply lines after a response heading, to a blank line."""
    match = _RESPONSE.search(text)
    if match is None:
        return ""
    block = text[match.end() :].lstrip("\n")
    end = block.find("\n\n")
    return " ".join((block if end < 0 else block[:end]).split())
