"""Signed references: who a message was sent to, in a form that comes back with its bounce,
complaint or unsubscribe and that nobody without our key can make up.

Two encodings of one claim (recipient, stream, issue time, key id), each HMAC-SHA256-signed: an
**address form** for the envelope sender (VERP in the spirit of BATV) and the ``mailto:``
unsubscribe address (``b+k2-smq3cg-x4k2p7qa-newsletter=carol=example.net@bounces.example.net``,
all lower case), and a **compact token** (base64url) for ``X-Stoplist-Ref`` and the one-click
unsubscribe URL. The purpose and the form are part of the MAC, so a token minted for one use is
refused for another. Field by field: docs/signed-return-paths.md.

``model`` (what a reference is), ``keys`` (the configured keys), ``encoding`` (MAC and text),
``signer`` (``Signer``). Standard library plus ``app.addresses`` and ``app.streams``; no I/O.
"""

from app.signing.encoding import has_signed_address_form
from app.signing.keys import new_key_secret, parse_signing_keys
from app.signing.model import (
    KEY_ID_RE,
    RFC5321_LOCAL_MAX,
    Purpose,
    RejectReason,
    SigningKey,
    TokenError,
    VerifiedRef,
)
from app.signing.signer import Signer

__all__ = [
    "KEY_ID_RE",
    "RFC5321_LOCAL_MAX",
    "Purpose",
    "RejectReason",
    "Signer",
    "SigningKey",
    "TokenError",
    "VerifiedRef",
    "has_signed_address_form",
    "new_key_secret",
    "parse_signing_keys",
]
