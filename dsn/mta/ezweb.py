"""au by KDDI's EZweb gateway (``ezweb.ne.jp``, later ``au.com``): "Mail System Error -
Returned Mail" from ``Postmaster@ezweb.ne.jp``.

The reason comes first and speaks for every recipient listed after it ("The user(s) account
is disabled.", "The user(s) account is temporarily over quota.", "Your message was not
delivered within 0 days and 1 hours."), sometimes beside a Japanese version of the same
words; each recipient is then a ``<addr>`` line, ``<addr>: 550 user unknown ...``, or a
``Recipient: <addr>`` line followed by a ``>>> RCPT TO`` / ``<<< 550 ...`` exchange
("Each of the following recipients was rejected by a remote mail server.").  The text ends
at a line of 50 dashes or the returned message.

No single header is EZweb's alone, so two of its marks must agree (sender, subject, a
``Received`` line written by "EZweb Mail", an EZweb or au Message-ID), as the template is
the same whichever of them a relay rewrote.  KDDI's own notice ("Could not be delivered to:")
is left to ``kddi``.

au's spam filter marks the notice it returns for a message it refused with the header
``X-SPASIGN: NG``: the verdict is added to each recipient's explanation (and kept as
``vendor_category``), so the classifier's ``au-spasign-ng`` rule reads it as a policy refusal
rather than as whatever the notice's generic sentence says.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_SENDER: Final = re.compile(r"\bpostmaster@(?:ezweb\.ne\.jp|au\.com)\b")
_SUBJECT: Final = "Mail System Error - Returned Mail"
_RECEIVED: Final = re.compile(r"ezweb\.ne\.jp \(EZweb Mail\) with|\.au\.com \(")
_MESSAGE_ID: Final = re.compile(r"[@.](?:ezweb\.ne\.jp|au\.com)>\s*$")
_START: Final = re.compile(
    r"^[ \t]*(?:The user\(s\) |Your message |Each of the following|<[^\s<>@]+@[^\s<>]+>)"
)
_RECIPIENT: Final = re.compile(
    r"^[ \t]*(?:Recipient:[ \t]*)?<(?P<addr>[^\s<>@]+@[^\s<>]+)>:?(?P<rest>.*)$"
)
_END: Final = re.compile(r"^-{20,}\s*$|^Content-Type: message/rfc822")
_KDDI: Final = re.compile(r"Could not be delivered to:", re.I)
# Japanese lines repeat the English ones; non-ASCII text is left out of the explanation
# so that the classifier reads the provider's English words.
_NOT_ASCII: Final = re.compile(r"[^\x00-\x7f]")


def _marks(mail: Mail) -> int:
    received = mail.message.get_all("Received") or []
    return sum(
        (
            _SENDER.search(mail.sender) is not None,
            mail.subject == _SUBJECT,
            any(_RECEIVED.search(str(line)) for line in received),
            _MESSAGE_ID.search(mail.header("Message-ID")) is not None,
        )
    )


def parse(mail: Mail) -> list[Found] | None:
    if _marks(mail) < 2 or _KDDI.search(mail.text):
        return None
    found = read_blocks(mail.text, _RECIPIENT, start=_START, end=_END, skip=_NOT_ASCII)
    if mail.header("X-SPASIGN").strip().upper() == "NG":
        for entry in found:
            entry.diagnostic = f"{entry.diagnostic} X-SPASIGN: NG".strip()
            entry.vendor_category = "X-SPASIGN: NG"
    return found or None
