"""The composition root: builds every service of one process from its settings, and the jobs
that keep them healthy. The HTTP app, the SMTP sink, the intake child process and the CLI all start
here; nothing below imports it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from app.cache import CacheUnavailable, MemoryCache, RedisCache, SuppressionCache
from app.cache.cluster import CLUSTER_SCHEME, RedisClusterCache
from app.db import DB_ERRORS, Database
from app.keys import KeyService
from app.settings import Settings
from app.signing import Signer, parse_signing_keys
from app.suppression import SuppressionService

log = logging.getLogger("stoplist")


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    cache: SuppressionCache
    suppressions: SuppressionService
    keys: KeyService
    signer: Signer | None = None  # None: no STOPLIST_SIGNING_KEYS


def build_signer(settings: Settings) -> Signer | None:
    """The signer the settings describe, or None when no signing keys are configured."""
    if settings.signing_keys is None:
        return None
    return Signer(
        parse_signing_keys(settings.signing_keys.get_secret_value()),
        return_path_domain=settings.return_path_domain,
        return_path_prefix=settings.return_path_prefix,
        unsubscribe_domain=settings.unsubscribe_domain,
        unsubscribe_prefix=settings.unsubscribe_local_prefix,
        unsubscribe_base_url=settings.public_base_url,
        bounce_max_age=timedelta(days=settings.token_max_age_days),
        unsubscribe_max_age=timedelta(days=settings.unsubscribe_token_max_age_days),
    )


def build_services(
    settings: Settings, *, auto_rebuild: bool = True, pre_ping: bool = True
) -> Services:
    """``pre_ping=False``: see ``Database`` (for callers that retry a failed transaction)."""
    db = Database(settings, pre_ping=pre_ping)
    cache: SuppressionCache
    if settings.redis_url and settings.redis_url.startswith(CLUSTER_SCHEME):
        cache = RedisClusterCache(
            settings.redis_url, prefix=settings.redis_prefix, timeout_s=settings.redis_timeout_s
        )
    elif settings.redis_url:
        cache = RedisCache(
            settings.redis_url, prefix=settings.redis_prefix, timeout_s=settings.redis_timeout_s
        )
    else:
        cache = MemoryCache()
    return Services(
        settings=settings,
        db=db,
        cache=cache,
        suppressions=SuppressionService(db, cache, auto_rebuild=auto_rebuild),
        keys=KeyService(db, cache_ttl_s=settings.auth_cache_ttl_s),
        signer=build_signer(settings),
    )


async def start_services(services: Services) -> None:
    """Bootstrap the first admin key and make sure the cache is a complete replica."""
    generated = await services.keys.ensure_bootstrap(
        services.settings.bootstrap_admin_key.get_secret_value()
        if services.settings.bootstrap_admin_key
        else None
    )
    if generated:
        print(
            "\n  No API keys existed: created admin key 'bootstrap-admin'. It is shown only now:\n"
            f"\n      {generated}\n\n"
            "  Store it, then create narrower keys with `stoplist keys create`.\n",
            file=sys.stderr,
            flush=True,
        )
    sup = services.suppressions
    if services.cache.kind == "memory":
        await sup.rebuild_cache()
        return
    try:
        if await services.cache.generation() is None:
            log.info("cache is cold: rebuilding in the background (checks use the database)")
            sup.schedule_rebuild()
    except Exception as exc:
        log.warning("cache unreachable at start-up (%s); checks use the database", exc)
        sup.cache_state = "unavailable"


# A periodic job of housekeeping: (every so many seconds, what to run); given by the layers
# above, which this module may not import (the delivery events' retention, for one).
PeriodicJob = tuple[float, Callable[[Services], Awaitable[object]]]
JOB_STOP_GRACE_S = 5.0
COLD_CHECK_S = 5.0  # how often housekeeping looks for a replica left cold  # how long a running job may finish when housekeeping is stopped


async def housekeeping(
    services: Services, interval_s: float = 1.0, jobs: Sequence[PeriodicJob] = ()
) -> None:
    """Rebuild a stale replica once the cache is reachable again; in embedded mode, pick up
    writes made by other processes (CLI, imports) every second. ``jobs`` run when due (first on
    the first round), each in a task of its own so a long one never delays the cache upkeep."""
    sup = services.suppressions
    due = [0.0] * len(jobs)
    running: dict[int, asyncio.Task[None]] = {}
    cold_due = 0.0
    try:
        while True:
            await asyncio.sleep(interval_s)
            _start_due(services, jobs, due, running)
            try:
                if sup.cache_dirty:
                    sup.schedule_rebuild()  # repairs what this process missed, or rebuilds
                    await sup.wait_rebuild()
                elif services.cache.kind == "memory":
                    await sup.sync_from_database()
                elif time.monotonic() >= cold_due:
                    cold_due = time.monotonic() + COLD_CHECK_S
                    await _rebuild_if_cold(services)
            except DB_ERRORS as exc:
                log.warning("housekeeping: database unreachable: %s", exc)
            except Exception:
                log.exception("housekeeping failed")
    finally:
        # Stopped, not cut off: a job half-way through a transaction gets a moment to commit
        # (cancelled, it would be rolled back under a cancelled task, which the pool reports).
        busy = [task for task in running.values() if not task.done()]
        if busy:
            await asyncio.wait(busy, timeout=JOB_STOP_GRACE_S)
        for task in busy:
            task.cancel()


async def _rebuild_if_cold(services: Services) -> None:
    """A replica found cold is rebuilt without waiting for a check to miss it: one whose
    rebuild lost to another process's cold mark would otherwise stay cold until the next check
    (and ``/readyz`` say ``cold`` on an idle service). The rebuild lock keeps it to one process."""
    try:
        cold = await services.cache.generation() is None
    except CacheUnavailable:
        return  # the checks say so; nothing to rebuild until Redis answers
    if cold:
        services.suppressions.schedule_rebuild()


def _start_due(
    services: Services,
    jobs: Sequence[PeriodicJob],
    due: list[float],
    running: dict[int, asyncio.Task[None]],
) -> None:
    now = time.monotonic()
    for index, (every_s, job) in enumerate(jobs):
        task = running.get(index)
        if now < due[index] or (task is not None and not task.done()):
            continue
        due[index] = now + every_s
        running[index] = asyncio.create_task(_run_job(services, job))


async def _run_job(services: Services, job: Callable[[Services], Awaitable[object]]) -> None:
    name = getattr(job, "__qualname__", repr(job))
    try:
        await job(services)
    except DB_ERRORS as exc:
        log.warning("housekeeping job %s: database unreachable: %s", name, exc)
    except Exception:
        log.exception("housekeeping job %s failed", name)
