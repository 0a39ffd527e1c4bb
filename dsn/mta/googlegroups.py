"""Google Groups: a post to a group that does not exist, or that the sender may not post to,
comes back from ``mailer-daemon@googlemail.com`` as a "Delivery Status Notification" with
no status part: a letter ("We're writing to let you know that the group you tried to
contact (name) may not exist, or you may not have permission to post messages to the
group.") followed by a bullet list of possible causes, signed "Google Groups".  The group
address is only in ``X-Failed-Recipients``; the explanation is the letter itself."""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, sharing_diagnostic
from dsn.mta.blocks import join_words

__all__ = ["parse"]

_SENDER: Final = re.compile(r"\bmailer-daemon@(?:googlemail|google)\.com\b")
_LETTER: Final = re.compile(
    r"the group you tried to contact|^[ \t]*Google Groups[ \t]*$|groups\.google\.com", re.M | re.I
)
# Gmail's own notice (``gmail``): also from mailer-daemon@googlemail.com with the header.
_GMAIL: Final = re.compile(
    r"^(?:Delivery to the following recipients? |\*\* (?:Address not found|Message not delivered))"
    r"|Technical details of (?:permanent|temporary) failure",
    re.M,
)
_END: Final = re.compile(r"^[ \t]*-{3,}[ \t]*Original message[ \t]*-{3,}", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    header = mail.header("X-Failed-Recipients")
    if not header or not _SENDER.search(mail.sender) or not _LETTER.search(mail.text):
        return None
    if _GMAIL.search(mail.text):
        return None
    end = _END.search(mail.text)
    letter = mail.text[: end.start()] if end else mail.text
    # The letter up to its sign-off: the greeting, the statement and the possible causes.
    diagnostic = join_words(letter.split("\n"))
    recipients: list[str] = []
    for part in header.split(","):
        addr = normalise_address(part)
        if addr is not None and addr not in recipients and len(recipients) < MAX_RECIPIENTS:
            recipients.append(addr)
    return sharing_diagnostic(recipients, diagnostic, "failed") or None
