"""Feedback: what bounce, complaint and unsubscribe mail means for the suppression list.

``planner`` decides (pure: analysis + settings + signer -> plan, no I/O); ``applier`` carries
plans out in one transaction (or previews them, with the same decisions); ``unsubscribe`` handles
one-click links.

May import: ``app.container`` (applier, unsubscribe), ``app.suppression``, ``app.db``,
``app.models``, ``app.signing``, ``app.settings`` and the layers below. The planner imports
nothing that does I/O. Never the HTTP layer, the CLI or the intake.
"""

from app.feedback.applier import ApplyResult, BatchItem, apply_analysis, apply_batch
from app.feedback.planner import Envelope, Plan, Step, plan_message, safe_stream
from app.feedback.unsubscribe import (
    TokenRejected,
    UnsubscribeResult,
    preview_unsubscribe_token,
    unsubscribe_with_token,
)

__all__ = [
    "ApplyResult",
    "BatchItem",
    "Envelope",
    "Plan",
    "Step",
    "TokenRejected",
    "UnsubscribeResult",
    "apply_analysis",
    "apply_batch",
    "plan_message",
    "preview_unsubscribe_token",
    "safe_stream",
    "unsubscribe_with_token",
]
