"""The durable intake pipeline: store, claim, parse, apply, and keep the raw mail for a while.

1. **Store** (``GroupCommit`` -> ``IntakeStore.store_many``): the SMTP sink writes raw bytes +
   envelope to ``inbound_messages`` and commits *before* answering 250. Sessions that finish DATA
   while a commit is in flight wait for the next one, which stores all of them with one multi-row
   INSERT in autocommit (one round trip, durable when it returns); each session is answered once
   the commit holding its message returned, or 451 if it failed (a store that outlasts
   ``smtp_storage_timeout_s`` is abandoned and its connection closed, so a hung database cannot
   hold the sink for the driver's command timeout). The ``digest`` (SHA-256 over
   envelope and bytes) is unique, so an MTA that redelivers after an ambiguous reply is stored
   once, also when both copies land in the same commit.
2. **Claim**: a row is processed by whoever claims it. A claim is a conditional UPDATE (``state =
   'pending'`` and no fresh claim), on PostgreSQL over ``FOR UPDATE SKIP LOCKED`` rows when
   sweeping, so several replicas share one table without processing a message twice; a claim older
   than ``intake_claim_timeout_s`` (its processor died) is anyone's. Every claim counts an attempt.
3. **Feed**: the sink hands each stored message to a local queue (fast path, raw bytes already in
   memory); a sweep at start-up and every ``intake_sweep_interval_s`` takes pending rows from the
   table, so a crash between the 250 and processing loses nothing; a redelivery found to be a
   duplicate sweeps at once (its first copy may be a row whose commit reply was lost, never handed
   over). With the processing in a
   child process (``app.intake.child``, PostgreSQL) there is no local queue: the sink wakes the
   child after each commit and the child's sweep takes the rows.
4. **Process in batches** (``intake_concurrency`` batches at once, up to ``process_batch`` messages
   each): **parse** in bounded worker processes (``app.intake.parse_pool``, several messages per worker
   task), **apply** the batch through the policy in one transaction (``app.feedback.apply_batch``;
   if that fails for a reason other than storage, message by message, so one bad message fails
   alone), then **finish** every message with one UPDATE: ``processed``, ``ignored`` (unknown,
   auto-reply or delivery report with nothing to apply) or ``failed`` with the reason. A transient
   problem (database down, parse pool died) leaves the row pending for a retry until
   ``intake_max_attempts``.

On PostgreSQL storing and processing each have an engine of their own on the service's database,
so a processing burst never holds the connections the sink needs to acknowledge mail.

The policy commits its writes, then the rows are finished: a crash between the two means the
messages are applied again after the claim times out (the policy skips a step whose event the
message already wrote, so nothing is written twice).

Modules: ``store`` (all SQL on ``inbound_messages``), ``group_commit``, ``processor`` (with the
appliers onto ``app.feedback``), ``parse_pool``, ``reprocess``, ``facade`` (``Intake``, what the sink
talks to), ``child`` (processing in a process of its own) and ``smtp`` (the sink). May import the
container, the policy, the suppression list and the layers below; ``child`` and ``smtp`` wire
processes and sit above the rest (``tests/test_layout.py``).
"""

from app.intake.facade import Intake, ProcessingChild
from app.intake.group_commit import GroupCommit
from app.intake.processor import (
    Applier,
    IntakeProcessor,
    policy_applier,
    policy_batch_applier,
    state_for,
    summarise,
)
from app.intake.reprocess import ReprocessChange, ReprocessReport, diff_summaries, reprocess
from app.intake.stats import IntakeStats
from app.intake.store import (
    FAILED,
    IGNORED,
    PENDING,
    PROCESSED,
    IncomingMessage,
    IntakeStore,
    StoredMessage,
    StoreResult,
    envelope_digest,
    instance_name,
)

__all__ = [
    "FAILED",
    "IGNORED",
    "PENDING",
    "PROCESSED",
    "Applier",
    "GroupCommit",
    "IncomingMessage",
    "Intake",
    "IntakeProcessor",
    "IntakeStats",
    "IntakeStore",
    "ProcessingChild",
    "ReprocessChange",
    "ReprocessReport",
    "StoreResult",
    "StoredMessage",
    "diff_summaries",
    "envelope_digest",
    "instance_name",
    "policy_applier",
    "policy_batch_applier",
    "reprocess",
    "state_for",
    "summarise",
]
