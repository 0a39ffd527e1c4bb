"""``app.ingest``: reading MTA logs from files, followed files and pipes into an event sink, with
durable offsets. The sink is a real SQLite table (tests/app/ingest_support.py)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import events
from app.db import Database, run_migrations
from app.ingest import Progress, ingest_log, pipeline
from app.ingest import service as ingest_service
from app.settings import Settings
from events import Batch
from tests.app.ingest_support import Counts, NothingAhead, TableSink

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "events"
HEADER = "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,bounceCat,vmta\n"


def pmta_line(i: int) -> str:
    if i % 10 == 9:
        return (
            f"b,{1767607200 + i},bounces@example.com,user{i}@example.org,5.1.1 (bad mailbox),"
            f'"smtp;550 5.1.1 user unknown",bad-mailbox,vmta-1\n'
        )
    return f"d,{1767607200 + i},bounces@example.com,user{i}@example.org,2.0.0,,,vmta-1\n"


def pmta_file(path: Path, n: int) -> list[str]:
    lines = [HEADER] + [pmta_line(i) for i in range(n)]
    path.write_text("".join(lines))
    return lines


@pytest_asyncio.fixture(loop_scope="session")
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    await asyncio.to_thread(run_migrations, Settings(database_url=url))
    database = Database(Settings(database_url=url))
    try:
        yield database
    finally:
        await database.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def sink(db: Database) -> TableSink:
    s = TableSink(db)
    await s.create()
    return s


def quiet() -> Progress:
    return Progress(quiet=True)


def expected(source: str, path: Path, **kw: object) -> list[tuple[str, str]]:
    """(dedupe id, location) of every event the parser makes of the whole file in one pass."""
    parser = events.LOG_PARSERS[source]
    with path.open(encoding="utf-8") as f:
        items = list(parser(f, path.name, **kw))  # type: ignore[call-arg]
    return sorted((e.dedupe_id, e.location) for e in items if isinstance(e, events.Event))


async def recorded(sink: TableSink) -> list[tuple[str, str]]:
    return sorted(
        (str(d), str(loc)) for d, loc in await sink.rows("t_events", "dedupe_id, location")
    )


async def wait_for(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not await check():  # type: ignore[misc]
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    ("source", "name", "kw"),
    [
        ("pmta", "pmta-01.csv", {}),
        ("pmta", "pmta-02.csv", {}),
        ("postfix", "postfix-01.log", {"year": 2026}),
        ("postfix", "postfix-02.log", {"year": 2026}),
        ("kumomta", "kumomta-01.jsonl", {}),
    ],
)
@pytest.mark.parametrize(
    ("batch_lines", "parse_process"), [(1, False), (2, False), (1000, False), (2, True)]
)
async def test_a_file_in_batches_gives_what_one_pass_gives(
    db: Database,
    sink: TableSink,
    tmp_path: Path,
    source: str,
    name: str,
    kw: dict[str, int],
    batch_lines: int,
    parse_process: bool,
) -> None:
    """Whatever the batch size, parsed here or in a second process: the same events, located at
    the same lines (PowerMTA's header and Postfix's queue-id state carry from batch to batch)."""
    path = tmp_path / name
    shutil.copy(SAMPLES / name, path)
    totals = await ingest_log(
        source,
        str(path),
        db=db,
        sink=sink,
        batch_lines=batch_lines,
        progress=quiet(),
        parse_process=parse_process,
        **kw,  # type: ignore[arg-type]
    )
    want = expected(source, path, **kw)
    assert want
    assert await recorded(sink) == want
    assert totals.events_new == len(want)
    assert totals.duplicate == 0
    assert totals.offset == path.stat().st_size
    assert not sink.unsettled  # what the sink left running after its last commit was waited for


async def test_a_second_run_reads_only_what_was_appended(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    lines = pmta_file(path, 50)
    first = await ingest_log("pmta", str(path), db=db, sink=sink, progress=quiet())
    assert (first.lines, first.events_new) == (51, 50)
    with path.open("a") as f:
        f.writelines(pmta_line(i) for i in range(50, 80))
    second = await ingest_log(
        "pmta", str(path), db=db, sink=sink, batch_lines=7, progress=quiet(), parse_process=True
    )
    # Only the new lines (here parsed in a second process: the saved header goes there too), numbered from where the file left off, with the saved header's columns.
    assert (second.lines, second.events_new, second.duplicate, second.errors) == (30, 30, 0, 0)
    assert len(await sink.rows("t_attempts")) == 80
    assert await recorded(sink) == expected("pmta", path)
    locations = {loc for _, loc in await recorded(sink)}
    assert f"acct.csv:{len(lines) + 30}" in locations


async def test_a_failed_batch_is_read_again_and_nothing_is_skipped(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    """The offset is saved only after a batch committed: a run that dies at batch 4 resumes at
    batch 4, exactly."""
    path = tmp_path / "acct.csv"
    pmta_file(path, 100)

    class Failing(NothingAhead):
        calls = 0

        async def record(
            self,
            batch: Batch,
            *,
            count_deliveries: bool = False,
            before_commit: Any = None,
            prepared: Any = None,
        ) -> Counts:
            self.calls += 1
            if self.calls == 4:
                raise RuntimeError("crash")
            return await sink.record(batch, before_commit=before_commit)

    with pytest.raises(RuntimeError):
        await ingest_log("pmta", str(path), db=db, sink=Failing(), batch_lines=10, progress=quiet())
    assert len(await sink.rows("t_events")) == 29  # header + 9, then 10 and 10
    again = await ingest_log("pmta", str(path), db=db, sink=sink, batch_lines=10, progress=quiet())
    assert (again.events_new, again.duplicate) == (71, 0)
    assert len(await sink.rows("t_attempts")) == 100
    assert await recorded(sink) == expected("pmta", path)


async def test_storage_down_is_retried_without_advancing_and_logged_once(
    db: Database, sink: TableSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "acct.csv"
    pmta_file(path, 30)

    class Flaky(NothingAhead):
        failures = 0

        async def record(
            self,
            batch: Batch,
            *,
            count_deliveries: bool = False,
            before_commit: Any = None,
            prepared: Any = None,
        ) -> Counts:
            if self.failures < 3:
                self.failures += 1
                raise OperationalError("INSERT", {}, ConnectionRefusedError("down"))
            return await sink.record(batch, before_commit=before_commit)

    caplog.set_level(logging.WARNING, "app.ingest")
    totals = await ingest_log("pmta", str(path), db=db, sink=Flaky(), progress=quiet())
    assert totals.events_new == 30
    assert await recorded(sink) == expected("pmta", path)
    messages = [r.getMessage() for r in caplog.records if r.name == "app.ingest"]
    assert len(messages) == 2
    assert messages[0].startswith("storage unavailable (OperationalError)")
    assert messages[1].startswith("storage back after")


async def test_bad_lines_are_kept_and_reported_with_file_and_line(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    path.write_text(
        HEADER
        + pmta_line(0)
        + "d,1767607200,bounces@example.com\n"  # too few fields
        + "zz,1767607200,bounces@example.com,x@example.org,,,,v\n"  # unknown type
        + pmta_line(1)
    )
    stream = io.StringIO()
    totals = await ingest_log(
        "pmta", str(path), db=db, sink=sink, batch_lines=2, progress=Progress(stream=stream)
    )
    assert (totals.events_new, totals.errors) == (2, 2)
    errors = await sink.rows("t_errors")
    assert [loc for loc, _ in errors] == ["acct.csv:3", "acct.csv:4"]
    report = stream.getvalue().splitlines()
    assert report[0] == "acct.csv:3: 3 fields where the header names 8"
    assert report[1] == "acct.csv:4: unknown record type 'zz'"
    # Not a terminal: no progress line, only the summary; never a line's content (addresses).
    assert report[2].startswith("5 lines (100.0 %)")
    assert "example.org" not in stream.getvalue()


async def test_quiet_writes_no_summary(db: Database, sink: TableSink, tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    pmta_file(path, 3)
    stream = io.StringIO()
    await ingest_log(
        "pmta", str(path), db=db, sink=sink, progress=Progress(quiet=True, stream=stream)
    )
    assert stream.getvalue() == ""


async def test_on_a_terminal_the_progress_line_is_redrawn(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    path = tmp_path / "acct.csv"
    pmta_file(path, 20)
    stream = Tty()
    await ingest_log(
        "pmta", str(path), db=db, sink=sink, batch_lines=5, progress=Progress(stream=stream)
    )
    out = stream.getvalue()
    assert out.startswith("\r") and "lines/s; events:" in out
    assert out.endswith("events: 20 new, 0 duplicate; 0 bad lines\n")


async def test_a_gzip_file_is_read_and_resumed(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    plain = tmp_path / "acct.csv"
    pmta_file(plain, 40)
    path = tmp_path / "acct.csv.1.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    totals = await ingest_log("pmta", str(path), db=db, sink=sink, progress=quiet())
    assert totals.events_new == 40
    assert await recorded(sink) == sorted(
        (d, loc.replace("acct.csv:", "acct.csv.1.gz:")) for d, loc in expected("pmta", plain)
    )
    again = await ingest_log("pmta", str(path), db=db, sink=sink, progress=quiet())
    assert (again.lines, again.events_new) == (0, 0)


async def follow(
    db: Database, sink: TableSink, path: Path, source: str = "pmta"
) -> asyncio.Task[object]:
    task = asyncio.create_task(
        ingest_log(source, str(path), db=db, sink=sink, follow=True, flush_s=0.05, progress=quiet())
    )
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def count(sink: TableSink, n: int) -> Callable[[], object]:
    async def check() -> bool:
        return len(await sink.rows("t_events")) >= n

    return check


def saved(db: Database, path: Path) -> Callable[[], object]:
    async def check() -> bool:
        async with db.read() as s:
            offsets = await s.scalars(
                text('SELECT "offset" FROM ingest_offsets WHERE path = :p'), {"p": str(path)}
            )
            return path.stat().st_size in set(offsets)

    return check


@pytest.mark.parametrize("parse_process", [False, True])
async def test_a_stop_while_a_batch_commits_counts_it(
    db: Database, sink: TableSink, tmp_path: Path, parse_process: bool
) -> None:
    """Stopped between a batch's commit and its answer (the race a CI run caught: the offset was
    saved, the summary said 0 lines), the ingest lets the batch end and counts it."""
    path = tmp_path / "acct.csv"
    pmta_file(path, 30)
    committed = asyncio.Event()

    class SlowAnswer(NothingAhead):
        async def record(
            self,
            batch: Batch,
            *,
            count_deliveries: bool = False,
            before_commit: Any = None,
            prepared: Any = None,
        ) -> Counts:
            counts = await sink.record(batch, before_commit=before_commit)
            committed.set()
            await asyncio.sleep(0.3)  # committed and visible; the answer is still on its way
            return counts

    out = io.StringIO()
    task = asyncio.create_task(
        ingest_log(
            "pmta",
            str(path),
            db=db,
            sink=SlowAnswer(),
            follow=True,
            flush_s=0.05,
            progress=Progress(stream=out),
            parse_process=parse_process,
        )
    )
    await asyncio.wait_for(committed.wait(), 20)
    await stop(task)
    assert len(await sink.rows("t_attempts")) == 30
    assert out.getvalue().splitlines()[-1].endswith("events: 30 new, 0 duplicate; 0 bad lines")


async def piped(path: Path, db: Database, sink: TableSink) -> Any:
    """``path`` ingested in batches of 10 lines, parsed in a second process."""
    return await ingest_log(
        "pmta", str(path), db=db, sink=sink, batch_lines=10, progress=quiet(), parse_process=True
    )


async def test_a_parse_process_killed_mid_file_stops_the_ingest_and_a_rerun_resumes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``--parse-process`` and its child killed (the OOM killer) mid-file: the ingest stops with
    ``BrokenProcessPool`` (the CLI says so and exits 1), leaves no unseen future errors behind,
    and a run of the same command goes on from the last commit: every line once."""
    path = tmp_path / "acct.csv"
    pmta_file(path, 300)
    slow = TableSink(db, delay_s=0.05)
    await slow.create()
    started: list[pipeline.DecoderProcess] = []

    class Watched(pipeline.DecoderProcess):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            started.append(self)

    monkeypatch.setattr(ingest_service, "DecoderProcess", Watched)
    caplog.set_level(logging.ERROR, "asyncio")
    run = asyncio.create_task(piped(path, db, slow))
    await wait_for(count(slow, 30), "three batches committed")
    [child] = started[0]._pool._processes.values()  # type: ignore[attr-defined]
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        await asyncio.wait_for(run, 30)
    committed = len(await slow.rows("t_events"))
    assert 30 <= committed < 300
    gc.collect()
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    again = await ingest_log("pmta", str(path), db=db, sink=slow, progress=quiet())
    assert again.events_new == 300 - committed
    assert await recorded(slow) == expected("pmta", path)
    assert len(await slow.rows("t_attempts")) == 300  # no committed line was given again


async def test_decodes_left_by_a_dead_parse_process_leave_no_unseen_errors(
    db: Database,
    sink: TableSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead child fails every decode handed to it (up to ``PIPE_DEPTH`` ahead); the ingest
    stops on the first and marks the others seen, so asyncio logs no "exception was never
    retrieved" for them (four such tracebacks followed the real error before)."""
    path = tmp_path / "acct.csv"
    pmta_file(path, 100)

    class Dead:
        def __init__(self, *args: Any, **kw: Any) -> None:
            self.submitted = 0

        def submit(self, *args: Any) -> asyncio.Future[Any]:
            self.submitted += 1
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(BrokenProcessPool("A process in the process pool was terminated"))
            return failed

        def close(self) -> None:
            return None

    monkeypatch.setattr(ingest_service, "DecoderProcess", Dead)
    caplog.set_level(logging.ERROR, "asyncio")
    with pytest.raises(BrokenProcessPool):
        await piped(path, db, sink)
    gc.collect()
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert await sink.rows("t_events") == []


async def test_follow_leaves_a_partial_line_until_its_newline(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    pmta_file(path, 5)
    task = await follow(db, sink, path)
    try:
        await wait_for(count(sink, 5), "the first lines")
        line = pmta_line(5)
        with path.open("a") as f:
            f.write(line[:30])
        with path.open("a") as f:
            f.write(pmta_line(6)[:0])  # a second writer's empty write changes nothing
        await asyncio.sleep(0.3)
        assert len(await sink.rows("t_events")) == 5
        assert len(await sink.rows("t_errors")) == 0
        with path.open("a") as f:
            f.write(line[30:])
        await wait_for(count(sink, 6), "the completed line")
    finally:
        await stop(task)
    assert await recorded(sink) == expected("pmta", path)
    assert len(await sink.rows("t_errors")) == 0


async def test_follow_across_rotation_by_rename(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    rotated = tmp_path / "acct.csv.1"
    pmta_file(path, 10)
    task = await follow(db, sink, path)
    try:
        await wait_for(count(sink, 10), "the first file")
        with path.open("a") as f:
            f.write(pmta_line(10))  # written just before the rename
        path.rename(rotated)
        with rotated.open("a") as f:
            f.write(pmta_line(11))  # the writer's last line to the old file, after the rename
        path.write_text(HEADER + pmta_line(12) + pmta_line(13))
        await wait_for(count(sink, 14), "both files")
        with path.open("a") as f:
            f.write(pmta_line(14))
        await wait_for(count(sink, 15), "the new file growing")
        await wait_for(saved(db, path), "the offset saved after the last commit")
    finally:
        await stop(task)
    want = {d for d, _ in expected("pmta", rotated) + expected("pmta", path)}
    assert {d for d, _ in await recorded(sink)} == want
    assert len(await sink.rows("t_attempts")) == 15
    # Each file's offset is kept under its own identity: a restart reads neither again.
    again = await ingest_log("pmta", str(path), db=db, sink=sink, progress=quiet())
    assert again.lines == 0
    again = await ingest_log("pmta", str(rotated), db=db, sink=sink, progress=quiet())
    assert again.lines == 0


async def test_follow_after_copytruncate_reads_the_file_again_from_its_start(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    pmta_file(path, 10)
    task = await follow(db, sink, path)
    try:
        await wait_for(count(sink, 10), "the first lines")
        shutil.copy(path, tmp_path / "acct.csv.1")
        with path.open("r+") as f:
            f.truncate(0)
        await asyncio.sleep(0.3)
        with path.open("a") as f:
            f.write(HEADER + pmta_line(20) + pmta_line(21))
        await wait_for(count(sink, 12), "the lines after the truncation")
    finally:
        await stop(task)
    assert len(await sink.rows("t_attempts")) == 12
    locations = sorted(str(loc) for _, loc in await recorded(sink))
    assert locations.count("acct.csv:2") == 2  # line 2 of the file before and after truncation


async def test_a_pipe_is_read_as_lines_arrive(db: Database, sink: TableSink) -> None:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    task = asyncio.create_task(
        ingest_log("pmta", "-", db=db, sink=sink, stdin=reader, flush_s=0.05, progress=quiet())
    )
    try:
        os.write(write_fd, (HEADER + pmta_line(0) + pmta_line(1)[:20]).encode())
        # The pipe stays open: the complete line is handed on within the flush interval.
        await wait_for(count(sink, 1), "a line from an open pipe")
        os.write(write_fd, (pmta_line(1)[20:] + pmta_line(2)).encode())
        await wait_for(count(sink, 3), "more lines")
        os.write(write_fd, pmta_line(3).rstrip("\n").encode())
    finally:
        os.close(write_fd)
    totals = await task
    reader.close()
    assert (totals.lines, totals.events_new) == (5, 4)
    assert sorted(str(loc) for _, loc in await recorded(sink)) == [
        f"stdin:{n}" for n in range(2, 6)
    ]
    async with sink.db.read() as s:
        assert (await s.scalar(text("SELECT count(*) FROM ingest_offsets"))) == 0


@pytest.mark.slow
async def test_kill_9_mid_file_then_restart_records_every_line_once(
    db: Database, sink: TableSink, tmp_path: Path
) -> None:
    path = tmp_path / "acct.csv"
    pmta_file(path, 3000)
    url = str(db.engine.url)
    cmd = [sys.executable, "-m", "tests.app.ingest_child", url, "pmta", str(path)]
    child = subprocess.Popen(cmd, cwd=ROOT)
    try:
        await wait_for(count(sink, 500), "the child to get going")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    before = len(await sink.rows("t_events"))
    assert 500 <= before < 3000
    done = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, timeout=120)
    assert done.returncode == 0
    assert await recorded(sink) == expected("pmta", path)
    # At most the batch in flight at the kill (50 lines) is read twice; the rest once.
    attempts = len(await sink.rows("t_attempts"))
    assert 3000 <= attempts <= 3050
