"""Files in, JSON Lines objects out (``stoplist parse PATH... --jsonl``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dsn.analysis import analyse_message
from dsn.errors import ParseError
from dsn.model import DEFAULT_OPTIONS, AnalysisOptions

__all__ = ["analyse_file", "iter_message_files"]


def iter_message_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; folders recursed for ``*.eml``, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.eml") if p.is_file())
        else:
            yield path


def analyse_file(path: Path, options: AnalysisOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The JSON object for one file; read and parse errors go into ``"error"``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return {
            "file": str(path),
            "kind": "unknown",
            "error": f"read: {exc}",
            "mta": None,
            "results": [],
        }
    try:
        return analyse_message(raw, options=options).to_json(str(path))
    except ParseError as exc:
        return {
            "file": str(path),
            "kind": "unknown",
            "error": f"parse: {exc}",
            "mta": None,
            "results": [],
        }
