"""Errors raised by the bounce parser."""

from __future__ import annotations

__all__ = ["ParseError"]


class ParseError(ValueError):
    """The input cannot be read as a mail message at all (not bytes, empty, ...).

    Anything that *can* be read but is not understood degrades to kind ``unknown``
    instead of raising.
    """
