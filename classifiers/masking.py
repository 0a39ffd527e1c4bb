"""One classification per reply *wording*: the diagnostic with its per-message parts masked.

A day's log repeats a few dozen replies, but each carries the recipient ("550 5.1.1
<jane@example.net>: Recipient address rejected"), the client address ("Client host
[198.51.100.7] blocked") or an id ("x12si345678pga.12 - gsmtp"), so a cache keyed by the exact
text misses on nearly every bounce. :class:`MaskedCache` keys it by the text with those parts
masked, and is only used where the mask cannot change the answer:

- the mask keeps the length and the character class of every character it replaces (a letter
  stays a letter, ``a``-``f`` stay in ``a``-``f``, a digit stays a digit, punctuation is kept), so
  ``\\w``, ``\\d``, ``[a-f]``, ``.{0,40}``, word boundaries and the 2,048-character cut of
  ``diagnostic.normalise`` see the same text shape;
- it replaces only three kinds of token, none of which a rule is written for: the local part of an
  e-mail address (a rule is about a reply's wording, never about one person), an IPv4 address
  (rules and ``diagnostic.py`` read no octet: a dotted quad is never a status nor a reply code),
  and a run of 12 or more letters and digits holding both (message, queue and session ids);
- a token holding a literal that a rule or a provider hint spells out (``tosa@rx.t-online.de``,
  ``RL000001``, ``AS(201806281)``) is left as it is (``protected_literals``);
- on a miss the masked text is classified too, and the answer is kept for the mask only when both
  agree; otherwise that mask is marked as not cacheable and every text of it is classified
  directly.

``tests/classifiers/test_masking.py`` checks, over every rule example and every golden sample,
that the cached answer equals the direct one.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

__all__ = ["MaskedCache", "mask", "protected_literals"]

V = TypeVar("V")
Key = tuple[str | None, int | None, str, str | None]

# Local part of an address, before "@domain.tld" (the domain is kept: providers are told by it).
_LOCAL = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]{1,64}(?=@[\w-]+\.)")
# A dotted quad on its own (not a part of a longer dotted number or a host name).
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\w)")
# An id: 12+ letters and digits with both in it, a word of its own.
_ID = re.compile(r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]{12,}\b", re.IGNORECASE)
# What a pattern spells out literally (its escapes such as \d, \b, \w taken out first).
_ESCAPE = re.compile(r"\\[a-zA-Z]")
_LITERAL = re.compile(r"[a-z0-9]{3,}")
_BEFORE_AT = re.compile(r"([\w.+-]+)@")

_TABLE: Final = str.maketrans(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0000000000aaaaaaxxxxxxxxxxxxxxxxxxxxAAAAAAXXXXXXXXXXXXXXXXXXXX",
)


def protected_literals(patterns: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(literals an id token must not contain, local parts a rule names) from regex sources."""
    literals: set[str] = set()
    locals_: set[str] = set()
    for pattern in patterns:
        plain = _ESCAPE.sub(" ", pattern).lower().replace("\\", "")
        literals.update(_LITERAL.findall(plain))
        locals_.update(m.group(1) for m in _BEFORE_AT.finditer(plain))
    return frozenset(literals), frozenset(locals_)


class Masker:
    """``mask(text)`` for one rule set's protected literals."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.literals, self.local_parts = protected_literals(patterns)

    def _local(self, found: re.Match[str]) -> str:
        token = found.group(0)
        lowered = token.lower()
        if any(name in lowered for name in self.local_parts):
            return token
        return token.translate(_TABLE)

    def _id(self, found: re.Match[str]) -> str:
        token = found.group(0)
        lowered = token.lower()
        if any(literal in lowered for literal in self.literals):
            return token
        return token.translate(_TABLE)

    def mask(self, text: str) -> str:
        """``text`` with the local parts, IPv4 addresses and ids masked (same length, same
        character classes); unchanged when it has none."""
        if "@" in text:
            text = _LOCAL.sub(self._local, text)
        text = _IPV4.sub(_zeros, text)
        return _ID.sub(self._id, text)


def _zeros(found: re.Match[str]) -> str:
    return found.group(0).translate(_TABLE)


def mask(text: str, patterns: Iterable[str] = ()) -> str:
    """``Masker(patterns).mask(text)`` (for tests and one-off use)."""
    return Masker(patterns).mask(text)


_UNCACHEABLE: Final = object()


class MaskedCache(Generic[V]):
    """A bounded cache of ``decide(status, reply, diagnostic, provider)`` by masked diagnostic.

    ``get`` returns the cached answer for the text's mask, or decides the text (and, on a miss,
    its mask) and keeps the answer when both agree. Least recently used entries go first.
    """

    def __init__(
        self,
        decide: Callable[[str | None, int | None, str | None, str | None], V],
        masker: Masker,
        maxsize: int = 8192,
    ) -> None:
        self._decide = decide
        self._masker = masker
        self._maxsize = maxsize
        self._entries: OrderedDict[Key, object] = OrderedDict()

    def get(
        self, status: str | None, reply_code: int | None, diagnostic: str, provider: str | None
    ) -> V:
        masked = self._masker.mask(diagnostic)
        if masked == diagnostic:  # nothing masked: the exact cache in front of this one decides
            return self._decide(status, reply_code, diagnostic, provider)
        key: Key = (status, reply_code, masked, provider)
        entries = self._entries
        found = entries.get(key)
        if found is not None:
            with contextlib.suppress(KeyError):  # dropped meanwhile by another thread: still valid
                entries.move_to_end(key)
            if found is not _UNCACHEABLE:
                return found  # type: ignore[return-value]
            return self._decide(status, reply_code, diagnostic, provider)
        answer = self._decide(status, reply_code, diagnostic, provider)
        agrees = self._decide(status, reply_code, masked, provider) == answer
        entries[key] = answer if agrees else _UNCACHEABLE
        if len(entries) > self._maxsize:
            with contextlib.suppress(KeyError):
                entries.popitem(last=False)
        return answer

    def clear(self) -> None:
        self._entries.clear()
