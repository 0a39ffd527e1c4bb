"""The roles a ``stoplist serve`` process can take, and what each one runs (docs/deployment.md,
"Default topology"). ``all`` (the default, and the only role on the embedded SQLite store) runs
everything in one process; on PostgreSQL the work is split so that the pre-send check never
shares its event loop with the SMTP dialogue, imports or background jobs:

* ``api``: the HTTP API and the cache upkeep, nothing else on its loop;
* ``intake``: the SMTP sink and the intake processing (its child), no HTTP (``stoplist smtp``);
* ``worker``: the HTTP API for imports, exports and the console (the load balancer routes those
  paths here), webhook delivery and the retention jobs.

Non-API roles lower their own CPU priority (``os.nice``): where processes share cores, the
check is scheduled first; the intake child and parse workers go lower still.
"""

from __future__ import annotations

import os
from enum import StrEnum


class Role(StrEnum):
    ALL = "all"
    API = "api"
    INTAKE = "intake"
    WORKER = "worker"

    @property
    def runs_sink(self) -> bool:
        return self in (Role.ALL, Role.INTAKE)

    @property
    def runs_background_jobs(self) -> bool:
        """Webhook delivery, the retention jobs (events, rates) and the expiry sweep."""
        return self in (Role.ALL, Role.WORKER)

    @property
    def nice(self) -> int:
        """How far below the API this role's process runs (added to the niceness it starts with)."""
        return ROLE_NICE[self]


ROLE_NICE = {Role.ALL: 0, Role.API: 0, Role.INTAKE: 5, Role.WORKER: 10}


def lower_priority(role: Role) -> int:
    """Apply the role's niceness to this process; returns the niceness it now runs at."""
    return os.nice(role.nice)
