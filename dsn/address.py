"""E-mail address helpers: finding addr-specs in free text and normalising them."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ADDRESS", "domain_of", "find_addresses", "normalise_address"]

# A pragmatic addr-spec: dot-atom or quoted local part, a dotted domain (or literal).
ADDRESS: Final = re.compile(
    r"(?<![\w.+=/-])"
    r"((?:\"[^\"\s]{1,64}\"|[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*)"
    r"@(?:[\w-]+(?:\.[\w-]+)+|\[[0-9.:a-fA-F]+\]))",
)
_TYPE_PREFIX = re.compile(r"^\s*(?:rfc822|x400|utf-8|x-unknown|unknown)\s*;\s*", re.I)


def normalise_address(value: str | None) -> str | None:
    """A bare lower-cased addr-spec from a field value (``rfc822; <A@B.example>``)."""
    if not value:
        return None
    text = _TYPE_PREFIX.sub("", value.strip())
    match = ADDRESS.search(text)
    if match is None:
        return None
    addr = match.group(1).strip(".").lower()
    local, _, domain = addr.rpartition("@")
    if not local or ("." not in domain and not domain.startswith("[")):
        return None
    return addr


def find_addresses(text: str) -> list[str]:
    """Every address in ``text``, normalised, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in ADDRESS.finditer(text):
        addr = normalise_address(match.group(1))
        if addr is not None:
            seen.setdefault(addr, None)
    return list(seen)


def domain_of(addr: str | None) -> str | None:
    if not addr or "@" not in addr:
        return None
    return addr.rpartition("@")[2] or None
