"""Set-based inserts on PostgreSQL: ``INSERT … SELECT * FROM unnest(<one array per column>)``.

A batch of rows travels as one array per column, so the statement has the same shape whatever
the batch (prepared once by asyncpg, nothing compiled or bound per row), where an
``executemany`` binds and executes every row and a multi-row ``VALUES`` is compiled per batch
size. ``unnest`` yields the rows in array order, so ids follow the order of ``rows``. JSON columns
travel as text (orjson; the standard library for what orjson refuses) and are cast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import JSON, Table, TextClause, text
from sqlalchemy.dialects import postgresql

__all__ = ["UnnestInsert", "chained", "json_text"]


class UnnestInsert:
    """The set-based insert of ``columns`` of ``table`` (every column but the generated ones)."""

    def __init__(
        self, table: Table, columns: Sequence[str], returning: str = "", *, prefix: str = ""
    ) -> None:
        """``prefix``: of every bind name, so two of these can share one statement."""
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        self.columns = tuple(columns)
        self.prefix = prefix
        self._json = frozenset(
            c for c in self.columns if isinstance(table.c[c].type.dialect_impl(dialect), JSON)
        )
        arrays = []
        for name in self.columns:
            if name in self._json:
                arrays.append(f"CAST(CAST(:{prefix}{name} AS text[]) AS jsonb[])")
            else:
                kind = table.c[name].type.dialect_impl(dialect).compile(dialect=dialect)
                arrays.append(f"CAST(:{prefix}{name} AS {kind}[])")
        tail = f" RETURNING {returning}" if returning else ""
        # Every name comes from the table's own columns; the values are bound.
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(self.columns)}) "  # noqa: S608
            f"SELECT * FROM unnest({', '.join(arrays)}){tail}"
        )
        self.statement: TextClause = text(self.sql)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """One list per column, in the order of ``rows`` (a missing key is NULL)."""
        params: dict[str, list[Any]] = {}
        for name in self.columns:
            values = [row.get(name) for row in rows]
            if name in self._json:  # None is JSON null, as SQLAlchemy writes it
                values = [json_text(v) for v in values]
            params[self.prefix + name] = values
        return params


def json_text(value: Any) -> str:
    """``value`` as JSON text for a ``jsonb`` parameter: by orjson (a seventh of the standard
    library's cost), or by the standard library for what orjson refuses (an integer beyond 64
    bits, say)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def chained(*inserts: UnnestInsert) -> TextClause:
    """``inserts`` in one statement (one round trip): all but the last as data-modifying
    ``WITH``s, which PostgreSQL runs to completion whether or not they are read, in the order
    given. Their prefixes must differ. Bind every one's ``params``."""
    assert len(inserts) >= 2 and len({i.prefix for i in inserts}) == len(inserts)
    withs = ", ".join(f"w{n} AS ({i.sql})" for n, i in enumerate(inserts[:-1]))
    return text(f"WITH {withs} {inserts[-1].sql}")
