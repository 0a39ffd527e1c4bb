"""Recovering the complaining recipient from a feedback report, and spotting redaction.

Recovery order (first source that yields a real address wins; redacted values seen on the way
are kept as entries without an address):

1. ``Original-Rcpt-To`` of the feedback-report part (RFC 5965 §3.2, may repeat), then the
   draft-era ``Removal-Recipient`` of opt-out reports, then ``X-HmXmrOriginalRecipient``,
   which Microsoft JMRP adds to the returned message;
2. our own recipient header (default ``X-Stoplist-Recipient``) in the returned message;
3. our signed reference header: not resolved here, only marked with a ``ref-token`` entry so
   the caller knows to verify and resolve it before falling back to what follows;
4. the VERP-encoded envelope sender (the returned ``Return-Path``, else ``Original-Mail-From``,
   which RFC 5965 defines as the same MAIL FROM) matched against the caller's pattern;
5. the returned ``To`` header.

Providers redact the recipient in several ways (``redacted@...``, ``xxxxx@...``, ``****``,
``undisclosed-recipients:;``, an empty field; RFC 6590 leaves the method open): a redacted value
is never returned as an address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import getaddresses
from typing import Final

from arf.model import (
    SOURCE_ORIGINAL_RCPT_TO,
    SOURCE_PROVIDER_HEADER,
    SOURCE_RECIPIENT_HEADER,
    SOURCE_REF_TOKEN,
    SOURCE_REMOVAL_RECIPIENT,
    SOURCE_RETURN_PATH_VERP,
    SOURCE_TO_HEADER,
    RecoveredRecipient,
)

__all__ = [
    "addr_specs",
    "extract_addresses",
    "is_redacted",
    "recover_recipients",
    "verp_recipient",
]

# Local parts that stand for "someone we will not name".
_REDACTED_LOCAL: Final = re.compile(
    r"""^(?:
        redacted.* | .*[-_.]redacted | undisclosed.* | unlisted.* | hidden | removed
        | withheld | anonymi[sz]ed | unknown
        | (?:x|\*|\#|\?|_|-|\.){2,}        # xxxxx, ****, ####, ???, ...
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
# Domains that cannot receive mail or are masked: RFC 2606 ".invalid", "xxxx", "***", "redacted".
_REDACTED_DOMAIN: Final = re.compile(
    r"^(?:.*\.invalid|invalid|redacted(?:\..*)?|(?:x|\*|\#|\?|_|-|\.)+)$", re.IGNORECASE
)
# Address text read from one value, and from all the values of one source, at most (32 KB
# is more than a thousand plain addresses); and recipients taken from one report.
TEXT_MAX: Final = 32 * 1024
MAX_RECIPIENTS: Final = 1000
_ADDR_SPEC: Final = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+$")
# A VERP group that is itself an address may encode the "@" as "=" (b+user=example.com@...).
_VERP_AT: Final = re.compile(r"^(?P<local>.+)=(?P<domain>[^=@]+)$")


def addr_specs(value: str, limit: int = TEXT_MAX) -> list[str]:
    """The addr-specs of one address-list value as ``email.utils.getaddresses`` reads it.

    The standard library's address parser recurses once per group (``a:b:c:...``) and per
    nested comment (``((((...``), so a hostile value raises ``RecursionError`` from deep
    inside it; such a value names no address we could trust, and yields none.  It also costs
    some 50 µs an address, so only the first ``limit`` characters are read, cut after the
    last complete list element (a cut inside an address would make up another address).
    """
    if len(value) > limit:
        value = value[:limit].rpartition(",")[0]
    try:
        return [addr for _name, addr in getaddresses([value]) if addr]
    except RecursionError:
        return []


def is_redacted(value: str | None) -> bool:
    """Whether a recipient value is a provider's stand-in rather than an address.

    Anything that is not a plain addr-spec (empty, ``undisclosed-recipients:;``, a bare word)
    counts as redacted, as do masked local parts and domains.
    """
    if value is None:
        return True
    text = value.strip().strip("<>").strip()
    if not _ADDR_SPEC.match(text):
        return True
    local, _, domain = text.rpartition("@")
    return bool(_REDACTED_LOCAL.match(local) or _REDACTED_DOMAIN.match(domain))


def extract_addresses(values: Iterable[str]) -> list[str | None]:
    """Bare lower-cased addresses from header or field values, None for each redacted one.

    A value with no usable address at all (``"undisclosed"``, ``<Undisclosed Recipients>``,
    an empty field) yields a single None.
    """
    found: list[str | None] = []
    budget = TEXT_MAX  # address text read over all the values: see addr_specs
    for value in values:
        if budget <= 0 or len(found) >= MAX_RECIPIENTS:
            break
        # RFC 5965 fields sometimes carry an RFC 3464 address type ("rfc822; user@...").
        text = re.sub(r"^\s*rfc822\s*;", "", value, flags=re.IGNORECASE)
        entries = addr_specs(text, budget)
        budget -= len(text)
        if not entries:
            found.append(None)
            continue
        for addr in entries:
            found.append(None if is_redacted(addr) else addr.strip().lower())
    return found[:MAX_RECIPIENTS]


def verp_recipient(sender: str | None, pattern: re.Pattern[str] | None) -> str | None:
    """The recipient encoded in a VERP envelope sender, or None.

    ``pattern`` has either a group ``recipient`` (an address, its "@" possibly written "=")
    or groups ``local`` and ``domain``.
    """
    if not sender or pattern is None:
        return None
    addrs = addr_specs(sender)
    if not addrs:
        return None
    match = pattern.fullmatch(addrs[0]) or pattern.fullmatch(addrs[0].lower())
    if match is None:
        return None
    groups = match.groupdict()
    candidate: str | None = None
    if groups.get("recipient"):
        candidate = groups["recipient"]
        if "@" not in candidate:
            at = _VERP_AT.match(candidate)
            candidate = f"{at['local']}@{at['domain']}" if at else None
    elif groups.get("local") and groups.get("domain"):
        candidate = f"{groups['local']}@{groups['domain']}"
    if candidate is None or is_redacted(candidate):
        return None
    return candidate.lower()


def recover_recipients(
    *,
    original_rcpt_to: list[str],
    removal_recipient: list[str],
    provider_header: list[str],
    recipient_header: list[str],
    ref_token: str | None,
    verp: str | None,
    to_header: list[str],
) -> list[RecoveredRecipient]:
    """Walk the sources in recovery order; stop after the first that gives a real address."""
    recovered: list[RecoveredRecipient] = []
    seen: set[str] = set()

    def take(source: str, values: list[str]) -> bool:
        got = False
        for addr in extract_addresses(values):
            if addr is None:
                recovered.append(RecoveredRecipient(None, source, redacted=True))
            elif addr not in seen:
                seen.add(addr)
                recovered.append(RecoveredRecipient(addr, source, redacted=False))
                got = True
        return got

    for source, values in (
        (SOURCE_ORIGINAL_RCPT_TO, original_rcpt_to),
        (SOURCE_REMOVAL_RECIPIENT, removal_recipient),
        (SOURCE_PROVIDER_HEADER, provider_header),
        (SOURCE_RECIPIENT_HEADER, recipient_header),
    ):
        if take(source, values):
            return recovered
    if ref_token:
        recovered.append(RecoveredRecipient(None, SOURCE_REF_TOKEN, redacted=False))
    if verp:
        recovered.append(RecoveredRecipient(verp, SOURCE_RETURN_PATH_VERP, redacted=False))
        return recovered
    take(SOURCE_TO_HEADER, to_header)
    return recovered
