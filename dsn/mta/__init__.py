"""The bounce parsers, tried in the one order written here.

Order, and why:

1. ``rfc3464`` — a ``message/delivery-status`` part is structured data the reporting MTA
   wrote for machines; when present it beats anything read from prose.
2. ``amazonses`` — JSON event notifications: unmistakable, and prose scanning would read
   addresses out of the JSON blindly.
3. Families identified by their own words, most specific first, so a generic family
   cannot claim a message a specific one understands better: ``gmail`` (Google sender
   and its phrases) before ``exim`` (Gmail copies Exim's X-Failed-Recipients header);
   ``postfix``, ``qmail`` (also Yahoo!), ``sendmail`` (also V5 sendmail and imitators);
   ``exchange`` (2003 and the Exchange 2007+/Office 365 text notices); ``domino``,
   ``notes``, ``mailmarshal``; ``imail`` (by its X-Mailer) and ``kddi`` (whose notices come
   from ``no-reply@`` with the subject "Mail", so only its own parser can claim them).

Every parser returns ``None`` for messages that are not its format.  The text scanner in
``dsn.mta.fallback`` is not in this list: it runs only for messages that look like bounces
after every parser declined.
"""

from __future__ import annotations

from typing import Final

from dsn.mta import (
    amazonses,
    domino,
    exchange,
    exim,
    gmail,
    imail,
    kddi,
    mailmarshal,
    notes,
    postfix,
    qmail,
    rfc3464,
    sendmail,
)
from dsn.mta.base import Parser

__all__ = ["PARSERS"]

PARSERS: Final[tuple[tuple[str, Parser], ...]] = (
    ("rfc3464", rfc3464.parse),
    ("amazonses", amazonses.parse),
    ("gmail", gmail.parse),
    ("exim", exim.parse),
    ("postfix", postfix.parse),
    ("qmail", qmail.parse),
    ("sendmail", sendmail.parse),
    ("exchange", exchange.parse),
    ("domino", domino.parse),
    ("notes", notes.parse),
    ("mailmarshal", mailmarshal.parse),
    ("imail", imail.parse),
    ("kddi", kddi.parse),
)
