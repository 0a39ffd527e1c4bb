"""Where log lines come from: a file (plain or gzip), a file followed across rotation, or a pipe.

Lines are handed on in batches (``LineBatch``: at most ``batch_lines`` lines, or what arrived
within ``flush_s`` when lines trickle in), each with the byte offset just after its last line, so
the caller can save that offset once the batch's events are committed. A file is recognised by
``FileIdentity`` (device, inode and the first bytes), so a rotated and renamed file keeps its
offset. Following works like ``tail -F``: when the path names another file (rotation by rename)
the old file is read to its end, then the new one from its start (or its saved offset); when the
file shrinks below what was read, or its first bytes change (``copytruncate``), it is read again
from the start. A partial last line is left unread until its newline arrives, except at the end
of a file that will not grow (read without ``--follow``, rotated away, or a pipe that closed).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

FINGERPRINT_BYTES: Final = 1024
# Lines per batch (one transaction each) unless told otherwise: a commit, its offset save and its
# round trips are shared by this many lines; the per-address locks stay bounded (app.db).
DEFAULT_BATCH_LINES: Final = 5000
CHUNK_BYTES: Final = 1 << 20
PIPE_CHUNK_BYTES: Final = 1 << 16
# A "line" this long without a newline is handed on as it is (the parser reports it) rather than
# buffered without bound.
MAX_LINE_BYTES: Final = 1 << 20
GZIP_MAGIC: Final = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file this is, whatever its name: device and inode, and its first bytes (``head``,
    up to ``FINGERPRINT_BYTES``) whose hash recognises it after a copy to another device."""

    file_key: str
    head: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.head).hexdigest()

    def same_start(self, head: bytes) -> bool:
        """Whether a file whose first bytes are ``head`` starts like this one."""
        n = min(len(head), len(self.head))
        return head[:n] == self.head[:n]


def identify(fd: int) -> FileIdentity:
    st = os.fstat(fd)
    return FileIdentity(f"{st.st_dev}:{st.st_ino}", os.pread(fd, FINGERPRINT_BYTES, 0))


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a file: the byte after the ``line``-th line, and the parser's state there."""

    offset: int = 0
    line: int = 0
    context: str | None = None


@dataclass(slots=True)
class OpenedFile:
    """One file being read: its path, identity (refreshed while its first bytes grow) and where
    reading started. ``None`` identity: a pipe, which has no offset to keep."""

    path: str
    identity: FileIdentity | None
    start: Position
    size: int | None = None


@dataclass(slots=True)
class LineBatch:
    lines: list[str]  # without their line ends
    first_line: int
    end: Position  # context left to the caller (the decoder knows it)
    file: OpenedFile


Resume = Callable[[FileIdentity, int], Awaitable[Position]]


class _Splitter:
    """Bytes in, batches of complete lines out, counting lines and bytes from ``file.start``."""

    def __init__(self, file: OpenedFile, batch_lines: int) -> None:
        self.file = file
        self.batch_lines = batch_lines
        self.offset = file.start.offset
        self.line = file.start.line
        self.pending = b""

    @property
    def read_to(self) -> int:
        """The byte after the last one read (consumed or pending)."""
        return self.offset + len(self.pending)

    def feed(self, data: bytes, *, final: bool = False) -> Iterator[LineBatch]:
        data = self.pending + data if self.pending else data
        cut = data.rfind(b"\n") + 1
        if final or (cut == 0 and len(data) > MAX_LINE_BYTES):
            cut = len(data)
        self.pending = data[cut:]
        if cut == 0:
            return
        body = data[:cut]
        newline_ended = body.endswith(b"\n")
        raw = (body[:-1] if newline_ended else body).split(b"\n")
        size = self.batch_lines
        for i in range(0, len(raw), size):
            group = raw[i : i + size]
            consumed = sum(map(len, group)) + len(group)
            if not newline_ended and i + size >= len(raw):
                consumed -= 1  # the file's last line, without its newline
            first = self.line + 1
            self.line += len(group)
            self.offset += consumed
            text = b"\n".join(group).decode("utf-8", "replace")
            yield LineBatch(text.split("\n"), first, Position(self.offset, self.line), self.file)

    def flush(self) -> Iterator[LineBatch]:
        """A partial last line as a line of its own (the input will not grow any more)."""
        if self.pending:
            yield from self.feed(b"", final=True)


class FileReader:
    """Reads one path from its start or saved offset; with ``follow``, keeps reading as it grows
    and across rotation until cancelled. A gzip file (rotated and compressed) is read whole."""

    def __init__(
        self,
        path: str,
        resume: Resume,
        *,
        follow: bool = False,
        batch_lines: int = DEFAULT_BATCH_LINES,
        poll_s: float = 0.2,
    ) -> None:
        self.path = path
        self.resume = resume
        self.follow = follow
        self.batch_lines = batch_lines
        self.poll_s = poll_s

    async def batches(self) -> AsyncIterator[LineBatch]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if os.pread(fd, 2, 0) == GZIP_MAGIC:
                # Offsets count the text, whose length the compressed size does not bound.
                splitter = await self._open(fd, unbounded=True)
                async for batch in self._gzip(fd, splitter):
                    yield batch
                return
            splitter = await self._open(fd)
            while True:
                async for batch in self._drain(fd, splitter):
                    yield batch
                if not self.follow:
                    for batch in splitter.flush():
                        yield batch
                    return
                await asyncio.sleep(self.poll_s)
                change = self._changed(fd, splitter)
                if change == "truncated":
                    # copytruncate: the same file starts again; its saved offset is stale.
                    file = OpenedFile(self.path, identify(fd), Position(), os.fstat(fd).st_size)
                    splitter = _Splitter(file, self.batch_lines)
                elif change == "rotated":
                    # The writer may add a last line to the old file before it reopens.
                    async for batch in self._drain(fd, splitter):
                        yield batch
                    await asyncio.sleep(self.poll_s)
                    async for batch in self._drain(fd, splitter):
                        yield batch
                    for batch in splitter.flush():
                        yield batch
                    new_fd = os.open(self.path, os.O_RDONLY)
                    os.close(fd)
                    fd = new_fd
                    splitter = await self._open(fd)
        finally:
            os.close(fd)

    async def _open(self, fd: int, *, unbounded: bool = False) -> _Splitter:
        identity = identify(fd)
        size = os.fstat(fd).st_size
        start = await self.resume(identity, sys.maxsize if unbounded else size)
        return _Splitter(OpenedFile(self.path, identity, start, size), self.batch_lines)

    async def _drain(self, fd: int, splitter: _Splitter) -> AsyncIterator[LineBatch]:
        """Every complete line readable now."""
        while data := os.pread(fd, CHUNK_BYTES, splitter.read_to):
            self._refresh(fd, splitter.file)
            for batch in splitter.feed(data):
                yield batch
            await asyncio.sleep(0)

    @staticmethod
    def _refresh(fd: int, file: OpenedFile) -> None:
        """The file's size, and its identity's first bytes while there were fewer than wanted."""
        file.size = os.fstat(fd).st_size
        if file.identity is not None and len(file.identity.head) < FINGERPRINT_BYTES:
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
            if len(head) > len(file.identity.head) and file.identity.same_start(head):
                file.identity = FileIdentity(file.identity.file_key, head)

    def _changed(self, fd: int, splitter: _Splitter) -> str | None:
        """ "truncated", "rotated" (the path names another file now) or None."""
        st = os.fstat(fd)
        identity = splitter.file.identity
        assert identity is not None
        if st.st_size < splitter.read_to or not identity.same_start(
            os.pread(fd, FINGERPRINT_BYTES, 0)
        ):
            return "truncated"
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return None  # renamed away, the new file not created yet: keep reading the old one
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino) and stat.S_ISREG(named.st_mode):
            return "rotated"
        return None

    async def _gzip(self, fd: int, splitter: _Splitter) -> AsyncIterator[LineBatch]:
        """A compressed file, from its start or the saved offset (counted in its text)."""
        with os.fdopen(os.dup(fd), "rb") as raw, gzip.GzipFile(fileobj=raw) as text:
            skip = splitter.offset
            while skip > 0:
                skipped = len(text.read(min(skip, CHUNK_BYTES)))
                if skipped == 0:
                    return  # shorter than the saved offset: nothing new
                skip -= skipped
            while data := text.read(CHUNK_BYTES):
                for batch in splitter.feed(data):
                    yield batch
                await asyncio.sleep(0)
            for batch in splitter.flush():
                yield batch


class PipeReader:
    """Standard input or a pipe (PowerMTA's ``<acct-file |program>``): read on a thread so that
    lines trickling in are handed on within ``flush_s``; nothing to resume, no offsets."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        name: str = "-",
        batch_lines: int = DEFAULT_BATCH_LINES,
        flush_s: float = 0.2,
    ) -> None:
        self.stream = stream
        self.name = name
        self.batch_lines = batch_lines
        self.flush_s = flush_s

    async def batches(self) -> AsyncIterator[LineBatch]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        fd = self.stream.fileno()

        def pump() -> None:
            while True:
                try:
                    data = os.read(fd, PIPE_CHUNK_BYTES)
                except OSError:
                    data = b""
                asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
                if not data:
                    return

        threading.Thread(target=pump, name="stoplist-ingest-pipe", daemon=True).start()
        splitter = _Splitter(OpenedFile(self.name, None, Position()), self.batch_lines)
        held: list[LineBatch] = []
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                data = None
            if data:
                held.extend(splitter.feed(data))
                if held and deadline is None:
                    deadline = loop.time() + self.flush_s
            if data is None or data == b"" or sum(len(b.lines) for b in held) >= self.batch_lines:
                if held:
                    yield _merge(held)
                held, deadline = [], None
            if data == b"":
                for batch in splitter.flush():
                    yield batch
                return


def _merge(batches: list[LineBatch]) -> LineBatch:
    """Small batches read within one flush interval, as one."""
    if len(batches) == 1:
        return batches[0]
    lines = [line for b in batches for line in b.lines]
    return LineBatch(lines, batches[0].first_line, batches[-1].end, batches[0].file)
