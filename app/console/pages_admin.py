"""Overview (counts by outcome, a chart of suppressions added per day, top domains and
providers, intake backlog), intake (recent stored messages, failed ones, reprocess one) and keys (admin: list,
create shown once, revoke)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from app.console.chart import per_day_chart
from app.console.web import ConsoleRoute, FormDep, ViewerDep, field_text, page, see_other
from app.errors import InvalidInput
from app.http.deps import ServicesDep
from app.intake import IntakeStore, policy_applier
from app.intake import reprocess as run_reprocess
from app.intake.parse_pool import ParsingPool
from app.models import utcnow
from app.rates.model import OTHER_PROVIDER, provider_of
from app.suppression import STRENGTH

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

DAYS = 30
TOP = 10  # rows of the top domains and top providers tables
# Providers are counted over the domains with the most entries; what the rest hold is "other".
PROVIDER_DOMAINS = 1000
# The chart is an image of its own: an SVG opened as <img> runs no script, and its inline styles
# (pygal's) need this policy only for that one document.
CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@router.get("/")
async def overview(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    data = await services.suppressions.overview(days=DAYS, domains=PROVIDER_DOMAINS)
    pending, failed, age = await IntakeStore(services.db).backlog()
    total = sum(data["by_outcome"].values())
    return page(
        request,
        "overview.html",
        viewer,
        by_outcome=[(o, data["by_outcome"].get(o, 0)) for o in STRENGTH],
        total=total,
        top_domains=data["top_domains"][:TOP],
        top_providers=top_providers(data["top_domains"], total),
        pending=pending,
        failed=failed,
        oldest_s=round(age),
        days=DAYS,
    )


def top_providers(domains: list[tuple[str, int]], total: int) -> list[tuple[str, int]]:
    """Active entries per mailbox provider (the rates' table: ``/v1/stats?by=provider`` names
    them the same), most first; ``domains`` are the busiest domains with their counts, and
    everything they do not name as a provider, the rest of ``total`` included, is "other"."""
    counts: Counter[str] = Counter()
    for domain, n in domains:
        counts[provider_of(domain)] += n
    counts[OTHER_PROVIDER] = total - sum(n for p, n in counts.items() if p != OTHER_PROVIDER)
    return [(p, n) for p, n in counts.most_common(TOP) if n > 0]


@router.get("/overview/chart.svg")
async def chart(services: ServicesDep, _viewer: ViewerDep) -> Response:
    data = await services.suppressions.overview(days=DAYS, domains=0)
    svg = await asyncio.to_thread(per_day_chart, data["per_day"], utcnow().date(), DAYS)
    return Response(svg, media_type="image/svg+xml", headers={"Content-Security-Policy": CHART_CSP})


MessageId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/intake")
async def intake(
    request: Request,
    services: ServicesDep,
    viewer: ViewerDep,
    failed: bool = False,
    before: int | None = None,
    done: str = "",
) -> HTMLResponse:
    rows = await IntakeStore(services.db).recent(limit=50, failed_only=failed, before=before)
    more = rows[-1]["id"] if len(rows) == 50 else None
    return page(request, "intake.html", viewer, rows=rows, failed=failed, more=more, done=done)


@router.post("/intake/{message_id}/reprocess")
async def reprocess_one(
    request: Request, services: ServicesDep, viewer: ViewerDep, form: FormDep, message_id: MessageId
) -> HTMLResponse:
    """Run one stored message through parsing and policy again (``stoplist reprocess``)."""
    viewer.require("write")
    cfg = services.settings
    pool = ParsingPool(workers=1, timeout_s=cfg.parse_timeout_s, memory_mb=cfg.parse_memory_mb)
    try:
        report = await run_reprocess(
            IntakeStore(services.db),
            pool,
            policy_applier(services),
            dry_run=form.get("dry_run") == "yes",
            ids=[message_id],
        )
    finally:
        await asyncio.to_thread(pool.close)
    if report.examined == 0:
        raise InvalidInput(f"message {message_id} cannot be reprocessed (pending, or purged)")
    return page(request, "reprocessed.html", viewer, message_id=message_id, report=report.as_dict())


@router.get("/keys")
async def keys(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    viewer.require("admin")
    return page(request, "keys.html", viewer, keys=await services.keys.list(), created=None)


@router.post("/keys")
async def create_key(
    request: Request, services: ServicesDep, viewer: ViewerDep, form: FormDep
) -> HTMLResponse:
    """Create a key; its secret is on this answer only (never stored, never shown again)."""
    viewer.require("admin")
    info, secret = await services.keys.create(
        field_text(form, "name"), field_text(form, "scope"), actor=viewer.key.name
    )
    created: dict[str, Any] = {"name": info.name, "scope": info.scope, "key": secret}
    return page(request, "keys.html", viewer, keys=await services.keys.list(), created=created)


@router.post("/keys/revoke")
async def revoke_key(services: ServicesDep, viewer: ViewerDep, form: FormDep) -> Response:
    viewer.require("admin")
    await services.keys.revoke(field_text(form, "name"), actor=viewer.key.name)
    return see_other("/keys")
