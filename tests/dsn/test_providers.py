"""Mailbox-provider and Japanese-carrier parsers: each claims its own golden sample (LF, CRLF
and CR-only), reads the recipients and the provider's words, and declines a plain message
and every other provider's sample."""

from __future__ import annotations

import pytest

from dsn import analyse_message
from dsn.mail import normalise_line_endings, read_mail
from dsn.mta import PARSERS
from tests.dsn.parser_checks import ENDINGS, SAMPLES, Expected, assert_reads_format

# sample, parser, expected [(recipient, status, words the diagnostic must contain)]
CASES: list[tuple[str, str, Expected]] = [
    (
        "zoho-01.eml",
        "zoho",
        [
            ("uma@example.org", "5.1.1", "ERROR_CODE :550, ERROR_CODE :5.1.1"),
            ("victor@example.net", None, "Host not reachable"),
        ],
    ),
    ("verizon-01.eml", "verizon", [("2025550143@vtext.com", None, "no such user here")]),
    ("ezweb-01.eml", "ezweb", [("carol.k@ezweb.ne.jp", None, "account is disabled")]),
    ("biglobe-01.eml", "biglobe", [("dave.m@example.ne.jp", None, "exceeded the local limit")]),
    (
        "googlegroups-01.eml",
        "googlegroups",
        [("announce@googlegroups.com", None, "the group you tried to contact")],
    ),
    (
        "aol-01.eml",
        "aol",
        [
            ("wendy1984@aol.com", None, "could not be delivered"),
            ("xavier@aol.com", None, "could not be delivered"),
        ],
    ),
    (
        "yahoo-02.eml",
        "yahoo",
        [
            ("yvonne@example.org", "5.2.2", "Mailbox Full"),
            ("zack@example.net", "5.1.1", "User Unknown"),
        ],
    ),
    ("sina-01.eml", "sina", [("alice.w@example.cn", "5.1.1", "Mailbox not found")]),
    ("kddi-02.eml", "kddi", [("erin.t@example.net", None, "remote domain doesnt exist")]),
]
PROVIDERS = ("zoho", "verizon", "ezweb", "biglobe", "googlegroups", "aol", "yahoo", "sina")


@pytest.mark.parametrize(("name", "mta", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_parser_reads_its_format(name: str, mta: str, expected: Expected, ending: str) -> None:
    raw = (SAMPLES / name).read_bytes().replace(b"\n", ENDINGS[ending])
    assert_reads_format(raw, mta, expected)


def test_every_provider_parser_is_listed_in_one_block_after_amazonses() -> None:
    names = [name for name, _ in PARSERS]
    start = names.index("amazonses") + 1
    assert tuple(names[start : start + len(PROVIDERS)]) == PROVIDERS


PLAIN = b"""From: Alice <alice@example.org>
To: news@example.com
Subject: Re: Our June newsletter
Content-Type: text/plain

Thanks for the newsletter. <bob@example.org> asked me to forward it.
"""


@pytest.mark.parametrize("mta", [*PROVIDERS, "kddi"])
def test_parser_declines_a_plain_message(mta: str) -> None:
    parser = dict(PARSERS)[mta]
    assert parser(read_mail(PLAIN)) is None


@pytest.mark.parametrize(("name", "owner"), [(c[0], c[1]) for c in CASES])
def test_other_provider_parsers_decline_the_sample(name: str, owner: str) -> None:
    mail = read_mail(normalise_line_endings((SAMPLES / name).read_bytes()))
    claimed = [
        mta for mta in (*PROVIDERS, "kddi") if mta != owner and dict(PARSERS)[mta](mail) is not None
    ]
    assert claimed == []


@pytest.mark.parametrize("mta", [*PROVIDERS, "kddi"])
@pytest.mark.parametrize(
    "other", ["gmail-01.eml", "exim-01.eml", "qmail-01.eml", "yahoo-01.eml", "kddi-01.eml"]
)
def test_provider_parsers_decline_family_samples(mta: str, other: str) -> None:
    if mta == "kddi" and other == "kddi-01.eml":
        return
    mail = read_mail(normalise_line_endings((SAMPLES / other).read_bytes()))
    assert dict(PARSERS)[mta](mail) is None


def test_yahoo_words_from_another_qmail_stay_qmails() -> None:
    assert analyse_message((SAMPLES / "yahoo-01.eml").read_bytes()).mta == "qmail"


def test_zoho_needs_its_header() -> None:
    raw = (SAMPLES / "zoho-01.eml").read_bytes().replace(b"X-ZohoMail", b"X-Other")
    raw = raw.replace(b"X-Mailer: Zoho Mail", b"X-Mailer: Other")
    assert analyse_message(raw).mta != "zoho"


def test_ezweb_needs_two_of_its_marks() -> None:
    raw = (SAMPLES / "ezweb-01.eml").read_bytes()
    one_mark = raw.replace(b"Mail System Error - Returned Mail", b"Returned").replace(
        b"ezweb.ne.jp>", b"example.jp>"
    )
    assert analyse_message(one_mark).mta != "ezweb"


def test_aol_list_ends_at_the_first_line_of_prose() -> None:
    analysis = analyse_message((SAMPLES / "aol-01.eml").read_bytes())
    # "If you believe ..." and the header block never become screen names.
    assert {r.recipient for r in analysis.results} == {"wendy1984@aol.com", "xavier@aol.com"}


def test_kddi_claims_a_relayed_notice_only_with_its_template() -> None:
    raw = (SAMPLES / "kddi-02.eml").read_bytes()
    assert analyse_message(raw).mta == "kddi"
    other = raw.replace(b"Your mail attempted to be delivered on:", b"Note:")
    assert analyse_message(other).mta != "kddi"


VZWPIX = b"""From: MMSC NDR Administrator <sysadmin@mms01.vzwpix.com>
To: alerts@example.com
Subject: Undeliverable Message
MIME-Version: 1.0
Content-Type: text/plain; charset=US-ASCII

Message could not be delivered to mobile.
Error: No valid recipients for this MM

Original Message:
From: Alerts <alerts@example.com>
To: 2025550188@vzwpix.com
Subject: Your sign-in code
Date: Tue, 04 Jun 2024 11:59:00 +0000
"""


def test_verizon_mms_gateway_names_the_recipient_in_its_summary() -> None:
    analysis = analyse_message(VZWPIX)
    assert analysis.mta == "verizon"
    (result,) = analysis.results
    assert result.recipient == "2025550188@vzwpix.com"
    assert "No valid recipients for this MM" in result.diagnostic


def test_googlegroups_leaves_gmails_own_notice_to_gmail() -> None:
    raw = (SAMPLES / "gmail-01.eml").read_bytes()
    assert analyse_message(raw).mta == "gmail"
    link = b"Visit https://groups.google.com/support/.\n\n----- Original message -----"
    mail = read_mail(raw.replace(b"----- Original message -----", link))
    assert "groups.google.com" in mail.text
    assert dict(PARSERS)["googlegroups"](mail) is None


def test_zoho_lines_wrapped_by_undeclared_quoted_printable() -> None:
    raw = (SAMPLES / "zoho-01.eml").read_bytes()
    raw = raw.replace(b"Content-Transfer-Encoding: quoted-printable\n", b"")
    uma = analyse_message(raw).results[0]
    assert (uma.recipient, uma.status, uma.reply_code) == ("uma@example.org", "5.1.1", 550)


def test_aol_names_separated_by_blank_lines_and_a_closing_word() -> None:
    raw = (SAMPLES / "aol-01.eml").read_bytes()
    raw = raw.replace(b"     wendy1984\n", b"     wendy1984\n\n")
    raw = raw.replace(b"If you believe", b"Thanks.\n\nIf you believe")
    analysis = analyse_message(raw)
    assert [r.recipient for r in analysis.results] == ["wendy1984@aol.com", "xavier@aol.com"]
