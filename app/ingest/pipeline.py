"""Parsing in a second process: the decoder runs in a child, the batches come back to be stored.

One child (a ``ProcessPoolExecutor`` of one worker, so batches are decoded in the order they are
given, and the decoder's state, such as PowerMTA's header line, lives there between batches).
The lines go to the child and the ``Batch`` comes back pickled, with the decoder's ``context``
after it (saved with the batch's offset, as in-process). The child comes from a fork server (a
fresh interpreter: nothing of this process's threads, loop or connections) and is started at
once, so its imports overlap the reader's and the database's start.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from app.ingest.decoders import Decoder, make_decoder
from events import Batch

_decoder: Decoder | None = None


def _start(source: str, origin: str, year: int | None, count_deliveries: bool) -> None:
    global _decoder  # the child's one decoder, kept between batches
    _decoder = make_decoder(source, origin, year=year, count_deliveries=count_deliveries)


def _decode(
    lines: list[str], first_line: int, reset: bool, context: str | None
) -> tuple[Batch, str | None]:
    assert _decoder is not None
    if reset:  # a new file: its saved state (as ``Ingestor.run`` sets it in-process)
        _decoder.context = context
    batch = Batch()
    _decoder.feed(lines, first_line, batch)
    return batch, _decoder.context


def _ready() -> None:
    return None


class DecoderProcess:
    """The decoder of ``source`` in a child process; ``decode`` returns the batch and the
    decoder's context after it. ``close`` ends the child."""

    def __init__(
        self, source: str, origin: str, *, year: int | None = None, count_deliveries: bool = False
    ) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_start,
            initargs=(source, origin, year, count_deliveries),
        )
        self._pool.submit(_ready)  # start the child now

    def submit(
        self, lines: list[str], first_line: int, reset: bool, context: str | None
    ) -> asyncio.Future[tuple[Batch, str | None]]:
        """Queue ``lines`` for decoding now (in order); the result when awaited."""
        return asyncio.wrap_future(self._pool.submit(_decode, lines, first_line, reset, context))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
