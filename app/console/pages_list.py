"""The list: filters, sort, cursor pages, the current filter exported as CSV (``app.bulk``'s
export), and a CSV import with a preset and a dry run that runs in the background while its page
shows the progress and, at the end, the line-numbered errors (kept in the database by
``app.console.jobs``, so any replica shows them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.datastructures import UploadFile

from app import bulk
from app.bulk.csv_io import file_chunks
from app.console.jobs import HEARTBEAT_S, ImportJobs
from app.console.web import (
    ConsoleRoute,
    FormDep,
    ViewerDep,
    console_state,
    field_text,
    page,
    see_other,
)
from app.container import Services
from app.errors import InvalidInput, NotFound
from app.http.deps import ServicesDep
from app.suppression import STRENGTH, SuppressionFilter, parse_since
from app.suppression.model import SOURCES

log = logging.getLogger("stoplist.console")
router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

PAGE = 50
FILTERS = ("outcome", "reason", "domain", "stream", "source", "since")
IMPORT_PATH = "/import"


def _filter(params: dict[str, str]) -> SuppressionFilter:
    """The filters of the query string (empty fields ignored), validated as the API's."""
    given = {k: params[k].strip() for k in FILTERS if params.get(k, "").strip()}
    since = given.pop("since", None)
    return SuppressionFilter(**given, since=parse_since(since))


def _cursor(raw: str) -> int | None:
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidInput(f"cursor {raw!r}: follow the page's own links")
    return int(raw)


@router.get("/list")
async def listing(request: Request, services: ServicesDep, viewer: ViewerDep) -> HTMLResponse:
    params = dict(request.query_params)
    flt = _filter(params)
    newest = params.get("sort", "newest") != "oldest"
    items, nxt = await services.suppressions.list(
        flt, cursor=_cursor(params.get("cursor", "")), limit=PAGE, newest_first=newest
    )
    kept = {k: params[k] for k in (*FILTERS, "sort") if params.get(k)}
    return page(
        request,
        "list.html",
        viewer,
        items=items,
        params=kept,
        outcomes=list(STRENGTH),
        sources=sorted(SOURCES),
        next_url="/list?" + urlencode({**kept, "cursor": nxt}) if nxt is not None else None,
        export_url="/export?" + urlencode({k: v for k, v in kept.items() if k in FILTERS}),
        first_url="/list?" + urlencode(kept),
    )


@router.get("/export")
async def export(request: Request, services: ServicesDep, viewer: ViewerDep) -> Response:
    """The list's current filter as the API's CSV export."""
    flt = _filter(dict(request.query_params))
    return StreamingResponse(
        bulk.export_csv(services.suppressions, bulk.ExportFilter(**_fields(flt))),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


def _fields(flt: SuppressionFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in (*FILTERS[:-1], "since")}


@router.get(IMPORT_PATH)
async def import_form(request: Request, viewer: ViewerDep) -> HTMLResponse:
    viewer.require("write")
    return page(request, "import.html", viewer, presets=["auto", *bulk.PRESETS])


@router.post(IMPORT_PATH)
async def start_import(
    request: Request, services: ServicesDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.require("write")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("choose a CSV file to import")
    options = bulk.ImportOptions(
        dry_run=form.get("dry_run") == "yes",
        stream=field_text(form, "stream") or None,
        reason=field_text(form, "reason") or None,
        format=field_text(form, "format") or "auto",
        soft_days=services.settings.soft_suppression_days,
    )
    # The upload is copied to a file the job owns: the request's own is closed with the request.
    fd, path = tempfile.mkstemp(prefix="stoplist-import-", suffix=".csv")
    with os.fdopen(fd, "wb") as out:
        await asyncio.to_thread(shutil.copyfileobj, upload.file, out, 1 << 20)
        size = out.tell()
    if size == 0:
        os.unlink(path)
        raise InvalidInput("the file is empty")
    job_id = secrets.token_urlsafe(12)
    jobs = ImportJobs(services.db)
    try:
        await jobs.create(job_id, viewer.key.name, size)
    except BaseException:
        os.unlink(path)
        raise
    running = console_state(request, services).jobs  # holds the tasks until they end
    task = asyncio.get_running_loop().create_task(
        _run_import(services, jobs, job_id, path, options, actor=viewer.key.name)
    )
    running[job_id] = task
    task.add_done_callback(lambda _: running.pop(job_id, None))
    return see_other(f"{IMPORT_PATH}/{job_id}")


async def _run_import(
    services: Services,
    jobs: ImportJobs,
    job_id: str,
    path: str,
    options: bulk.ImportOptions,
    *,
    actor: str,
) -> None:
    """Import the file at ``path`` (then delete it), writing progress every ``HEARTBEAT_S``
    and the result at the end to the job's row."""
    read = 0

    def on_read(n: int) -> None:
        nonlocal read
        read = n

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await jobs.progress(job_id, read)

    beating = asyncio.get_running_loop().create_task(heartbeat())
    summary: bulk.ImportSummary | None = None
    error: str | None = None
    try:
        chunks = bulk.gunzip_if_needed(file_chunks(path, on_read=on_read))
        summary = await bulk.import_csv(services.suppressions, chunks, options, actor=actor)
    except InvalidInput as exc:
        error = str(exc.detail)
    except Exception as exc:  # reported on the job's page; the service goes on
        log.exception("console import %s failed", job_id)
        error = f"the import failed: {type(exc).__name__}"
    finally:
        beating.cancel()
        with contextlib.suppress(OSError):
            os.unlink(path)
    await jobs.finish(job_id, read, summary.as_dict() if summary else None, error)


@router.get(IMPORT_PATH + "/{job_id}")
async def import_progress(
    request: Request, services: ServicesDep, viewer: ViewerDep, job_id: str
) -> HTMLResponse:
    job = await ImportJobs(services.db).get(job_id[:32], viewer.key.name)
    if job is None:
        raise NotFound("no such import (imports are kept for 7 days)")
    return page(request, "import_job.html", viewer, job=job)
