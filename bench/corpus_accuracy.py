"""Run the bounce analysis over a labelled corpus and score it, whole and split by MTA family.

usage: python bench/corpus_accuracy.py CORPUS_DIR [--out FILE] [--labels FILE] [--scorer FILE]
                                       [--split all|built|held|both] [--verbose]

Reads every ``*.eml`` under ``CORPUS_DIR/maildir``, writes one JSON line per file, then runs
the scorer (default ``CORPUS_DIR/../../tools/score_corpus.py``) against the labels (default
``CORPUS_DIR/labels.json``) and prints its summary.

``--split both`` (the default) also scores two parts of the corpus separately: the families the
parsers and rules may be checked against while they are written (*built-on*), and the families
set aside before the work on generalisation began (*held-back*, ``HELD_BACK`` below: every third
family in name order, fixed so that the split cannot drift towards what scores well).  A family is
the file name without its ``-NN.eml`` number.  The gap between the two figures is an estimate of
the error on mail the code has never seen.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from dsn.jsonl import analyse_file, iter_message_files

HELD_BACK: Final = frozenset(
    {
        "lhost-activehunter",
        "lhost-amazonworkmail",
        "lhost-bigfoot",
        "lhost-domino",
        "lhost-exchange2003",
        "lhost-ezweb",
        "lhost-googlegroups",
        "lhost-interscanmss",
        "lhost-mailru",
        "lhost-mfilter",
        "lhost-office365",
        "lhost-postfix",
        "lhost-receivingses",
        "lhost-surfcontrol",
        "lhost-verizon",
        "lhost-x5",
        "lhost-yandex",
        "rhost-aol",
        "rhost-exchangeonline",
        "rhost-godaddy",
        "rhost-gsuite",
        "rhost-messagelabs",
        "rhost-outlook",
    }
)
_NUMBER: Final = re.compile(r"-\d+\.eml$")


def family(path: str) -> str:
    """``maildir/bsd/lhost-exim-07.eml`` -> ``lhost-exim``."""
    return _NUMBER.sub("", path.rsplit("/", 1)[-1])


def is_held_back(path: str) -> bool:
    return family(path) in HELD_BACK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/out/corpus.jsonl"))
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--scorer", type=Path)
    parser.add_argument("--split", choices=("all", "built", "held", "both"), default="both")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    corpus: Path = args.corpus
    labels_path: Path = args.labels or corpus / "labels.json"
    scorer: Path = args.scorer or corpus / ".." / ".." / "tools" / "score_corpus.py"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines: list[tuple[str, str]] = []
    for path in iter_message_files([corpus / "maildir"]):
        obj = analyse_file(path)
        lines.append((path.as_posix(), json.dumps(obj, sort_keys=True, ensure_ascii=False)))
    elapsed = time.perf_counter() - started
    args.out.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
    print(f"analysed {len(lines)} files in {elapsed:.2f}s -> {args.out}")
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    parts: dict[str, list[tuple[str, Callable[[str], bool]]]] = {
        "all": [("whole corpus", lambda _p: True)],
        "built": [("built-on families", lambda p: not is_held_back(p))],
        "held": [("held-back families", is_held_back)],
    }
    chosen = (
        parts["all"] + parts["built"] + parts["held"] if args.split == "both" else parts[args.split]
    )
    status = 0
    for title, keep in chosen:
        print(f"\n== {title} ==", flush=True)
        status |= _score(scorer, labels, lines, keep, args.verbose)
    return status


def _score(
    scorer: Path,
    labels: dict[str, object],
    lines: list[tuple[str, str]],
    keep: Callable[[str], bool],
    verbose: bool,
) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        part_labels = Path(tmp, "labels.json")
        part_out = Path(tmp, "out.jsonl")
        part_labels.write_text(json.dumps({k: v for k, v in labels.items() if keep(k)}))
        part_out.write_text("".join(line + "\n" for path, line in lines if keep(path)))
        command = [sys.executable, str(scorer), str(part_labels), str(part_out)]
        if verbose:
            command.append("--verbose")
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
