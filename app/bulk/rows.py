"""Rows: CSV records -> validated :class:`Row` values, folded per (address, scope) in batches.

The native format (what ``export`` writes) is read column by column; a provider's export through
its ``presets`` entry. Every problem is counted with its line (``ImportSummary.error``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, NamedTuple

from app.addresses import InvalidAddress, normalise_address, try_normalise
from app.bulk.csv_io import (
    COLUMNS,
    MAX_NOTE,
    InvalidFile,
    RowError,
    format_time,
    header_key,
    parse_time,
    unneutralise,
)
from app.bulk.model import ImportSummary
from app.bulk.presets import (
    DEFAULT_OUTCOME,
    DEFAULT_REASON,
    NATIVE,
    PRESETS,
    ImportOptions,
    Preset,
    detect_preset,
)
from app.models import utcnow
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.suppression import (
    REASON_RE,
    SUPPRESSING_OUTCOMES,
)
from app.suppression.merge import STRENGTH, stronger_or_equal
from app.suppression.model import DOMAIN_KEY_PREFIX, InvalidDomain, list_key


class Row(NamedTuple):
    """The fields of one valid line of an import, in the order the stores stage them (the staging
    table's columns); the values travel as :data:`RowValues`."""

    line: int
    address: str
    domain: str
    scope: str
    outcome: str
    reason: str
    note: str | None
    first_seen: datetime | None
    expires_at: datetime | None


# What the pipeline carries: plain tuples in Row's field order. The garbage collector stops
# tracking a tuple of plain values; a NamedTuple instance stays tracked for life, which made a
# large import's parsing about a fifth slower. Read them by name through Row (see _fold).
RowValues = tuple[int, str, str, str, str, str, str | None, datetime | None, datetime | None]
_ADDRESS: Final = 1  # literal positions, so the type checker knows what they index
_SCOPE: Final = 3
assert (Row._fields[_ADDRESS], Row._fields[_SCOPE]) == ("address", "scope")


def _checked_note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise RowError(note[:64] + "…", f"note longer than {MAX_NOTE} characters")
    if "\x00" in note:
        # csv reads NUL since Python 3.11; PostgreSQL's COPY refused the whole batch (a 500).
        raise RowError(note[:64], "note contains a NUL character")
    return note


def _why_invalid(raw: str) -> str:
    try:
        normalise_address(raw)
    except InvalidAddress as exc:
        return exc.why
    return "not a valid email address"


class RowParser:
    """Turns records into validated, folded rows and counts every problem with its line."""

    def __init__(self, options: ImportOptions, summary: ImportSummary) -> None:
        self.options = options
        self.summary = summary
        self.now = utcnow()
        self.preset: Preset | None = None
        self.index: dict[str, int] = {}
        self.pending: dict[tuple[str, str], RowValues] = {}
        self.default_scope = options.scope
        self.default_reason = options.reason or DEFAULT_REASON
        self._latest = self.now + timedelta(minutes=5)  # clock skew allowed for created_at
        self._positions: tuple[int, ...] | None = None
        self._width = 0
        self._outcomes = {o: o for o in SUPPRESSING_OUTCOMES} | {"": DEFAULT_OUTCOME}
        self._reasons: dict[str, str] = {"": self.default_reason}
        self._scopes: dict[str, str] = {"": self.default_scope, GLOBAL_SCOPE: GLOBAL_SCOPE}

    # header ----------------------------------------------------------------------------------

    def _setup(self, first: list[str]) -> bool:
        """Choose the preset and column positions; True when ``first`` is a header."""
        cells = [c.strip() for c in first]
        is_data = any("@" in c and try_normalise(unneutralise(c)) for c in cells)
        if is_data:
            preset = PRESETS.get(self.options.format, NATIVE)
            if preset is not NATIVE:
                raise InvalidFile(
                    f"format {preset.name!r} needs its header row; the first row is data"
                )
            self.preset = NATIVE
            self.index = {name: i for i, name in enumerate(COLUMNS)}
            self.summary.format = NATIVE.name
            return False
        keys = [header_key(c) for c in cells]
        if self.options.format == "auto":
            preset = detect_preset(keys)
        else:
            preset = PRESETS[self.options.format]
        index: dict[str, int] = {}
        for name, synonyms in preset.columns.items():
            for synonym in synonyms:
                if synonym in keys:
                    index[name] = keys.index(synonym)
                    break
        if "address" not in index:
            wanted = ", ".join(preset.columns["address"][:4])
            raise InvalidFile(
                f"no address column in the header {cells[:12]!r} (format {preset.name}; "
                f"name it one of {wanted}, or use format=...)"
            )
        self.preset, self.index = preset, index
        self.summary.format = preset.name
        return True

    # rows ------------------------------------------------------------------------------------

    def add(self, records: list[tuple[int, list[str] | str]]) -> list[list[RowValues]]:
        """Validate records; returns the batches that filled up."""
        out: list[list[RowValues]] = []
        summary = self.summary
        if self.preset is None and records:
            line, first = records[0]
            if isinstance(first, list):
                if self._setup(first):
                    records = records[1:]
            else:
                raise InvalidFile(f"line {line}: {first}")
        convert = self._convert_native if self.preset is NATIVE else self._convert_preset
        pending = self.pending
        limit = self.options.batch_rows
        overwrite = self.options.overwrite
        for line, fields in records:
            summary.rows += 1
            if isinstance(fields, str):
                summary.error(line, "", fields)
                continue
            try:
                row = convert(line, fields)
            except RowError as exc:
                summary.error(line, exc.value, exc.why)
                continue
            if row is None:
                summary.skipped += 1
                continue
            key = (row[_ADDRESS], row[_SCOPE])
            earlier = pending.get(key)
            if earlier is not None:
                row = row if overwrite else _fold(earlier, row)
                summary.unchanged += 1  # one line of the file folded into another
            pending[key] = row
            if len(pending) >= limit:
                out.append(list(pending.values()))
                pending.clear()
        return out

    def finish(self) -> list[RowValues]:
        rows = list(self.pending.values())
        self.pending.clear()
        return rows

    def _address(self, raw: str) -> str:
        raw = raw.strip()
        if raw[:1] == "'":
            raw = unneutralise(raw)
        if "\ufffd" in raw:  # what the decoder left of bytes that were not UTF-8
            raise RowError(raw, "invalid address: not valid UTF-8")
        if raw[:1] == DOMAIN_KEY_PREFIX:
            # A whole-domain entry, as the export writes it: "@example.com".
            try:
                return list_key(raw, whole_domain=True)
            except InvalidDomain:
                raise RowError(raw, "invalid domain: @ and a domain name") from None
        address = try_normalise(raw)
        if address is None:
            raise RowError(raw, f"invalid address: {_why_invalid(raw)}")
        return address

    def _when(self, raw: str, what: str) -> datetime:
        try:
            return parse_time(raw)
        except (ValueError, OverflowError, OSError):
            raise RowError(
                raw, f"bad date in {what}: use ISO 8601, e.g. 2024-05-01T12:00:00Z"
            ) from None

    def _finish_row(
        self,
        line: int,
        address: str,
        scope: str,
        outcome: str,
        reason: str,
        note: str | None,
        created: datetime | None,
        expires: datetime | None,
    ) -> RowValues | None:
        if created is not None and created > self._latest:
            raise RowError(format_time(created), "bad date in created_at: in the future")
        if expires is not None and expires <= self.now:
            return None
        return (
            line,
            address,
            address.rpartition("@")[2],
            scope,
            outcome,
            reason,
            note,
            created,
            expires,
        )

    def _cell(self, fields: list[str], name: str) -> str:
        at = self.index.get(name)
        if at is None or at >= len(fields):
            return ""
        return fields[at]

    def _convert_native(self, line: int, fields: list[str]) -> RowValues | None:
        # The hot loop of a large import: exact-match caches first, the careful checks after.
        if self._positions is None:
            at = self.index
            pad = max(at.values()) + 1
            self._positions = tuple(at.get(name, pad) for name in COLUMNS)
            self._width = pad + 1
        ai, oi, ri, si, ei, ci, ni = self._positions
        if len(fields) < self._width:
            fields = fields + [""] * (self._width - len(fields))
        raw = fields[ai]
        if raw[:1] == "'":
            raw = unneutralise(raw)
        address = try_normalise(raw)
        if address is None or "\ufffd" in raw:
            address = self._address(raw)
        value = fields[oi]
        outcome = self._outcomes.get(value)
        if outcome is None:
            outcome = value.strip().lower() or DEFAULT_OUTCOME
            if outcome not in SUPPRESSING_OUTCOMES:
                raise RowError(value, f"bad outcome: one of {', '.join(STRENGTH)}")
        value = fields[ri]
        reason = self._reasons.get(value)
        if reason is None:
            reason = value.strip().lower() or self.default_reason
            if not REASON_RE.match(reason):
                raise RowError(value, "bad reason: snake_case a-z 0-9 _, at most 48 characters")
            if len(self._reasons) < 10_000:
                self._reasons[value] = reason
        value = fields[si]
        scope = self._scopes.get(value)
        if scope is None:
            stream = value.strip()
            if stream.lower() == GLOBAL_SCOPE:
                scope = GLOBAL_SCOPE
            elif STREAM_RE.match(stream):
                scope = stream
            else:
                raise RowError(value, "bad stream: 1-64 of a-z 0-9 _ . - starting with a-z 0-9")
            if len(self._scopes) < 10_000:
                self._scopes[value] = scope
        value = fields[ei]
        expires = self._when(value, "expires_at") if value else None
        value = fields[ci]
        created = self._when(value, "created_at") if value else None
        note = _checked_note(unneutralise(fields[ni])) if fields[ni] else None
        if expires is not None and expires <= self.now:
            return None
        if created is not None and created > self._latest:
            raise RowError(fields[ci], "bad date in created_at: in the future")
        return (
            line,
            address,
            address.rpartition("@")[2],
            scope,
            outcome,
            reason,
            note,
            created,
            expires,
        )

    def _convert_preset(self, line: int, fields: list[str]) -> RowValues | None:
        preset = self.preset
        assert preset is not None and preset.interpret is not None

        def get(name: str) -> str:
            return unneutralise(self._cell(fields, name))

        address = self._address(self._cell(fields, "address"))
        raw = get("created_at").strip()
        created = self._when(raw, "created_at") if raw else None
        outcome, reason, stream, expires, note = preset.interpret(get, self.options, created)
        scope = self.default_scope if stream is None else stream
        return self._finish_row(line, address, scope, outcome, reason, note, created, expires)


def _fold(earlier_values: RowValues, later_values: RowValues) -> RowValues:
    """Two lines for the same (address, scope) in one batch: what applying both would leave."""
    earlier, later = Row._make(earlier_values), Row._make(later_values)
    strong = later if stronger_or_equal(later.outcome, earlier.outcome) else earlier
    a, b = earlier.expires_at, later.expires_at
    return Row(
        earlier.line,
        strong.address,
        strong.domain,
        strong.scope,
        strong.outcome,
        strong.reason,
        later.note or earlier.note,
        earlier.first_seen or later.first_seen,
        None if a is None or b is None else max(a, b),
    )
