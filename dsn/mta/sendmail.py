"""Sendmail (and V5 sendmail, and MTAs imitating it) without a delivery-status part.

Markers: "----- The following addresses had permanent fatal errors -----" and
"----- Transcript of session follows -----"; recipients appear as ``<addr>``, ``>>> addr``
or ``554 <addr>... reason`` in the transcript.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^\s*-{3,}\s*(?:The following addresses had|Transcript of session follows"
    r"|Unsent message follows)",
    re.M | re.I,
)
_END: Final = re.compile(
    r"^\s*-{3,}\s*(?:Original message|Unsent message|Returned message)", re.M | re.I
)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail, end=_END)
