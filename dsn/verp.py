"""Decoding the recipient from a VERP envelope address (``b+user=example.com@bounces...``)."""

from __future__ import annotations

import re
from functools import lru_cache

from dsn.address import normalise_address

__all__ = ["compile_verp", "decode_verp"]

_PLACEHOLDERS = {
    "{local}": r"(?P<local>.+)",
    "{domain}": r"(?P<domain>[^@=]+?)",
    "{recipient}": r"(?P<recipient>.+?)",
    "*": r".*?",
}
_TOKEN = re.compile(r"\{local\}|\{domain\}|\{recipient\}|\*")


@lru_cache(maxsize=32)
def compile_verp(pattern: str) -> re.Pattern[str]:
    """A template (``b+{local}={domain}@bounces.example.net``) or a regex, compiled once."""
    if "{local}" in pattern or "{domain}" in pattern or "{recipient}" in pattern:
        pieces: list[str] = []
        last = 0
        for match in _TOKEN.finditer(pattern):
            pieces.append(re.escape(pattern[last : match.start()]))
            pieces.append(_PLACEHOLDERS[match.group(0)])
            last = match.end()
        pieces.append(re.escape(pattern[last:]))
        return re.compile("^" + "".join(pieces) + "$", re.I)
    return re.compile(pattern, re.I)


def decode_verp(pattern: str | None, address: str | None) -> str | None:
    """The original recipient encoded in ``address``, or None when it does not match."""
    if not pattern or not address:
        return None
    bare = normalise_address(address) or address.strip().strip("<>")
    try:
        regex = compile_verp(pattern)
    except re.error:
        return None
    match = regex.search(bare)
    if match is None:
        return None
    groups = match.groupdict()
    if groups.get("recipient"):
        return normalise_address(
            groups["recipient"].replace("=", "@", 1)
            if "@" not in groups["recipient"]
            else groups["recipient"]
        )
    local, domain = groups.get("local"), groups.get("domain")
    if local and domain:
        return normalise_address(f"{local}@{domain}")
    if match.groups():
        candidate = match.group(1)
        if "@" not in candidate and "=" in candidate:
            local, _, domain = candidate.rpartition("=")
            candidate = f"{local}@{domain}"
        return normalise_address(candidate)
    return None
