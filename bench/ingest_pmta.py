"""``stoplist ingest pmta`` end to end into PostgreSQL + Redis, against reading + CSV-parsing the
same file (the floor), in the same run.

usage: python bench/ingest_pmta.py [--lines 1000000] [--bounce-share 0.1] [--keep]

Writes a PowerMTA accounting file (the User's Guide's ``<acct-file>`` CSV: a header line naming
the ``record-fields``, then one record per line; 90 % ``d``, 10 % ``b`` by default, the bounces
cycling through a few dozen distinct replies as a real day's file does), then times:

- floor: ``csv.reader`` over the file read from disk, every row touched;
- ours: ``stoplist ingest pmta FILE -q`` as its own process on a fresh, migrated PostgreSQL
  database with Redis as the cache: reading, parsing, classifying, the event store's inserts and
  policy (hard bounces suppressed), the deliveries counted into the rate buckets (not stored),
  the offset saved in each batch's transaction.

Then checks the result (every bounce stored once and every delivery counted once, the hard
bounces suppressed) and prints lines/s
of both and our share of the floor. ``--profile`` runs the ingest under cProfile instead and
prints the top functions (the figure is then not comparable).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIELDS = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
    "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvSize,vmta,jobId,envId,"
    "header_X-Stoplist-Stream"
)
# (dsnStatus, dsnDiag, bounceCat): replies as receiving MTAs word them (anonymised).
BOUNCES = [
    (
        "5.1.1 (bad destination mailbox address)",
        "smtp;550 5.1.1 <{r}>: Recipient address rejected: User unknown in virtual mailbox table",
        "bad-mailbox",
    ),
    (
        "5.1.1 (bad destination mailbox address)",
        "smtp;550-5.1.1 The email account that you tried to reach does not exist. - gsmtp",
        "bad-mailbox",
    ),
    ("5.2.2 (mailbox full)", "smtp;552 5.2.2 Mailbox full", "quota-issues"),
    (
        "5.7.1 (delivery not authorized)",
        "smtp;554 5.7.1 Service unavailable; Client host [198.51.100.{n}] blocked using zen.spamhaus.org",
        "spam-related",
    ),
    (
        "5.0.0 (undefined status)",
        "smtp;550 Requested action not taken: mailbox unavailable",
        "bad-mailbox",
    ),
    ("4.4.7 (delivery time expired)", "smtp;421 4.4.2 Connection timed out", "message-expired"),
    (
        "5.7.26 (multiple authentication checks failed)",
        "smtp;550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
        "policy-related",
    ),
    (
        "5.1.2 (bad destination system address)",
        "smtp;550 5.1.2 Host unknown: domain does not exist",
        "bad-domain",
    ),
]
DOMAINS = ["gmail.example", "outlook.example", "yahoo.example", "example.net", "example.org"]


def generate(path: Path, lines: int, bounce_share: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    base = 1767607200
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(FIELDS + "\n")
        for i in range(lines):
            rcpt = f"user{i}@{DOMAINS[i % 5]}"
            logged = base + i // 500
            tail = (
                f"smtp,app1.example.com,smtp,198.51.100.{i % 8},192.0.2.{i % 200},4521,"
                f"vmta{i % 8},job{i % 50},env{i},newsletter\n"
            )
            mta = f"mx{i % 3}.{DOMAINS[i % 5]} (192.0.2.{i % 200})"
            if rng.random() < bounce_share:
                status, diag, category = BOUNCES[rng.randrange(len(BOUNCES))]
                diag = diag.format(r=rcpt, n=rng.randrange(250))
                f.write(
                    f'b,{logged},{base},bounces@mail.example.com,{rcpt},,failed,{status},"{diag}",'
                    f"{mta},{category},{tail}"
                )
            else:
                f.write(
                    f"d,{logged},{base},bounces@mail.example.com,{rcpt},,relayed,"
                    f"2.0.0 (success),smtp;250 2.0.0 OK id={i},{mta},,{tail}"
                )


def floor(path: Path) -> float:
    """Seconds to read the file and split every line into its CSV fields."""
    start = time.perf_counter()
    rows = 0
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            if row:
                rows += 1
    return time.perf_counter() - start


def psql(db: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--bounce-share", type=float, default=0.10)
    ap.add_argument("--db", default="stoplist_bench_ingest")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--workdir", default="/tmp/stoplist-ingest-bench")
    ap.add_argument("--batch-lines", type=int, default=5000)
    ap.add_argument("--profile", action="store_true", help="run the ingest under cProfile")
    ap.add_argument(
        "--parse-process",
        action="store_true",
        help="stoplist ingest --parse-process (parse in a second process)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the database and the file")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "acct.csv"
    t0 = time.perf_counter()
    generate(path, args.lines, args.bounce_share)
    size_mb = path.stat().st_size / 1e6
    print(f"generated {args.lines:,} lines ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")

    psql("test", f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    psql("test", f'CREATE DATABASE "{args.db}"')
    env = os.environ | {
        "STOPLIST_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}",
        "STOPLIST_REDIS_URL": args.redis,
        "STOPLIST_REDIS_PREFIX": f"ingestbench-{os.getpid()}:",
    }
    try:
        subprocess.run([BIN / "stoplist", "migrate"], env=env, check=True, capture_output=True)
        floor_s = min(floor(path) for _ in range(2))
        cmd = [str(BIN / "stoplist"), "ingest", "pmta", str(path), "-q"]
        cmd += ["--batch-lines", str(args.batch_lines)]
        if args.parse_process:
            cmd.append("--parse-process")
        if args.profile:
            cmd = [sys.executable, "-m", "cProfile", "-s", "tottime", *cmd]
        start = time.perf_counter()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        ours_s = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (
            cpu_before.ru_utime + cpu_before.ru_stime
        )
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"ingest failed ({done.returncode})")
        if args.profile:
            print("\n".join(done.stdout.splitlines()[:70]))
        stored = int(psql(args.db, "SELECT count(*) FROM delivery_events"))
        hard = int(psql(args.db, "SELECT count(*) FROM delivery_events WHERE outcome = 'hard'"))
        suppressed = int(psql(args.db, "SELECT count(*) FROM suppressions WHERE outcome = 'hard'"))
        # Deliveries are counted into the rates, not stored: every line is one or the other.
        sums = "SELECT sum(sent), sum(delivered) FROM rate_counts WHERE grain = '1d'"
        sent, delivered = (int(n) for n in psql(args.db, sums).strip().split("|"))
        assert stored + delivered == args.lines == sent, (stored, delivered, sent, args.lines)
        assert suppressed == hard > 0, (suppressed, hard)
        floor_rate = args.lines / floor_s
        our_rate = args.lines / ours_s
        print(f"floor: read + csv.reader   {floor_rate:12,.0f} lines/s ({floor_s:.2f} s)")
        print(f"stoplist ingest pmta       {our_rate:12,.0f} lines/s ({ours_s:.2f} s)")
        print(f"ratio                      {our_rate / floor_rate:12.1%} of the floor")
        # CPU of the ingest process (not of a --parse-process child): steadier than the wall
        # clock on a shared machine.
        print(f"ingest process CPU         {cpu_s:12.2f} s")
        print(f"stored {stored:,} events, {hard:,} hard bounces, {suppressed:,} suppressed")
        print(f"counted {delivered:,} deliveries, {sent:,} sent")
    finally:
        if not args.keep:
            psql("test", f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
