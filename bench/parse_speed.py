"""Parse+classify speed over a corpus, side by side with flufl.bounce, in one process.

usage: python bench/parse_speed.py CORPUS_DIR [--rounds N]

Every ``*.eml`` under ``CORPUS_DIR/maildir`` is read into memory first; then each round
runs ``analyse_message`` over all of them, and ``flufl.bounce.scan_message`` over the same
bytes (parsed with ``email.message_from_bytes``, compat32, as flufl.bounce expects).
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import sys
import time
from pathlib import Path

from dsn import ParseError, analyse_message
from dsn.jsonl import iter_message_files


def _ours(messages: list[bytes]) -> None:
    for raw in messages:
        with contextlib.suppress(ParseError):
            analyse_message(raw)


def _flufl(messages: list[bytes]) -> None:
    from flufl.bounce import scan_message

    for raw in messages:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        with contextlib.suppress(Exception):
            scan_message(msg)


def _rate(func: object, messages: list[bytes], rounds: int) -> float:
    assert callable(func)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        func(messages)
        best = min(best, time.perf_counter() - started)
    return len(messages) / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    messages = [p.read_bytes() for p in iter_message_files([args.corpus / "maildir"])]
    if not messages:
        print("no messages found", file=sys.stderr)
        return 1
    ours = _rate(_ours, messages, args.rounds)
    print(
        f"stoplist dsn   {ours:8.0f} messages/s  ({len(messages)} messages, best of {args.rounds})"
    )
    try:
        import flufl.bounce  # noqa: F401
    except ImportError:
        print("flufl.bounce  not installed")
        return 0
    theirs = _rate(_flufl, messages, args.rounds)
    print(f"flufl.bounce   {theirs:8.0f} messages/s")
    print(f"ratio          {ours / theirs:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
