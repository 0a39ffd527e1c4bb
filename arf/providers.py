"""Which feedback loop sent a report, from its User-Agent, its From domain and Reporting-MTA.

Signals, by provider (any of User-Agent, Reporting-MTA, report From domain):
- yahoo: "Yahoo!-Mail-Feedback/2.0" (Complaint Feedback Loop), or a yahoo domain.
- microsoft: JMRP reports come from staff@hotmail.com and add X-HmXmrOriginalRecipient
  to the returned message.
- aol: "AOL SComp", or an aol domain.
- comcast: a comcast domain (its feedback loop is hosted by Validity).
- mailru: a mail.ru domain (fbl@corp.mail.ru).
- fastmail: a fastmail or messagingengine domain.
- validity: "ReturnPathFBL" reports for a mailbox provider that names no one else.
- esp-relayed: a report forwarded by a sending platform (Amazon SES, SendGrid, ...) whose
  original reporter cannot be told.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["infer_provider"]

# (provider, pattern searched in the lower-cased User-Agent, Reporting-MTA and From domain)
_PROVIDERS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("yahoo", re.compile(r"yahoo")),
    ("microsoft", re.compile(r"hotmail|outlook\.com|microsoft|\bmsn\.com|\blive\.com")),
    ("aol", re.compile(r"\baol\b|scomp")),
    ("comcast", re.compile(r"comcast")),
    ("mailru", re.compile(r"mail\.ru|mailru")),
    ("fastmail", re.compile(r"fastmail|messagingengine")),
    ("yandex", re.compile(r"yandex")),
    ("gmx", re.compile(r"\bgmx\.|\bweb\.de\b|1und1|united-internet")),
    ("zoho", re.compile(r"zoho")),
)
_VALIDITY: Final = re.compile(r"returnpath|senderscore|validity")
_ESP: Final = re.compile(
    r"amazonses|amazonaws|sendgrid|mailgun|sparkpost|postmarkapp|mandrill|mailchimp|mailjet"
    r"|sendinblue|brevo|socketlabs|mailersend|elasticemail"
)


def infer_provider(
    *,
    user_agent: str | None,
    reporting_mta: str | None,
    from_domain: str | None,
    jmrp_header: bool,
    relayed: bool,
) -> str | None:
    """The provider name, or None when nothing identifies one."""
    if jmrp_header:
        return "microsoft"
    signals = " ".join(s for s in (user_agent, reporting_mta, from_domain) if s).lower()
    for provider, pattern in _PROVIDERS:
        if pattern.search(signals):
            return provider
    if _VALIDITY.search(signals):
        return "validity"
    if relayed or (from_domain and _ESP.search(from_domain.lower())):
        return "esp-relayed"
    return None
