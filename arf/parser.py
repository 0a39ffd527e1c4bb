"""RFC 5965 Abuse Reporting Format (and RFC 6591 auth-failure) reports -> ComplaintReport.

An ARF report is ``multipart/report; report-type=feedback-report`` with three parts: a human
readable text, a ``message/feedback-report`` of "Name: value" fields, and the returned message
(``message/rfc822`` or, headers only, ``text/rfc822-headers``). Feedback loops bend this:

- Hotmail sends ``multipart/report`` without ``report-type``; Microsoft JMRP sends
  ``multipart/mixed`` with only the returned message, whose ``X-HmXmrOriginalRecipient``
  names the recipient (when not redacted) and no feedback-report part at all.
- Some reporters type the feedback-report part ``text/plain``, misspell the returned part
  ``text/rfc822-header``, or put the returned headers in a third ``text/plain`` part.
- ``Feedback-Type`` may be missing (RFC 5965 makes it required; we read abuse), spelled
  ``optout``/``unsubscribe``, and ``Arrival-Date`` may be ``Received-Date`` (draft ARF).
- Sending platforms relay reports as a ``message/rfc822`` attachment of their own mail.

``parse_report`` is called first for every inbound message, so a message that is not a
report is turned away on its Content-Type before anything else is looked at.
"""

from __future__ import annotations

import re
from email.errors import CharsetError
from email.header import decode_header, make_header
from email.message import Message
from typing import Any, Final

from arf.mime import cut_at_line, headers_only, parse_message
from arf.model import ArfParseError, ComplaintReport, normalise_feedback_type, outcome_for
from arf.providers import infer_provider
from arf.recipients import addr_specs, recover_recipients, verp_recipient

__all__ = ["parse_bytes", "parse_report"]

JMRP_RECIPIENT_HEADER: Final = "X-HmXmrOriginalRecipient"
# How deep to look for a report relayed inside other mail.
_MAX_DEPTH: Final = 3
_RETURNED_TYPES: Final = frozenset(
    {"message/rfc822", "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers"}
)
_FIELD_LINE: Final = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)[ \t]*:[ \t]*(.*)$")
_FEEDBACK_TYPE_LINE: Final = re.compile(r"(?im)^feedback-type[ \t]*:")
_JMRP_SENDER: Final = re.compile(r"staff@hotmail\.com|@(?:[\w-]+\.)*microsoft\.com", re.I)
_WS: Final = re.compile(r"\s+")
_ENCODED_MAX: Final = 16 * 1024  # longer header values are not RFC 2047-decoded
# Text read from a part (the feedback fields, the returned headers): a real report's parts
# are a few kilobytes, and reading is linear in what is read.
_TEXT_MAX: Final = 64 * 1024

Fields = list[tuple[str, str]]


def parse_bytes(raw: bytes, **kwargs: Any) -> ComplaintReport | None:
    """Parse raw message bytes (LF, CRLF or CR-only line endings) with ``parse_report``."""
    if not isinstance(raw, bytes | bytearray):
        raise ArfParseError(f"expected bytes, got {type(raw).__name__}")
    text = bytes(raw).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # The bounded reader, not email.message_from_bytes: see arf.mime for why.
    return parse_report(parse_message(text), **kwargs)


def parse_report(
    msg: Message,
    *,
    recipient_header: str = "X-Stoplist-Recipient",
    stream_header: str = "X-Stoplist-Stream",
    ref_header: str = "X-Stoplist-Ref",
    verp_pattern: re.Pattern[str] | None = None,
) -> ComplaintReport | None:
    """The complaint a feedback report makes, or None when ``msg`` is not a feedback report.

    Raises ArfParseError only for a message that declares itself a feedback report
    (``report-type=feedback-report``) but has no MIME parts to read.
    """
    found = _find_report(msg, 0)
    if found is None:
        return None
    report, relayed = found
    parts = report.get_payload()
    if not isinstance(parts, list) or not parts:
        raise ArfParseError("feedback report without MIME parts")

    fields = _feedback_fields(parts)
    returned = _returned_message(parts)

    def first(*names: str) -> str | None:
        for name in names:
            for key, value in fields:
                if key == name and value:
                    return value
        return None

    def every(name: str) -> list[str]:
        return [value for key, value in fields if key == name]

    feedback_type = normalise_feedback_type(first("feedback-type"))
    outcome, reason = outcome_for(feedback_type)

    returned_headers = returned if returned is not None else Message()
    ref_token = _header(returned_headers, ref_header)
    original_mail_from = first("original-mail-from")
    return_path = _header(returned_headers, "Return-Path")
    verp = verp_recipient(return_path, verp_pattern) or verp_recipient(
        original_mail_from, verp_pattern
    )
    jmrp_values = _headers(returned_headers, JMRP_RECIPIENT_HEADER)
    recipients = recover_recipients(
        original_rcpt_to=every("original-rcpt-to"),
        removal_recipient=every("removal-recipient"),
        provider_header=jmrp_values,
        recipient_header=_headers(returned_headers, recipient_header),
        ref_token=ref_token,
        verp=verp,
        to_header=_headers(returned_headers, "To"),
    )
    user_agent = first("user-agent")
    provider = infer_provider(
        user_agent=user_agent,
        reporting_mta=first("reporting-mta"),
        from_domain=_from_domain(report) or _from_domain(msg),
        jmrp_header=bool(jmrp_values) or _is_jmrp_sender(report),
        relayed=relayed,
    )
    return ComplaintReport(
        feedback_type=feedback_type,
        outcome=outcome,
        reason=reason,
        user_agent=user_agent,
        version=first("version"),
        original_mail_from=_bare(original_mail_from),
        original_rcpt_to=[v for v in (_bare(v) for v in every("original-rcpt-to")) if v],
        arrival_date=first("arrival-date", "received-date"),
        source_ip=first("source-ip"),
        reported_domain=every("reported-domain"),
        reported_uri=every("reported-uri"),
        authentication_results=first("authentication-results"),
        incidents=_int(first("incidents")),
        recipients=recipients,
        ref_token=ref_token,
        stream=_header(returned_headers, stream_header),
        original_message_id=_header(returned_headers, "Message-ID")
        or first("original-message-id", "message-id"),
        original_subject=_decoded(_header(returned_headers, "Subject")),
        provider=provider,
        auth_failure=first("auth-failure"),
        delivery_result=first("delivery-result"),
    )


# -- finding the report -------------------------------------------------------------------


def _find_report(msg: Message, depth: int) -> tuple[Message, bool] | None:
    """The multipart report inside ``msg`` and whether it was relayed, or None.

    Only a Content-Type lookup for ordinary mail; subparts are looked at only for
    ``multipart/*`` messages, and only their Content-Type and a few headers.
    """
    ctype = msg.get_content_type()
    if not ctype.startswith("multipart/"):
        return None
    if ctype == "multipart/report":
        raw = str(msg.get("Content-Type", "")).lower()
        if "report-type" in raw and "feedback-report" not in raw:
            # A DSN or MDN: skip the parameter parsing, the common case must stay cheap.
            return None
        report_type = _param(msg, "report-type")
        if report_type == "feedback-report":
            return msg, depth > 0
        if report_type is not None:
            # delivery-status, disposition-notification, ...: not ours.
            return None
        # Hotmail's multipart/report without report-type.
        return (msg, depth > 0) if _looks_like_report(msg) else None
    if _looks_like_report(msg):
        return msg, depth > 0
    if depth >= _MAX_DEPTH:
        return None
    parts = msg.get_payload()
    if not isinstance(parts, list):
        return None
    for part in parts:
        if not isinstance(part, Message) or part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found = _find_report(inner[0], depth + 1)
            if found is not None:
                return found[0], True
    return None


def _looks_like_report(msg: Message) -> bool:
    """A multipart without report-type that still carries a feedback report or a JMRP."""
    parts = msg.get_payload()
    if not isinstance(parts, list):
        return False
    has_returned = False
    for part in parts:
        if not isinstance(part, Message):
            continue
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            return True
        if ctype == "message/rfc822":
            has_returned = True
            inner = part.get_payload()
            if (
                isinstance(inner, list)
                and inner
                and isinstance(inner[0], Message)
                and inner[0].get(JMRP_RECIPIENT_HEADER) is not None
            ):
                return True
    return has_returned and _is_jmrp_sender(msg)


def _is_jmrp_sender(msg: Message) -> bool:
    sender = _header(msg, "From")
    return bool(sender and _JMRP_SENDER.search(sender))


# -- the feedback-report fields -----------------------------------------------------------


def _feedback_fields(parts: list[Any]) -> Fields:
    """The fields of the message/feedback-report part (or a text part that holds them)."""
    for part in parts:
        if isinstance(part, Message) and part.get_content_type() == "message/feedback-report":
            return _fields_of(part)
    # Reporters that type the part text/plain (or omit its Content-Type): the first text
    # part after the human-readable one that has a Feedback-Type line.
    for index, part in enumerate(parts):
        if not isinstance(part, Message) or part.get_content_maintype() != "text":
            continue
        if part.get_content_type() in _RETURNED_TYPES:
            continue
        text = _text(part)
        if _FEEDBACK_TYPE_LINE.search(text) and (index > 0 or len(parts) == 1):
            return _parse_fields(text)
    return []


def _fields_of(part: Message) -> Fields:
    payload = part.get_payload()
    if isinstance(payload, list):
        # The parser read the block as a message: its headers, and, past a stray blank line,
        # its body hold the fields.
        fields: Fields = []
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            fields.extend((str(k).lower(), _clean(v)) for k, v in sub.items())
            body = sub.get_payload()
            if isinstance(body, str):
                fields.extend(_parse_fields(cut_at_line(body, _TEXT_MAX)))
        return fields
    return _parse_fields(_text(part))


def _parse_fields(text: str) -> Fields:
    """ "Name: value" lines with RFC 5322 folding; blank and malformed lines are skipped."""
    # Folded lines are joined once per field: appending each to the value so far would copy
    # the value again per line (quadratic in a long folded field).
    pieces: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and pieces:
            pieces[-1][1].append(line.strip())
            continue
        match = _FIELD_LINE.match(line)
        if match:
            pieces.append((match[1].lower(), [match[2].strip()]))
    return [(name, " ".join(p for p in parts if p)) for name, parts in pieces]


# -- the returned message -----------------------------------------------------------------


def _returned_message(parts: list[Any]) -> Message | None:
    """The returned message (or its headers) as a Message, or None."""
    for part in parts:
        if not isinstance(part, Message) or part.get_content_type() not in _RETURNED_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if payload and isinstance(payload[0], Message):
                return payload[0]
            continue
        return _headers_from_text(_text(part))
    # Some reporters inline the returned headers as a third text/plain part.
    if len(parts) >= 3:
        part = parts[2]
        if isinstance(part, Message) and part.get_content_maintype() == "text":
            text = _text(part).lstrip("\n")
            if _FIELD_LINE.match(text.split("\n", 1)[0]):
                return _headers_from_text(text)
    return None


def _headers_from_text(text: str) -> Message:
    # Headers only: a full parse would read whatever MIME structure a hostile "returned
    # headers" part carries below its header block.
    return headers_only(text.lstrip("\n"))


# -- small helpers ------------------------------------------------------------------------


def _text(part: Message) -> str:
    """The decoded text of a leaf part; undecodable bytes become U+FFFD."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        return cut_at_line(text, _TEXT_MAX)
    return ""


def _clean(value: Any) -> str:
    """A header value as one line of str (compat32 may hand back a Header object)."""
    return _WS.sub(" ", str(value)).strip()


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    text = _clean(value)
    return text or None


def _headers(msg: Message, name: str) -> list[str]:
    return [_clean(v) for v in msg.get_all(name) or []]


def _param(msg: Message, name: str) -> str | None:
    value = msg.get_param(name)
    if value is None or isinstance(value, tuple):
        return None
    return str(value).strip().lower()


def _from_domain(msg: Message) -> str | None:
    sender = _header(msg, "From")
    if not sender:
        return None
    for addr in addr_specs(sender):
        if "@" in addr:
            return addr.rpartition("@")[2].lower()
    return None


def _bare(value: str | None) -> str | None:
    """The addr-spec of a field value such as ``<user@example.com>``, as given."""
    if not value:
        return None
    addrs = addr_specs(value)
    return addrs[0] if addrs else value.strip() or None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.match(r"\s*(\d{1,9})\b", value)
    return int(match[1]) if match else None


def _decoded(value: str | None) -> str | None:
    """An RFC 2047 encoded header decoded; left as is when it cannot be."""
    if value is None or len(value) > _ENCODED_MAX:
        # The standard library's decoder is quadratic in the number of encoded words.
        return value
    try:
        return _clean(make_header(decode_header(value)))
    except (CharsetError, LookupError, UnicodeError, ValueError):  # a charset name in bytes
        return value
