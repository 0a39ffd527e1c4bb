"""BIGLOBE (and the cable ISPs on its mail platform: inacatv, tmtv, ttv): "Returned mail:"
from ``postmaster@<isp>.ne.jp``, an ISO-2022-JP text whose English part lists the failed
addresses under "----- The following addresses had delivery problems -----" and gives one
reason for all of them under "----- Non-delivered information -----" ("The number of
messages in recipient's mailbox exceeded the local limit.", "Mail Delivery Failed... User
unknown")."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_SENDER: Final = re.compile(r"\bpostmaster@(?:biglobe|inacatv|tmtv|ttv)\.ne\.jp\b")
_START: Final = re.compile(r"^[ \t]*-+ The following addresses had delivery problems -+")
_COMMON: Final = re.compile(r"^[ \t]*-+ Non-delivered information -+")
_RECIPIENT: Final = re.compile(r"^[ \t]*<?(?P<addr>[^\s<>@]+@[^\s<>]+?)>?[ \t]*$")
_END: Final = re.compile(r"^Content-Type: message/rfc822|^-{2}\S")
_NOT_ASCII: Final = re.compile(r"[^\x00-\x7f]")


def parse(mail: Mail) -> list[Found] | None:
    if not _SENDER.search(mail.sender) or not mail.subject.startswith("Returned mail:"):
        return None
    found = read_blocks(
        mail.text, _RECIPIENT, start=_START, end=_END, common=_COMMON, skip=_NOT_ASCII
    )
    return found or None
