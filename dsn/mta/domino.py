"""Lotus Domino: "Your message ... was not delivered to: <addr> because: <reason>"."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

# [ \t]*, not \s*: a multi-line \s* from every line start is quadratic in blank lines.
_MARKER: Final = re.compile(r"^[ \t]*was not delivered to:[ \t]*$", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail, start=_MARKER)
