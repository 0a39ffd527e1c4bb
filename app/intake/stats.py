"""What the intake counts (exported as metrics and logged at close)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("app.intake")


@dataclass(slots=True)
class IntakeStats:
    """Counters and timings (seconds summed over batches) logged when the intake stops and printed by the benchmark (not yet on /metrics)."""

    stored: int = 0
    duplicates: int = 0
    store_batches: int = 0
    store_s: float = 0.0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retried: int = 0
    batches: int = 0
    claim_s: float = 0.0
    parse_s: float = 0.0
    apply_s: float = 0.0
    finish_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
