"""qmail-send (and netqmail, qmail-ldap, vpopmail's deliveries, and Yahoo!, which uses its
format): "Hi. This is the qmail-send program at <host>." and "I'm afraid I wasn't able to
deliver your message to the following addresses.", then one block per failed recipient,
written by ``qmail-send.c``: the address as ``<addr>:`` on a line of its own, then the
words of whoever refused it, to a blank line:

    <user@example.org>:
    192.0.2.9 does not like recipient.
    Remote host said: 550 5.1.1 <user@example.org>: Recipient address rejected
    Giving up on 192.0.2.9.

qmail's own reasons end in a status in parentheses ("Sorry, no mailbox here by that name.
(#5.1.1)", vpopmail adds its name before it); a delivery given up after the queue lifetime
adds "I'm not going to try again; this message has been in the queue too long.".  The block
is the recipient's whole diagnostic: the paragraph above it ("This is a permanent error")
is not.  The report ends at "--- Below this line is a copy of the message.".

That layout is a published format, QSBMF (cr.yp.to/proto/qsbmf.txt): an intro paragraph
beginning "Hi. This is the", recipient paragraphs beginning ``<addr>:``, a break paragraph
beginning "---".  Other programs write it ("Hi. This is the mail transport program at",
"Hi. The MTA program at"); for them only the recipient paragraphs are read (no prose
scanning).
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS
from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report, read_headed_blocks

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^Hi\. This is the qmail|qmail-send program|^Sorry, we were unable to deliver your message"
    r"|^I'm afraid I wasn't able to deliver your message",
    re.M | re.I,
)
# The other openings seen with qmail's records ("This is the mail delivery agent at", ...)
# are ``x4``'s, which asks this parser first.
_QSBMF_INTRO: Final = re.compile(r"^(?:Hi\. This is the |Hi\. The MTA program at )", re.M)
# "<addr>:" alone (qmail-send) or followed by the reason (QSBMF allows both).
_BLOCK_HEAD: Final = re.compile(rf"^<{ADDRESS.pattern}>:[ \t]*(?P<rest>.*?)[ \t]*$")


def parse(mail: Mail) -> list[Found] | None:
    if _MARKER.search(mail.text):
        return _blocks(mail) or parse_text_report(mail)
    if _QSBMF_INTRO.search(mail.text):
        return _blocks(mail)
    return None


def _blocks(mail: Mail) -> list[Found] | None:
    found = read_headed_blocks(mail, _BLOCK_HEAD, "<")
    return [f for f in found if f.diagnostic] or None
