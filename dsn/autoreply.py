"""Auto-replies (RFC 3834) and the other automatic answers that are not bounces.

RFC 3834 §5 asks responders to send ``Auto-Submitted: auto-replied``; many do not, so the
usual vendor headers (X-Autoreply, X-Autorespond, Precedence: auto_reply) and subjects
("Out of Office", "Automatic reply", "Auto reply", vacation notices) count too, as do
challenge-response systems.  Exim also marks its *bounces* auto-replied, so the caller asks
this only of messages that do not look like bounces.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail

__all__ = ["is_auto_reply", "looks_like_bounce"]

_AUTO_HEADERS: Final = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Vacation")
_CHALLENGE_HEADERS: Final = ("X-Boxtrapper", "X-Spamarrest", "X-Challenge", "X-Bluebottle-Request")
_AUTO_SUBJECT: Final = re.compile(
    r"^(?:re:\s*)?(?:out of (?:the )?office|auto(?:matic)?[ _-]?(?:reply|response|antwort|answer)"
    r"|autoreply|autoresponse|away from|away until|on vacation|vacation|on leave|absence"
    r"|abwesenheit|abwesend|autosvar|r[ée]ponse automatique|respuesta autom[áa]tica"
    r"|risposta automatica|automaattinen vastaus|fuera de la oficina|office closed"
    r"|please confirm your (?:message|e-?mail)|verify your (?:e-?mail|message))",
    re.I,
)
_BOUNCE_SENDER: Final = re.compile(
    r"mailer-daemon|postmaster|mail ?delivery|mail ?administrator|mailadmin|mdaemon"
    r"|mail system|mail-router|bounce|mailmaster|notification|returned",
    re.I,
)
_BOUNCE_SUBJECT: Final = re.compile(
    r"undeliver|undelivered|not delivered|non[- ]?deliver|delivery (?:status|fail|problem|report"
    r"|has failed|notification|error|warning)|mail delivery|failure notice|returned mail"
    r"|returned to sender|could not be delivered|delivery failure|mail system error"
    r"|rejected|failed delivery|warning: could not send|unzustellbar|nicht zustellbar"
    r"|non remis|no entregado|permanent error|message not delivered|mail failure|bounce",
    re.I,
)


def looks_like_bounce(mail: Mail) -> bool:
    """From a mailer daemon or postmaster, or a subject saying delivery failed."""
    return bool(_BOUNCE_SENDER.search(mail.sender) or _BOUNCE_SUBJECT.search(mail.subject))


def is_auto_reply(mail: Mail) -> bool:
    msg = mail.message
    submitted = str(msg.get("Auto-Submitted", "")).strip().lower()
    if submitted.startswith("auto-replied"):
        return True
    for name in _AUTO_HEADERS + _CHALLENGE_HEADERS:
        if msg.get(name) is not None:
            return True
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return True
    if str(msg.get("X-Auto-Response-Suppress", "")) and "auto" in mail.subject.lower():
        return True
    return bool(_AUTO_SUBJECT.search(mail.subject))
