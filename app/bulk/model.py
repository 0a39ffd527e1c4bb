"""What an import reports (:class:`ImportSummary`) and the sizes it works in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BATCH_ROWS = 10_000
MAX_ERRORS = 100


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # valid rows with nothing left to suppress (expiry already passed)
    invalid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    atomic: bool = False
    committed: bool = False
    format: str = ""
    duration_s: float = 0.0

    def error(self, line: int, value: str, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            # The first errors also go to the audit entry (jsonb): no NUL there.
            value = value[:200].replace("\x00", "\ufffd")
            self.errors.append({"line": line, "value": value, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "errors": list(self.errors),
            "dry_run": self.dry_run,
            "atomic": self.atomic,
            "committed": self.committed,
            "format": self.format,
            "duration_s": round(self.duration_s, 3),
        }
