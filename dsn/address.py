"""E-mail address helpers: finding addr-specs in free text and normalising them."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ADDRESS", "domain_of", "find_addresses", "normalise_address"]

# A pragmatic addr-spec: dot-atom or quoted local part, a dotted domain (or literal).
# A match may only start where a run of local-part characters starts: were any atext
# character allowed to open a match in the middle of a run, a long run without "@" ("****",
# "=?=?", "!!!!") would be rescanned from each of its characters, quadratic in its length.
# Nor right after an "@": in "a@b@c.example" there is no address, not "b@c.example".
ADDRESS: Final = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~@-])"
    r"((?:\"[^\"\s]{1,64}\"|[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*)"
    r"@(?:[\w-]+(?:\.[\w-]+)+|\[[0-9.:a-fA-F]+\]))",
)
_TYPE_PREFIX = re.compile(r"^\s*(?:rfc822|x400|utf-8|x-unknown|unknown)\s*;\s*", re.I)
# An angle-addr (RFC 5322 §3.4), with an obsolete source route ("<@relay:user@host>").
_ANGLE_ADDR = re.compile(r"<\s*(?:@[^<>:\s]*:)?([^<>\s]*@[^<>\s]+)\s*>")


def normalise_address(value: str | None) -> str | None:
    """A bare lower-cased addr-spec from a field value (``rfc822; <A@B.example>``).

    An address in angle brackets is the address: in ``"alice@example.org" <bob@example.org>``
    the first is a display name, and reading it would act on someone the field does not name
    (the confusion of CVE-2023-27043).
    """
    if not value:
        return None
    text = _TYPE_PREFIX.sub("", value.strip())
    angle = _ANGLE_ADDR.search(text) if "<" in text else None
    match = ADDRESS.search(angle.group(1) if angle is not None else text)
    if match is None:
        return None
    addr = _unquote(match.group(1), text[match.end() : match.end() + 1]).strip(".").lower()
    local, _, domain = addr.rpartition("@")
    if not local or ("." not in domain and not domain.startswith("[")):
        return None
    return addr


def _unquote(addr: str, after: str) -> str:
    """``'user@host'`` in single quotes (Exim at demon.co.uk: "addressed to 'x@host'"): the
    opening quote is an atext character, so the match took it into the local part."""
    if addr.startswith("'") and after == "'":
        return addr[1:]
    return addr


def find_addresses(text: str) -> list[str]:
    """Every address in ``text``, normalised, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in ADDRESS.finditer(text):
        addr = normalise_address(_unquote(match.group(1), text[match.end() : match.end() + 1]))
        if addr is not None:
            seen.setdefault(addr, None)
    return list(seen)


def domain_of(addr: str | None) -> str | None:
    if not addr or "@" not in addr:
        return None
    return addr.rpartition("@")[2] or None
