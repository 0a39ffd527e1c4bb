"""Run the bounce analysis over a labelled corpus and score it.

usage: python bench/corpus_accuracy.py CORPUS_DIR [--out FILE] [--labels FILE] [--scorer FILE]
                                       [--verbose]

Reads every ``*.eml`` under ``CORPUS_DIR/maildir``, writes one JSON line per file, then runs
the scorer (default ``CORPUS_DIR/../../tools/score_corpus.py``) against the labels (default
``CORPUS_DIR/labels.json``) and prints its summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dsn.jsonl import analyse_file, iter_message_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/out/corpus.jsonl"))
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--scorer", type=Path)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    corpus: Path = args.corpus
    labels = args.labels or corpus / "labels.json"
    scorer = args.scorer or corpus / ".." / ".." / "tools" / "score_corpus.py"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = 0
    with args.out.open("w", encoding="utf-8") as out:
        for path in iter_message_files([corpus / "maildir"]):
            obj = analyse_file(path)
            out.write(json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
    elapsed = time.perf_counter() - started
    print(f"analysed {count} files in {elapsed:.2f}s -> {args.out}")
    command = [sys.executable, str(scorer), str(labels), str(args.out)]
    if args.verbose:
        command.append("--verbose")
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
