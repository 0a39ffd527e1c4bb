"""Which mailbox provider answered: from the remote MTA host, the recipient domain, or the text.

The remote MTA (the MX that replied) is the best evidence: a Google Workspace domain has its own
name but Google's MX. The recipient domain covers consumer domains. The reply text is a last hint
("... - gsmtp" is Gmail's signature, "[TSS04]" Yahoo's) for when neither was given.
"""

from __future__ import annotations

import re
from functools import lru_cache

# host-name suffix -> provider; checked label by label from the right, so "x.google.com" matches
# "google.com" but "notgoogle.com" does not.
MTA_SUFFIXES: dict[str, str] = {
    "google.com": "gmail",
    "googlemail.com": "gmail",
    "outlook.com": "microsoft",
    "protection.outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "messaging.microsoft.com": "microsoft",
    "yahoodns.net": "yahoo",
    "yahoo.com": "yahoo",
    "yahoo.net": "yahoo",
    "aol.com": "yahoo",
    "icloud.com": "apple",
    "me.com": "apple",
    "apple.com": "apple",
    "comcast.net": "comcast",
    "gmx.net": "gmx",
    "gmx.com": "gmx",
    "web.de": "gmx",
    "mail.ru": "mailru",
    "yandex.ru": "yandex",
    "yandex.net": "yandex",
    "orange.fr": "orange",
    "wanadoo.fr": "orange",
    "free.fr": "free",
    "pphosted.com": "proofpoint",
    "ppe-hosted.com": "proofpoint",
    "mimecast.com": "mimecast",
    "mimecast-offshore.com": "mimecast",
    "barracudanetworks.com": "barracuda",
    "iphmx.com": "cisco",
    "messagelabs.com": "messagelabs",
    "ionos.com": "ionos",
    "ionos.de": "ionos",
    "kundenserver.de": "ionos",
    "perfora.net": "ionos",
    "1and1.com": "ionos",
    "secureserver.net": "godaddy",
    "cox.net": "cox",
    "charter.net": "spectrum",
    "qq.com": "qq",
    "163.com": "netease",
    "126.com": "netease",
    "t-online.de": "tonline",
    "zoho.com": "zoho",
    "zohomail.com": "zoho",
}

# exact recipient domains; families with many country domains are matched by their first label
DOMAINS: dict[str, str] = {
    "gmail.com": "gmail",
    "googlemail.com": "gmail",
    "msn.com": "microsoft",
    "passport.com": "microsoft",
    "ymail.com": "yahoo",
    "rocketmail.com": "yahoo",
    "aol.com": "yahoo",
    "aim.com": "yahoo",
    "icloud.com": "apple",
    "me.com": "apple",
    "mac.com": "apple",
    "comcast.net": "comcast",
    "web.de": "gmx",
    "mail.ru": "mailru",
    "bk.ru": "mailru",
    "inbox.ru": "mailru",
    "list.ru": "mailru",
    "ya.ru": "yandex",
    "orange.fr": "orange",
    "wanadoo.fr": "orange",
    "free.fr": "free",
    "cox.net": "cox",
    "charter.net": "spectrum",
    "qq.com": "qq",
    "163.com": "netease",
    "126.com": "netease",
    "yeah.net": "netease",
    "t-online.de": "tonline",
}
DOMAIN_FAMILIES: dict[str, str] = {
    "outlook": "microsoft",
    "hotmail": "microsoft",
    "live": "microsoft",
    "windowslive": "microsoft",
    "yahoo": "yahoo",
    "gmx": "gmx",
    "yandex": "yandex",
}

# "hotmail.co.uk", "yahoo.fr", "gmx.de" -- but not "live.example.com"
_FAMILY_DOMAIN = re.compile(
    r"^(" + "|".join(DOMAIN_FAMILIES) + r")\.(?:[a-z]{2,3}|(?:co|com|net|org)\.[a-z]{2})$"
)
# Yahoo! JAPAN is a different company with its own mail system.
NOT_FAMILY: frozenset[str] = frozenset({"yahoo.co.jp", "yahoo.ne.jp"})

# Signatures providers put in their own replies. Only the replying server's own markers: a Gmail
# *sender* report ("Google tried to deliver your message ...") is about someone else's server.
TEXT_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gmail", re.compile(r"\bgsmtp\b|support\.google\.com/mail/\?p=", re.IGNORECASE)),
    (
        "microsoft",
        re.compile(
            r"\.outlook\.com\b|postmaster\.live\.com|sender\.office\.com|mail\.live\.com"
            r"|\(-?\d+:\d+:-?\d+\)|\bAS\(\d+\)|\(S\d{4,5}\)",
            re.IGNORECASE,
        ),
    ),
    (
        "yahoo",
        re.compile(
            r"yahooinc\.com|verizonmedia\.com|\[(?:TSS?|BL|GL|TS)\d\d\]|doesn't have a yahoo",
            re.IGNORECASE,
        ),
    ),
    ("apple", re.compile(r"support\.apple\.com|\[CS\d\d\]|\bicloud\.com>", re.IGNORECASE)),
)


def _clean_host(value: str) -> str:
    host = value.strip().lower()
    if ";" in host:  # Remote-MTA: dns; mx.example.com
        host = host.split(";", 1)[1].strip()
    host = host.split()[0] if host.split() else ""
    return host.strip("[]<>()").rstrip(".")


# No suffix in the table has more labels than this: longer suffixes of a host need no lookup
# (joining every suffix of a hostile 10,000-label "host" would be quadratic).
_MAX_SUFFIX_LABELS = max(suffix.count(".") + 1 for suffix in MTA_SUFFIXES)


def _by_suffix(host: str) -> str | None:
    labels = host.split(".")
    for start in range(max(0, len(labels) - _MAX_SUFFIX_LABELS), len(labels) - 1):
        provider = MTA_SUFFIXES.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None


def detect_provider(*, remote_mta: str | None, recipient_domain: str | None) -> str | None:
    """Name the provider from the replying host, else from the recipient's domain."""
    return _detect(remote_mta, recipient_domain)


# A log names a few hundred hosts and domains over and over: each pair is looked up once.
@lru_cache(maxsize=8192)
def _detect(remote_mta: str | None, recipient_domain: str | None) -> str | None:
    if remote_mta:
        provider = _by_suffix(_clean_host(remote_mta))
        if provider is not None:
            return provider
    if recipient_domain:
        domain = recipient_domain.strip().lower().rsplit("@", 1)[-1].rstrip(".")
        provider = DOMAINS.get(domain)
        if provider is not None:
            return provider
        found = _FAMILY_DOMAIN.match(domain)
        if found is not None and domain not in NOT_FAMILY:
            return DOMAIN_FAMILIES[found.group(1)]
    return None


@lru_cache(maxsize=4096)
def provider_from_text(text: str) -> str | None:
    """A provider named by its own signature in the reply, if any. Cached: the four searches
    cost ~14 µs a reply, and a log or a day's bounces repeat their replies."""
    for provider, pattern in TEXT_HINTS:
        if pattern.search(text):
            return provider
    return None
