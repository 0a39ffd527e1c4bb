"""Apache James (``RemoteDelivery``'s bounce, the ``DSNBounce`` and ``Bounce`` mailets).

``RemoteDelivery`` and ``DSNBounce`` open with James' own paragraph: "Hi. This is the James
mail server at <host>." ... "I include the list of recipients and the reason why I was
unable to deliver your message.", then the failed recipients one per line and the reason
("Remote mail server told me: 550 ...", "Unknown host: ...", or the exception's message);
``DSNBounce`` puts them under "Failed recipient(s):" and "Error message:" (and may add
"Original email subject: ...").  That paragraph reuses qmail-send's "I'm afraid I wasn't
able to deliver your message", so James is tried before ``qmail``.

The ``Bounce``/``NotifySender`` mailets (``AbstractNotify``) write "Error message below:",
the reason, then "Message details:" with ``  RCPT TO: <addr>`` lines; claimed only with a
James mark beside it (a ``JavaMail`` Message-ID, a ``JAMES SMTP Server`` Received line or
the subject "[BOUNCE]").
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, section, sharing_diagnostic

__all__ = ["parse"]

_INTRO: Final = re.compile(r"^Hi\. This is the James mail server at ", re.M)
_INTRO_END: Final = re.compile(r"^your message\.[ \t]*$", re.M)
_ALONE: Final = re.compile(rf"^[ \t]*<?{ADDRESS.pattern}>?[ \t]*$")
_HEADINGS: Final = re.compile(r"^(?:Failed recipient\(s\):|Error message:|Original email subject:)")
_NOTIFY: Final = re.compile(r"^Error message below:[ \t]*$", re.M)
_DETAILS: Final = re.compile(r"^Message details:[ \t]*$", re.M)
_RCPT: Final = re.compile(rf"^[ \t]+RCPT TO:[ \t]*<?{ADDRESS.pattern}>?[ \t]*$", re.M)


def parse(mail: Mail) -> list[Found] | None:
    if _INTRO.search(mail.text):
        return _remote_delivery(mail)
    if _NOTIFY.search(mail.text) and _DETAILS.search(mail.text) and _is_james(mail):
        return _notify(mail)
    return None


def _is_james(mail: Mail) -> bool:
    received = " ".join(str(v) for v in mail.message.get_all("Received", []))
    return (
        ".JavaMail." in mail.header("Message-ID")
        or "JAMES SMTP Server" in received
        or mail.subject.strip() == "[BOUNCE]"
    )


def _remote_delivery(mail: Mail) -> list[Found] | None:
    text = section(mail.text, _INTRO_END, None) if _INTRO_END.search(mail.text) else mail.text
    recipients: list[str] = []
    reasons: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or _HEADINGS.match(stripped):
            continue
        alone = _ALONE.match(line)
        addr = normalise_address(alone.group(1)) if alone else None
        if addr is not None:
            if addr not in recipients and len(recipients) < MAX_RECIPIENTS:
                recipients.append(addr)
        elif recipients and len(reasons) < 12:
            reasons.append(stripped)
    return _found(mail, recipients, " ".join(reasons))


def _notify(mail: Mail) -> list[Found] | None:
    reason = " ".join(section(mail.text, _NOTIFY, _DETAILS).split())
    details = section(mail.text, _DETAILS, None)
    recipients: list[str] = []
    for match in _RCPT.finditer(details):
        addr = normalise_address(match.group(1))
        if addr is not None and addr not in recipients and len(recipients) < MAX_RECIPIENTS:
            recipients.append(addr)
    return _found(mail, recipients, reason)


def _found(mail: Mail, recipients: list[str], reason: str) -> list[Found] | None:
    return sharing_diagnostic(recipients, reason, delay_action(mail, reason)) or None
