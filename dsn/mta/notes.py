"""Lotus Notes (old SMTP MTA): "------- Failure Reasons --------", a reason line, then the
address alone, then "------- Returned Message --------"."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_START: Final = re.compile(r"^-+\s*Failure Reasons\s*-+", re.M | re.I)
_END: Final = re.compile(r"^-+\s*Returned Message\s*-+", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not _START.search(mail.text):
        return None
    return parse_text_report(mail, start=_START, end=_END)
