"""Address normalisation: the one definition of "the same address" used everywhere.

A normalised address is ``local@domain`` with the local part lower-cased, the domain lower-cased and
in its IDNA ASCII form (``bücher.de`` -> ``xn--bcher-kva.de``), display names and angle brackets
stripped. Validity is flanker's (RFC 5322 addr-spec with its real-world leniencies).

A full flanker parse costs ~16 µs; the pre-send check normalises thousands of addresses a second, so
plain ASCII addr-specs (nearly all real input) take an exact fast path whose agreement with flanker
is proved by a property test (``tests/test_addresses.py``). Anything the fast path does not accept
goes through flanker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

# flanker builds its ply grammars at import and logs harmless "Symbol ... is unreachable" warnings.
logging.getLogger("flanker.addresslib._parser.parser").setLevel(logging.ERROR)

from flanker.addresslib import address as _flanker  # noqa: E402

# Its lexer logs a WARNING with the input for every character it cannot read (and sets its own
# level when imported, so this comes after): junk sent to the check would flood the log and copy
# untrusted input into it. We report invalid input ourselves.
logging.getLogger("flanker.addresslib._parser.lexer").setLevel(logging.ERROR)

MAX_LENGTH = 254  # RFC 5321 §4.5.3.1.3 path limit minus the angle brackets

# Dot-atom local part and LDH domain of two or more labels, ASCII only (RFC 5322 §3.2.3, RFC 1035).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})+"
_FAST_RE = re.compile(_FAST)
_fast_match = _FAST_RE.fullmatch
# The same, line after line: a whole batch tested in one call. No address of the fast path can hold
# a line feed, so a match means every line is one (and a count of lines that differs from the
# count of inputs means some input held a line feed).
_FAST_LINES_RE = re.compile(rf"{_FAST}(?:\n{_FAST})*")
# A label with "--" in its third and fourth places is reserved (RFC 5891 §4.2.3.1: "xn--" and
# future prefixes); only the IDNA code path decides those, so such input takes the slow path.
_RESERVED = "--"


def fast_path_accepts(raw: str) -> bool:
    """Plain ASCII dot-atom@LDH input whose normal form is its lower-case: no parser needed."""
    return bool(_fast_match(raw)) and len(raw) <= MAX_LENGTH and _RESERVED not in raw


class InvalidAddress(ValueError):
    """An address that cannot be normalised; ``why`` says what is wrong with it."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"{address!r}: {why}")
        self.address = address
        self.why = why


def normalise_address(raw: str) -> str:
    """Return the normalised form of ``raw`` or raise :class:`InvalidAddress`."""
    if fast_path_accepts(raw):
        return raw.lower()
    return _normalise_slow(raw)


def try_normalise(raw: str) -> str | None:
    """Like :func:`normalise_address` but ``None`` for invalid input (hot paths)."""
    if fast_path_accepts(raw):
        return raw.lower()
    try:
        return _normalise_slow(raw)
    except InvalidAddress:
        return None


def try_normalise_many(raws: Sequence[object]) -> list[str | None]:
    """:func:`try_normalise` of each item (``None`` for invalid ones and non-strings), for the
    batch check: the fast path's test inlined with its callables bound once, which saves two
    Python calls an address. A batch that is all fast-path input (nearly every batch) is tested
    by one match over its lines and lower-cased in one call."""
    try:
        joined = "\n".join(raws)  # type: ignore[arg-type]
    except TypeError:  # an item that is not a string
        joined = ""
    if (
        _FAST_LINES_RE.fullmatch(joined)
        and _RESERVED not in joined
        and max(map(len, raws)) <= MAX_LENGTH  # type: ignore[arg-type]
    ):
        lowered = joined.lower().split("\n")
        if len(lowered) == len(raws):
            return cast(list[str | None], lowered)
    match, limit, reserved = _fast_match, MAX_LENGTH, _RESERVED
    out: list[str | None] = []
    append = out.append
    for raw in raws:
        if raw.__class__ is str:
            if match(raw) and len(raw) <= limit and reserved not in raw:
                append(raw.lower())
            else:
                append(try_normalise(raw))
        else:
            append(try_normalise(raw) if isinstance(raw, str) else None)
    return out


@lru_cache(maxsize=4096)
def _normalise_slow(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidAddress(raw, "empty")
    if len(text) > 1000:
        raise InvalidAddress(raw[:64] + "...", "too long")
    if any(ch in text for ch in "\r\n\x00"):
        raise InvalidAddress(raw, "contains a line break or NUL")
    parsed = _flanker.parse(text)
    if parsed is None or not isinstance(parsed, _flanker.EmailAddress):
        raise InvalidAddress(raw, "not a valid email address")
    mailbox: str = parsed.mailbox
    try:
        domain: str = parsed.ace_hostname
    except (UnicodeError, ValueError):
        raise InvalidAddress(raw, "domain is not a valid internationalised name") from None
    result = f"{mailbox.lower()}@{domain.lower()}"
    if len(result) > MAX_LENGTH:
        raise InvalidAddress(raw, f"longer than {MAX_LENGTH} characters")
    if "." not in domain and not domain.startswith("["):
        raise InvalidAddress(raw, "domain has no dot (not an internet domain)")
    return result


def domain_of(normalised: str) -> str:
    return normalised.rpartition("@")[2]


def flanker_normalise(raw: str) -> str | None:
    """The reference (slow) normalisation, exposed for the agreement property test."""
    try:
        return _normalise_slow.__wrapped__(raw)
    except InvalidAddress:
        return None
