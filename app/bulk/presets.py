"""Providers' export formats (SES, SendGrid, Postmark, Mailgun, ...) and ours: which header names
hold which field, and how a provider's row maps to an outcome, reason and stream. Also the
import's options (``format`` names a preset)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.bulk.csv_io import MAX_NOTE, RowError
from app.bulk.model import BATCH_ROWS
from app.errors import InvalidInput
from app.models import utcnow
from app.streams import STREAM_RE
from app.suppression import (
    REASON_RE,
    scope_for,
)

DEFAULT_OUTCOME = "manual"
DEFAULT_REASON = "import"


_ENHANCED_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class ImportOptions:
    dry_run: bool = False
    atomic: bool = False
    overwrite: bool = False
    stream: str | None = None  # scope for rows without a stream column
    reason: str | None = None  # reason for rows without one
    format: str = "auto"
    soft_days: float = 7.0  # expiry of soft entries that presets derive (SendGrid blocks)
    batch_rows: int = BATCH_ROWS

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in PRESETS:
            raise InvalidInput(f"format {self.format!r}: one of auto, {', '.join(PRESETS)}")
        if self.reason is not None and not REASON_RE.match(self.reason):
            raise InvalidInput(f"reason {self.reason!r}: snake_case, at most 48 characters")
        scope_for(self.stream)
        if not 1 <= self.batch_rows <= 100_000:
            raise InvalidInput("batch_rows: 1 to 100,000")

    @property
    def scope(self) -> str:
        return scope_for(self.stream)


# (outcome, reason, stream or None for the default, expires_at, note)
Mapped = tuple[str, str, str | None, datetime | None, str | None]


Getter = Callable[[str], str]


# Enhanced status codes (RFC 3463) that name the cause; anything else stays "suppressed".
_STATUS_REASON = {
    "5.1.1": "user_unknown",
    "5.1.2": "domain_unknown",
    "5.1.3": "invalid_address",
    "5.1.6": "mailbox_moved",
    "5.1.10": "null_mx",
    "5.2.1": "mailbox_disabled",
}


def _reason_from_status(*texts: str) -> str:
    for value in texts:
        found = _ENHANCED_RE.search(value)
        if found:
            return _STATUS_REASON.get(".".join(found.groups()), "suppressed")
    return "suppressed"


def _note(*parts: str) -> str | None:
    # A provider's text, kept as a note: PostgreSQL cannot store a NUL, so it goes.
    note = " ".join(p.strip() for p in parts if p and p.strip()).replace("\x00", "")
    return note[:MAX_NOTE] or None


def _ses(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    kind = get("reason").strip().upper()
    if kind == "BOUNCE":
        return "hard", "suppressed", None, None, "SES BOUNCE"
    if kind == "COMPLAINT":
        return "complaint", "complaint", None, None, "SES COMPLAINT"
    raise RowError(get("reason"), "bad outcome: SES Reason is BOUNCE or COMPLAINT")


def _sendgrid_bounce(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    status, text_ = get("status").strip(), get("reason_text").strip()
    note = _note(text_ if status in text_ else f"{status} {text_}")
    return "hard", _reason_from_status(status, text_), None, None, note


def _sendgrid_block(get: Getter, o: ImportOptions, created: datetime | None) -> Mapped:
    # A block is about the sender (IP reputation), not the recipient: suppress for a while only.
    since = created or utcnow()
    expires = since + timedelta(days=o.soft_days)
    return "soft", "blocked", None, expires, _note(get("status"), get("reason_text"))


def _sendgrid_spam(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "complaint", "complaint", None, None, _note("SendGrid spam report", get("ip"))


def _unsubscribe(_g: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "unsubscribe", "unsubscribe", None, None, None


def _complaint(_g: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "complaint", "complaint", None, None, None


def _postmark(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    kind, origin = get("suppression_reason").strip(), get("origin").strip()
    note = _note("Postmark", kind, f"({origin})" if origin else "")
    match kind.lower():
        case "hardbounce":
            return "hard", "suppressed", None, None, note
        case "spamcomplaint":
            return "complaint", "complaint", None, None, note
        case "manualsuppression" if origin.lower() == "recipient":
            return "unsubscribe", "unsubscribe", None, None, note  # the recipient opted out
        case "manualsuppression":
            return "manual", "manual", None, None, note
    raise RowError(
        kind, "bad outcome: Postmark reason is HardBounce, SpamComplaint or ManualSuppression"
    )


def _mailgun_bounce(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    code, error = get("code").strip(), get("error").strip()
    note = _note(error if error.startswith(code) else f"{code} {error}")
    return "hard", _reason_from_status(error), None, None, note


def _mailgun_unsubscribe(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    # Mailgun unsubscribes are per tag; "*" (or none) is every mail. A tag is our stream.
    raw = get("tags").strip()
    tags = [t.strip(" \"'") for t in raw.strip("[]").split(",") if t.strip(" \"'")]
    if not tags or tags == ["*"]:
        return "unsubscribe", "unsubscribe", None, None, None
    if len(tags) > 1:
        raise RowError(raw, "bad stream: several tags in one row; give each tag its own row")
    if not STREAM_RE.match(tags[0]):
        raise RowError(raw, "bad stream: the tag is not a valid stream name")
    return "unsubscribe", "unsubscribe", tags[0], None, None


@dataclass(frozen=True, slots=True)
class Preset:
    """A provider's export: which header names hold which field, and how rows map to ours."""

    name: str
    title: str
    columns: dict[str, tuple[str, ...]]  # field -> header keys (see header_key); first is canonical
    # For "auto": header keys that identify the format (all of one alternative needed)
    detect: tuple[tuple[str, ...], ...] = ()
    interpret: Callable[[Getter, ImportOptions, datetime | None], Mapped] | None = None


NATIVE = Preset(
    "stoplist",
    "Stoplist (what `export` writes)",
    {
        "address": (
            "address",
            "email",
            "email_address",
            "emailaddress",
            "e_mail",
            "mail",
            "recipient",
            "recipient_address",
            "recipient_email",
            "to",
        ),
        "outcome": ("outcome", "type", "suppression_type", "kind", "category"),
        "reason": ("reason", "reason_code", "cause"),
        "stream": ("stream", "scope", "message_stream", "channel", "list"),
        "expires_at": ("expires_at", "expires", "expiry", "expiration", "expires_on", "until"),
        "created_at": (
            "created_at",
            "created",
            "first_seen",
            "date",
            "timestamp",
            "added",
            "added_at",
            "date_added",
        ),
        "note": ("note", "notes", "comment", "comments", "description"),
    },
)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        NATIVE,
        Preset(
            "ses",
            "Amazon SES account suppression list (list-suppressed-destinations)",
            {
                "address": ("emailaddress", "email_address"),
                "reason": ("reason",),
                "created_at": ("lastupdatetime", "last_update_time"),
            },
            detect=(("emailaddress", "reason", "lastupdatetime"),),
            interpret=_ses,
        ),
        Preset(
            "sendgrid-bounces",
            "SendGrid bounces",
            {
                "address": ("email",),
                "created_at": ("created",),
                "reason_text": ("reason",),
                "status": ("status",),
            },
            detect=(("email", "created", "status"),),
            interpret=_sendgrid_bounce,
        ),
        Preset(
            "sendgrid-blocks",
            "SendGrid blocks",
            {
                "address": ("email",),
                "created_at": ("created",),
                "reason_text": ("reason",),
                "status": ("status",),
            },
            interpret=_sendgrid_block,
        ),
        Preset(
            "sendgrid-spam-reports",
            "SendGrid spam reports",
            {"address": ("email",), "created_at": ("created",), "ip": ("ip",)},
            detect=(("email", "created", "ip"),),
            interpret=_sendgrid_spam,
        ),
        Preset(
            "sendgrid-unsubscribes",
            "SendGrid global unsubscribes",
            {"address": ("email",), "created_at": ("created",)},
            interpret=_unsubscribe,
        ),
        Preset(
            "postmark",
            "Postmark suppressions export",
            {
                "address": ("email_address", "emailaddress", "email"),
                "suppression_reason": ("suppression_reason", "suppressionreason"),
                "origin": ("origin",),
                "created_at": ("created_at", "createdat"),
            },
            detect=(("suppression_reason",), ("suppressionreason",)),
            interpret=_postmark,
        ),
        Preset(
            "mailgun-bounces",
            "Mailgun bounces",
            {
                "address": ("address",),
                "code": ("code",),
                "error": ("error",),
                "created_at": ("created_at",),
            },
            detect=(("address", "code", "error"),),
            interpret=_mailgun_bounce,
        ),
        Preset(
            "mailgun-complaints",
            "Mailgun complaints",
            {"address": ("address",), "created_at": ("created_at",)},
            interpret=_complaint,
        ),
        Preset(
            "mailgun-unsubscribes",
            "Mailgun unsubscribes",
            {"address": ("address",), "tags": ("tags", "tag"), "created_at": ("created_at",)},
            detect=(("address", "tags"),),
            interpret=_mailgun_unsubscribe,
        ),
    )
}


def detect_preset(keys: Sequence[str]) -> Preset:
    present = set(keys)
    for preset in PRESETS.values():
        if any(present.issuperset(keys) for keys in preset.detect):
            return preset
    return NATIVE
