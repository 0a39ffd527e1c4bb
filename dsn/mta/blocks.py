"""Reading a provider's notice as recipient blocks: the shape most mailbox providers use.

A provider's own notice is short and fixed: an opening line (the provider's template), then
one block per failed recipient — a line that names the address, followed by the lines that
explain it — and sometimes one explanation for every recipient, either before the first
address ("The user(s) account is disabled.") or under a heading of its own after the list
(Biglobe's "----- Non-delivered information -----").  ``read_blocks`` reads that shape
once, so that each provider module says only what its template looks like.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.model import DIAGNOSTIC_MAX, MAX_RECIPIENTS
from dsn.mta.base import Found, find_reply_code, find_status

__all__ = ["join_words", "read_blocks"]

# Lines that only decorate ("-----", "=====", "|-----|"): never part of an explanation.
_DECORATION: Final = re.compile(r"^[\s\-=_*#|~+]*$")
_KEEP: Final = 4 * DIAGNOSTIC_MAX


def join_words(lines: list[str]) -> str:
    """The lines as one whitespace-normalised explanation, bounded."""
    return " ".join(" ".join(lines).split())[:_KEEP]


def read_blocks(
    text: str,
    recipient: re.Pattern[str],
    *,
    start: re.Pattern[str] | None = None,
    end: re.Pattern[str] | None = None,
    common: re.Pattern[str] | None = None,
    skip: re.Pattern[str] | None = None,
    default_domain: str | None = None,
) -> list[Found]:
    """Recipients and their explanations.

    ``recipient`` matches a line naming a failed recipient; its group ``addr`` is the address
    and an optional group ``rest`` is the first words of its explanation.  Reading begins on
    the ``start`` line (inclusive: templates often open with the reason) and stops before the
    ``end`` line.  Lines before the first recipient, and every line after a ``common``
    heading, explain every recipient.  ``skip`` drops lines that carry nothing (a template's
    boilerplate).  A name without a domain gets ``default_domain`` (AOL's screen names).
    """
    lines = text.split("\n")
    if start is not None:
        for index, line in enumerate(lines):
            if start.search(line):
                lines = lines[index:]
                break
        else:
            return []
    before: list[str] = []
    after: list[str] = []
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_common = False
    for line in lines:
        if end is not None and end.search(line):
            break
        if common is not None and common.search(line):
            in_common = True
            continue
        if not in_common:
            match = recipient.match(line)
            if match is not None:
                raw = match.group("addr")
                if default_domain and "@" not in raw:
                    raw = f"{raw}@{default_domain}"
                addr = normalise_address(raw)
                if addr is not None:
                    if addr not in blocks and len(blocks) >= MAX_RECIPIENTS:
                        break
                    current = blocks.setdefault(addr, [])
                    rest = match.groupdict().get("rest")
                    if rest and rest.strip():
                        current.append(rest)
                    continue
        if _DECORATION.match(line) or (skip is not None and skip.search(line)):
            continue
        if in_common:
            after.append(line)
        elif current is None:
            before.append(line)
        else:
            current.append(line)
    # The shared lines are joined once: a thousand recipients must not each re-read them.
    shared_before, shared_after = join_words(before), join_words(after)
    found: list[Found] = []
    for addr, own in blocks.items():
        diagnostic = join_words([shared_before, join_words(own), shared_after])
        found.append(
            Found(
                recipient=addr,
                diagnostic=diagnostic,
                status=find_status(diagnostic),
                reply_code=find_reply_code(diagnostic),
                action="failed",
            )
        )
    return found
