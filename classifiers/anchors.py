"""Literal anchors: a cheap necessary condition for a regex, so most rules are skipped unread.

For each top-level alternative of a pattern we find literal text that any match must contain
(the longest literal run, or a group such as ``(?:mailbox|inbox)`` every branch of which has one).
A rule is tried only when one of its anchors occurs in the lower-cased text; a plain substring
test is far cheaper than running Python's ``re`` over the text. An alternative with no anchor
(``\\[\\d+\\]``) makes the whole rule "always try", which is merely slower, never wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_MIN = 3
# escaped characters that stand for themselves
_LITERAL_ESCAPES = frozenset(".()[]{}*+?|^$\\/-'\" #:;,<>=@&%!~`_")


def split_alternatives(pattern: str) -> list[str]:
    """Split a pattern at its top-level ``|``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            current.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _skip_class(pattern: str, i: int) -> int:
    """Index after the character class starting at ``pattern[i] == "["``."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _group_end(pattern: str, i: int) -> int:
    """Index of the ``)`` closing the group opened at ``pattern[i] == "("``."""
    depth = 0
    j = i
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            j += 2
            continue
        if char == "[":
            j = _skip_class(pattern, j)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return len(pattern) - 1


def _optional_after(pattern: str, i: int) -> bool:
    return i < len(pattern) and (
        pattern[i] in "*?" or pattern.startswith("{0", i) or pattern.startswith("{,", i)
    )


def anchors_of(alternative: str) -> frozenset[str] | None:
    """Strings one of which every match of ``alternative`` contains, or None if unknown."""
    runs: list[str] = []
    groups: list[frozenset[str]] = []
    run: list[str] = []

    def close() -> None:
        runs.append("".join(run))
        run.clear()

    i = 0
    while i < len(alternative):
        char = alternative[i]
        if char == "\\":
            escaped = alternative[i + 1 : i + 2]
            i += 2
            if escaped not in _LITERAL_ESCAPES:
                close()
                continue
            literal = escaped
        elif char == "[":
            close()
            i = _skip_class(alternative, i)
            continue
        elif char == "(":
            close()
            end = _group_end(alternative, i)
            body = alternative[i + 1 : end]
            i = end + 1
            if _optional_after(alternative, i) or body.startswith(("?=", "?!", "?<=", "?<!")):
                continue
            if body.startswith("?:"):
                body = body[2:]
            elif body.startswith("?"):
                continue  # named groups, flags: give up on this group
            options = [anchors_of(part) for part in split_alternatives(body)]
            if all(option is not None for option in options):
                groups.append(frozenset().union(*(o for o in options if o is not None)))
            continue
        elif char in "*?{+.^$|)":
            if char in "*?{" and run:
                run.pop()  # the quantified character is optional
            close()
            if char == "{":
                while i < len(alternative) and alternative[i] != "}":
                    i += 1
            i += 1
            continue
        else:
            literal = char
            i += 1
        if _optional_after(alternative, i):
            close()
            continue
        run.append(literal)
    close()
    best = max(runs, key=len)
    if len(best) >= _MIN:
        return frozenset({best.lower()})
    usable = [group for group in groups if all(len(member) >= _MIN for member in group)]
    if usable:
        return min(usable, key=len)
    return None


def rule_anchors(patterns: tuple[str, ...]) -> frozenset[str] | None:
    """Anchors for a list of patterns (any may match); None when one has no anchor."""
    found: set[str] = set()
    for pattern in patterns:
        for alternative in split_alternatives(pattern):
            anchors = anchors_of(alternative)
            if anchors is None:
                return None
            found |= anchors
    return frozenset(found)


def lower_pattern(pattern: str) -> str:
    """Lower-case a pattern's literal characters, leaving escapes (``\\S``, ``\\d``) alone."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i].lower())
            i += 1
    return "".join(out)


def _trie_pattern(words: list[str]) -> str:
    """A regex matching the longest of ``words`` at a position (a trie: one path per text)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here: longer words first (greedy), then this one
            return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"
        return body

    return build(trie)


class AnchorScanner:
    """Finds which anchors occur in a text with one pass of one regex."""

    def __init__(self, anchors: Iterable[str]) -> None:
        words = sorted(set(anchors))
        self._pattern = re.compile(f"(?=({_trie_pattern(words)}))") if words else None
        # the scan reports the longest anchor at a position; the shorter ones it starts with are
        # there too
        self._closure = {word: frozenset(w for w in words if word.startswith(w)) for word in words}

    def present(self, text: str) -> frozenset[str]:
        """The anchors that occur in ``text`` (both lower-cased)."""
        if self._pattern is None:
            return frozenset()
        found: set[str] = set()
        closure = self._closure
        for match in self._pattern.finditer(text):
            found |= closure[match.group(1)]
        return frozenset(found)
