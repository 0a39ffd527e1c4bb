"""Zoho Mail: a text notice that opens with Exim's words ("This message was created
automatically by mail delivery software.") and is stamped with Zoho's ``X-ZohoMail`` header.

One line per recipient, two layouts:

* ``addr Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <addr>... User Unknown`` (the
  reply code after a colon, where the shared scanner does not look for one), also written
  ``ERROR CODE :550 - <the remote server's text>``.  "Invalid Address" is Zoho's label for
  any refused recipient: the diagnostic starts at the first ``ERROR CODE``, so the server's
  words decide;
* ``[Status: Error, Address: <addr>, ResponseCode 421, , Host not reachable.]`` when Zoho
  gave up on a host it could not reach.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_OPENING: Final = re.compile(
    r"^This message was created automatically by mail delivery software", re.M
)
_RECIPIENT: Final = re.compile(
    r"^[ \t]*(?:\[Status:[^,\]]*,[ \t]*Address:[ \t]*)?<?(?P<addr>[^\s<>@,]+@[^\s<>,]+)>?,?"
    r"[ \t]+(?P<rest>.*(?:ERROR[_ ]CODE[ \t]*:|ResponseCode[ \t]+\d).*)$"
)
_CODE: Final = re.compile(r"(?:ERROR[_ ]CODE[ \t]*:|ResponseCode)[ \t]*([245]\d\d)\b")
# Where the remote server's words start: Zoho's own "Invalid Address" before them is its label
# for every refused recipient, whatever the server said.
_ERROR_CODE: Final = re.compile(r"ERROR[_ ]CODE[ \t]*:")
_SOFT_BREAK: Final = re.compile(r"=\n")
_END: Final = re.compile(r"^[ \t]*(?:Received: from |-{3,}.*original message)", re.I)


def _is_zoho(mail: Mail) -> bool:
    if mail.message.get("X-ZohoMail") is not None:
        return True
    return "zoho" in mail.sender and mail.header("X-Mailer").lower().startswith("zoho")


def parse(mail: Mail) -> list[Found] | None:
    if not _is_zoho(mail) or not _OPENING.search(mail.text):
        return None
    # Zoho wraps its lines with quoted-printable soft breaks ("ERROR_CODE :5.1.=" / "1 <...>"),
    # and not every copy of the notice still says so in its Content-Transfer-Encoding.
    text = _SOFT_BREAK.sub("", mail.text)
    found = read_blocks(text, _RECIPIENT, start=_OPENING, end=_END)
    for entry in found:
        start = _ERROR_CODE.search(entry.diagnostic)
        if start is not None:
            entry.diagnostic = entry.diagnostic[start.start() :]
        code = _CODE.search(entry.diagnostic)
        if entry.reply_code is None and code is not None:
            entry.reply_code = int(code.group(1))
    return found or None
