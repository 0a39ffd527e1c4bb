"""PowerMTA accounting parse+classify speed, against a plain CSV read of the same lines (the floor).

usage: python bench/events_parse.py [--lines N] [--bounce-share F] [--rounds R]

Builds N synthetic accounting lines in memory (90 % ``d``, 10 % ``b`` by default, the mix of the
issue's ingest goal; the bounces cycle through a few dozen distinct replies, as a real day's
file repeats the same replies), then times in the same process:

- floor: ``csv.reader`` over the lines, every row touched (what reading the file costs at least);
- ours: ``events.parse_pmta`` (header lookup, addresses, times, classification, dedupe ids).

Prints events/s for each and our share of the floor's rate; then the rate of
``events.parse_sendgrid`` on a 1,000-event webhook request (parse + classify, no signature check). Pure in-memory: no disk, no database
(the end-to-end ingest into PostgreSQL is measured with the service, not here).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time

from events import Event, parse_pmta, parse_sendgrid

HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
    "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvSize,vmta,jobId,envId"
)
REPLIES = [
    ("5.1.1", "smtp;550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown", "bad-mailbox"),
    (
        "5.1.1",
        "smtp;550 5.1.1 The email account that you tried to reach does not exist - gsmtp",
        "bad-mailbox",
    ),
    ("5.2.2", "smtp;552 5.2.2 Mailbox full", "quota-issues"),
    (
        "5.7.1",
        "smtp;554 5.7.1 Service unavailable; Client host [198.51.100.{n}] blocked",
        "spam-related",
    ),
    ("5.0.0", "smtp;550 Requested action not taken: mailbox unavailable ({n})", "bad-mailbox"),
    ("5.4.7", "smtp;421 4.4.2 Connection timed out", "message-expired"),
    (
        "5.7.26",
        "smtp;550 5.7.26 Unauthenticated email from example.com is not accepted",
        "policy-related",
    ),
]
DOMAINS = ["example.com", "example.net", "example.org", "gmail.example", "mail.example"]


def make_lines(count: int, bounce_share: float, seed: int = 12) -> list[str]:
    rng = random.Random(seed)
    lines = [HEADER + "\n"]
    base = 1767607200
    for i in range(count):
        rcpt = f"user{i}@{DOMAINS[i % len(DOMAINS)]}"
        stamp = base + i // 1000
        if rng.random() < bounce_share:
            status, diag, category = REPLIES[rng.randrange(len(REPLIES))]
            n = rng.randrange(30)
            diag = diag.format(rcpt=f"user{n}@example.com", n=n)
            lines.append(
                f'b,{stamp},{base},bounces@mail.example.com,{rcpt},,failed,{status} (x),"{diag}",'
                f"mx.{DOMAINS[i % 5]} (192.0.2.{i % 200}),{category},smtp,app1,smtp,"
                f"198.51.100.{i % 8},192.0.2.{i % 200},4521,vmta{i % 8},job{i % 50},env{i}\n"
            )
        else:
            lines.append(
                f"d,{stamp},{base},bounces@mail.example.com,{rcpt},,relayed,2.0.0 (success),"
                f"smtp;250 2.0.0 OK {i},mx.{DOMAINS[i % 5]} (192.0.2.{i % 200}),,smtp,app1,smtp,"
                f"198.51.100.{i % 8},192.0.2.{i % 200},4521,vmta{i % 8},job{i % 50},env{i}\n"
            )
    return lines


def floor(lines: list[str]) -> int:
    rows = 0
    for row in csv.reader(lines):
        if row:
            rows += 1
    return rows - 1


def ours(lines: list[str]) -> int:
    events = 0
    for item in parse_pmta(lines, "bench"):
        if isinstance(item, Event):
            events += 1
    return events


def sendgrid_batch(size: int = 1000, seed: int = 12) -> bytes:
    """One Event Webhook request: 90 % delivered, 10 % bounces, as SendGrid batches them."""
    rng = random.Random(seed)
    items = []
    for i in range(size):
        item: dict[str, object] = {
            "email": f"user{i}@{DOMAINS[i % len(DOMAINS)]}",
            "timestamp": 1767607200 + i,
            "sg_event_id": f"ev{i}",
            "sg_message_id": f"msg{i}.filter0001",
            "smtp-id": f"<m{i}@mail.example.com>",
        }
        if rng.random() < 0.10:
            item.update(event="bounce", type="bounce", status="5.1.1", reason=REPLIES[i % 2][1][5:])
        else:
            item.update(event="delivered", response="250 2.0.0 OK", ip="198.51.100.1")
        items.append(item)
    return json.dumps(items).encode()


def sendgrid_rate(rounds: int) -> float:
    body = sendgrid_batch()
    best = float("inf")
    for _ in range(rounds * 20):
        start = time.perf_counter()
        assert len(parse_sendgrid(body, "bench").events) == 1000
        best = min(best, time.perf_counter() - start)
    return 1000 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--bounce-share", type=float, default=0.10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = make_lines(args.lines, args.bounce_share)
    ours(lines[:1000])  # load and compile the rules outside the timing
    best_floor = best_ours = float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        assert floor(lines) == args.lines
        best_floor = min(best_floor, time.perf_counter() - start)
        start = time.perf_counter()
        assert ours(lines) == args.lines
        best_ours = min(best_ours, time.perf_counter() - start)
    floor_rate = args.lines / best_floor
    our_rate = args.lines / best_ours
    print(f"lines           {args.lines:,} ({args.bounce_share:.0%} b, the rest d)")
    print(f"floor csv.reader {floor_rate:12,.0f} lines/s")
    print(f"events.parse_pmta{our_rate:12,.0f} events/s")
    print(f"ratio            {our_rate / floor_rate:12.1%} of the floor (best of {args.rounds})")
    print(f"sendgrid batch  {sendgrid_rate(args.rounds):12,.0f} events/s (1,000-event requests)")


if __name__ == "__main__":
    main()
