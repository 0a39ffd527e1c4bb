"""The durable intake pipeline: store, claim, parse, apply, and keep the raw mail for a while.

A message is committed to ``inbound_messages`` (group commit) before the sink answers 250; whoever
claims a stored row parses it in the parse pool, applies it through ``app.feedback`` in one
transaction per batch, then finishes the row (``processed``, ``ignored`` or ``failed``). A crash
at any point loses nothing and writes nothing twice; the steps in detail are in
docs/architecture.md ("The intake pipeline").

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
