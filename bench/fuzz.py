"""Coverage-guided fuzzing of the pure parsers with atheris (libFuzzer), bounded in time.

    python bench/fuzz.py [--seconds 60] [--out bench/out/fuzz] [--max-len 16384]
    python bench/fuzz.py --replay FILE...     # re-run saved inputs (a crash, a slow one)

Every input goes through the three entry points the service calls on mail it did not write:

* ``dsn.analyse_message(data)`` -- may only raise ``dsn.ParseError``;
* ``arf.parse_bytes(data)`` -- may only raise ``arf.ArfParseError``, returns a report or None,
  never a redacted value as an address;
* ``classifiers.classify(...)`` on fields cut from the same bytes (status, reply code,
  diagnostic text, provider, remote MTA, recipient domain) -- never raises, says ``hard`` only
  with a rule behind it, an address-level reason and no transient (4xx / 4.x.x) code in play.

The run is seeded with every ``samples/**/*.eml`` and a dictionary of the tokens the parsers
branch on; one input in four is also tried with a slice of it repeated to ``--amplify-kb``
(see ``amplified``).  Anything else that escapes is a crash; so is an input that costs more
than ``--slow`` seconds of CPU (default 1: inputs are at most ``--max-len`` bytes, or 64 KB
amplified, and take milliseconds, so only a super-linear path gets there), one that hangs
past ``--timeout`` (libFuzzer's watchdog) and one that needs more than ``--rss-mb`` of memory.
The crashing input is written to ``--out`` (``crash-<sha1>``, ``timeout-<sha1>``,
``oom-<sha1>``) and the exit status is non-zero; 0 means the time ran out with nothing found.  The working corpus (inputs that reached new code) is
kept in ``--out/corpus`` and reused by the next run.

Every crash found becomes a golden sample in ``samples/`` (see docs/reliability.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

# Coverage instrumentation when fuzzing; plain code for --replay, so that a replay times the
# parsers as the service runs them.
if "--replay" in sys.argv:
    from arf import ArfParseError, ComplaintReport, parse_bytes
    from classifiers import HARD_REASONS, Classification, Outcome, classify, default_rules
    from dsn import MessageAnalysis, ParseError, analyse_message
else:
    with atheris.instrument_imports():
        from arf import ArfParseError, ComplaintReport, parse_bytes
        from classifiers import HARD_REASONS, Classification, Outcome, classify, default_rules
        from dsn import MessageAnalysis, ParseError, analyse_message

SAMPLES = ROOT / "samples"
# libFuzzer dictionary: the tokens the parsers branch on, so mutations reach those branches.
TOKENS = [
    "\n\n",
    "\r\n",
    "\r",
    "--",
    ": ",
    "; ",
    "@",
    "<",
    ">",
    "(",
    ")",
    ":",
    ",",
    '"',
    "\x00",
    "\xff",
    "=?",
    "?=",
    "=?utf-8?b?",
    "=?x-unknown?q?",
    "boundary=",
    "charset=",
    "report-type=",
    "Content-Type: ",
    "multipart/mixed",
    "multipart/report",
    "message/rfc822",
    "message/delivery-status",
    "message/feedback-report",
    "text/rfc822-headers",
    "Content-Transfer-Encoding: base64",
    "quoted-printable",
    "Final-Recipient: rfc822; ",
    "Original-Recipient: ",
    "Action: failed",
    "Status: 5.1.1",
    "Diagnostic-Code: smtp; 550 ",
    "Remote-MTA: dns; ",
    "Reporting-MTA: dns; ",
    "X-Failed-Recipients: ",
    "Feedback-Type: ",
    "Original-Rcpt-To: ",
    "Removal-Recipient: ",
    "X-HmXmrOriginalRecipient: ",
    "X-Stoplist-Ref: ",
    "X-Stoplist-Recipient: ",
    "notificationType",
    "bouncedRecipients",
    "MAILER-DAEMON",
    "This is the mail system at host",
    "Transcript of session follows",
    "was not delivered to:",
    "550 5.1.1 ",
    "4.4.7",
    "said: ",
    ">>> RCPT TO:<",
    "<<< ",
    "gsmtp",
    "outlook.com",
    "rfc822; ",
]


def check_dsn(data: bytes) -> None:
    try:
        analysis = analyse_message(data)
    except ParseError:
        return
    assert isinstance(analysis, MessageAnalysis)
    for result in analysis.results:
        assert "@" in result.recipient, result
        if result.outcome == "hard":
            assert result.rule_id != "unclassified", result


def check_arf(data: bytes) -> None:
    try:
        report = parse_bytes(data)
    except ArfParseError:
        return
    assert report is None or isinstance(report, ComplaintReport)
    if report is not None:
        for recipient in report.recipients:
            assert not (recipient.redacted and recipient.address is not None), recipient
            assert recipient.address is None or "@" in recipient.address, recipient


def check_classify(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    status = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16)) or None
    reply = fdp.ConsumeIntInRange(0, 999) if fdp.ConsumeBool() else None
    provider = fdp.PickValueInList([None, "gmail", "microsoft", "yahoo", "apple", "bogus"])
    remote_mta = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64)) or None
    domain = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 32)) or None
    diagnostic = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()) or None
    got = classify(
        status=status,
        reply_code=reply,
        diagnostic=diagnostic,
        provider=provider,
        remote_mta=remote_mta,
        recipient_domain=domain,
    )
    assert isinstance(got, Classification)
    if got.outcome is Outcome.HARD:
        # A false hard bounce suppresses a real person for good: only a rule may say it, with
        # an address-level reason, and never on a transient reply.
        assert got.rule_id != "unclassified", got
        assert got.reason in HARD_REASONS, got
        assert not (reply is not None and 400 <= reply < 500), (got, reply)


class SlowInput(Exception):
    """An input cost more CPU time than any input of its size should."""


SLOW_SECONDS = 1.0


def _timed(check: Callable[[bytes], None], data: bytes) -> None:
    # CPU time of this process, not wall time: the machine may be busy with other work.
    started = time.process_time()
    check(data)
    took = time.process_time() - started
    if took > SLOW_SECONDS:
        raise SlowInput(f"{check.__name__} took {took:.2f} s of CPU on {len(data)} bytes")


AMPLIFY_BYTES = 64 * 1024


def amplified(data: bytes) -> bytes | None:
    """One input in four, with a short slice of itself repeated to ``AMPLIFY_BYTES``.

    Coverage guidance does not find super-linear paths: they need long runs of one pattern
    ("!!!!...", blank lines, ";;;;"), which mutations of small inputs rarely build.  Repeating
    a slice the fuzzer chose turns each pattern it tries into such a run.
    """
    if AMPLIFY_BYTES <= 0 or len(data) < 4 or data[0] % 4:
        return None
    start = (data[1] << 8 | data[2]) % len(data)
    unit = data[start : start + 1 + data[3] % 16]
    return data[:start] + unit * (AMPLIFY_BYTES // len(unit)) + data[start:]


def test_one_input(data: bytes) -> None:
    _timed(check_dsn, data)
    _timed(check_arf, data)
    _timed(check_classify, data)
    big = amplified(data)
    if big is not None:
        _timed(check_dsn, big)
        _timed(check_arf, big)


def _dict_entry(token: str) -> str:
    """libFuzzer's dictionary syntax: printable ASCII as is, anything else as \\xHH."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\x{ord(c):02X}" for c in token)


def _seed_corpus(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for sample in sorted(SAMPLES.rglob("*.eml")):
        name = "sample-" + sample.relative_to(SAMPLES).as_posix().replace("/", "-")
        target = corpus / name
        if not target.exists():
            shutil.copyfile(sample, target)


def _replay(paths: list[Path]) -> int:
    failed = 0
    for path in paths:
        started = time.process_time()
        try:
            test_one_input(path.read_bytes())
        except Exception as exc:
            failed += 1
            print(f"FAIL {path}: {type(exc).__name__}: {exc}")
            continue
        print(f"ok   {path} ({time.process_time() - started:.3f} s CPU)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time (default 60)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz")
    parser.add_argument("--max-len", type=int, default=16384, help="largest input tried")
    parser.add_argument("--slow", type=float, default=1.0, help="CPU seconds one input may take")
    parser.add_argument("--timeout", type=int, default=30, help="wall seconds before a hang")
    parser.add_argument(
        "--amplify-kb", type=int, default=64, help="size of amplified inputs (0: none)"
    )
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory the run may use")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")
    parser.add_argument("--replay", type=Path, nargs="+", help="run these inputs once and stop")
    args = parser.parse_args(argv)
    global AMPLIFY_BYTES, SLOW_SECONDS
    SLOW_SECONDS = args.slow
    AMPLIFY_BYTES = args.amplify_kb * 1024
    default_rules()  # compiled once, before any input is timed
    if args.replay:
        return _replay(args.replay)
    corpus = args.out / "corpus"
    _seed_corpus(corpus)
    dictionary = args.out / "tokens.dict"
    dictionary.write_text("".join(f'"{_dict_entry(token)}"\n' for token in TOKENS))
    libfuzzer_args = [
        sys.argv[0],
        f"-max_total_time={args.seconds}",
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_mb}",
        f"-artifact_prefix={args.out}/",
        f"-seed={args.seed}",
        f"-dict={dictionary}",
        "-len_control=0",  # long inputs from the start: size is where parsers go wrong
        "-print_final_stats=1",
        str(corpus),
    ]
    print(f"fuzzing dsn + arf + classify for {args.seconds} s; crashes go to {args.out}/")
    atheris.Setup(libfuzzer_args, test_one_input)
    atheris.Fuzz()  # exits the process: non-zero on a crash, 0 when the time is up
    return 0


if __name__ == "__main__":
    sys.exit(main())
