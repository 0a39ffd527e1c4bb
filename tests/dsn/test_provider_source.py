"""Provider rules hold only for the provider's own replies (dsn.analysis._reply_source)."""

from __future__ import annotations

import pytest

from dsn import analyse_message
from dsn.analysis import _PROVIDER_PARSERS, _reply_source
from dsn.mta.base import Found


def _report(recipient: str, diagnostic: str, remote_mta: str | None = None) -> bytes:
    remote = f"Remote-MTA: dns; {remote_mta}\n" if remote_mta else ""
    return (
        "From: postmaster@outlook.com\n"
        "To: news@example.com\n"
        "Subject: Undeliverable: Our June newsletter\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        "\n"
        "--B\n"
        "Content-Type: text/plain\n"
        "\n"
        "Delivery has failed to these recipients or groups.\n"
        "\n"
        "--B\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; AM0PR01MB0001.eurprd01.prod.outlook.com\n"
        "\n"
        f"Final-Recipient: rfc822; {recipient}\n"
        "Action: failed\n"
        "Status: 5.0.0\n"
        f"{remote}"
        f"Diagnostic-Code: smtp; {diagnostic}\n"
        "\n"
        "--B--\n"
    ).encode()


STOCK = "550 Requested action not taken: mailbox unavailable"


def test_outlook_own_refusal_uses_its_rule() -> None:
    (result,) = analyse_message(_report("someone@hotmail.com", STOCK)).results
    assert (result.outcome, result.rule_id) == ("hard", "microsoft-mailbox-unavailable")


def test_outlook_reporting_on_a_custom_domain_without_quoting_names_microsoft() -> None:
    (result,) = analyse_message(_report("someone@example.org", STOCK)).results
    assert result.rule_id == "microsoft-mailbox-unavailable"


@pytest.mark.parametrize(
    ("diagnostic", "remote_mta"),
    [
        (STOCK, "mx.example.org"),
        (f"Remote Server returned '{STOCK}'", None),
        (f"host mx.example.org[192.0.2.7] said: {STOCK} (in reply to RCPT TO command)", None),
    ],
)
def test_outlook_reporting_someone_elses_reply_is_not_microsofts(
    diagnostic: str, remote_mta: str | None
) -> None:
    (result,) = analyse_message(_report("someone@example.org", diagnostic, remote_mta)).results
    assert result.rule_id == "rfc5321-550-stock-text"
    assert result.outcome == "soft"


@pytest.mark.parametrize("parser", sorted(_PROVIDER_PARSERS))
def test_provider_parsers_name_their_provider_for_their_own_replies(parser: str) -> None:
    own = Found(recipient="user@example.org", diagnostic="550 no such user here")
    assert _reply_source(own, parser, own.diagnostic) == (None, _PROVIDER_PARSERS[parser])
    for words in (
        "The response from the remote server was: 550 no such user here",
        "The error that the other server returned was: 550 no such user here",
        "host mx.example.org[192.0.2.7] said: 550 no such user here",
        "<<< 550 no such user here",
    ):
        quoted = Found(recipient="user@example.org", diagnostic=words)
        assert _reply_source(quoted, parser, quoted.diagnostic) == (None, None)


def test_format_parsers_name_no_provider() -> None:
    found = Found(recipient="user@example.org", reporting_mta="dns; mx.example.net")
    assert _reply_source(found, "rfc3464", "") == ("dns; mx.example.net", None)
    found.remote_mta = "dns; mx.example.org"
    assert _reply_source(found, "gmail", "") == ("dns; mx.example.org", None)


def test_explain_names_the_provider_the_parser_gave() -> None:
    from pathlib import Path

    from dsn.explain import explain_message

    sample = Path(__file__).resolve().parents[2] / "samples" / "bounce" / "ezweb-02.eml"
    got = explain_message(sample.read_bytes()).to_json()
    (rcpt,) = got["recipients"]  # type: ignore[misc]
    # "rejected by a remote mail server": the reply was someone else's, no provider named
    assert rcpt["signals"]["provider"] is None


def test_explain_names_a_provider_parsers_own_reply() -> None:
    from pathlib import Path

    from dsn.explain import explain_message

    sample = Path(__file__).resolve().parents[2] / "samples" / "bounce" / "kddi-01.eml"
    got = explain_message(sample.read_bytes()).to_json()
    assert got["mta"] == "kddi"
    assert [r["signals"]["provider"] for r in got["recipients"]] == ["kddi"]  # type: ignore[index]
