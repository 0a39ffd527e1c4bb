"""Charset decoding in ``dsn.mail``: unknown, bogus and mislabelled charsets and the Asian
charsets' vendor supersets are read without raising, and the ASCII words of a bounce (the
recipient, the reply) always survive."""

from __future__ import annotations

import base64
import json

import pytest

from dsn import analyse_message
from dsn.mail import decode_text, read_mail

REPORT = (
    "Delivery to the following recipient failed permanently:\n\n"
    "  kim@example.org\n\n550 5.1.1 User unknown\n"
)
JAPANESE = "宛先のユーザは存在しません。①\n"  # ① is an NEC/Windows and JIS X 0213 symbol
CHINESE = "收件人不存在。堃 喆\n"  # outside GB2312 / plain Big5


def _message(params: bytes, body: bytes, *, cte: bytes = b"8bit", subject: bytes = b"x") -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.net\nTo: news@example.com\nSubject: "
        + subject
        + b"\nMIME-Version: 1.0\nContent-Type: text/plain"
        + params
        + b"\nContent-Transfer-Encoding: "
        + cte
        + b"\n\n"
        + body
    )


@pytest.mark.parametrize(
    ("label", "codec", "words"),
    [
        ("iso-2022-jp", "iso2022_jp_2004", JAPANESE),
        ("shift_jis", "cp932", JAPANESE),
        ("euc-jp", "euc_jis_2004", JAPANESE),
        ("gb2312", "gb18030", CHINESE),
        ("big5", "big5hkscs", CHINESE),
        ("ks_c_5601-1987", "cp949", "수신자 없음\n"),
    ],
)
def test_asian_labels_are_read_as_the_superset_mailers_send(
    label: str, codec: str, words: str
) -> None:
    raw = _message(f'; charset="{label}"'.encode(), (words + REPORT).encode(codec))
    mail = read_mail(raw)
    assert mail.text.startswith(words)
    assert [r.recipient for r in analyse_message(raw).results] == ["kim@example.org"]


@pytest.mark.parametrize(
    ("params", "body", "expected"),
    [
        (b'; charset="unknown-8bit"', "für\n".encode(), "für"),  # UTF-8 behind no label
        (b"; charset=x-unknown", "für\n".encode("latin-1"), "für"),  # Latin-1 behind none
        (b"; charset=us-ascii", "für\n".encode(), "für"),  # UTF-8 labelled ASCII
        (b"; charset=iso-8859-1", "für\n".encode(), "für"),  # UTF-8 labelled Latin-1
        (b"; charset=iso-8859-1", "für\n".encode("latin-1"), "für"),
        (b"; charset=us-ascii", JAPANESE.encode("iso2022_jp_2004"), JAPANESE.strip()),
        (b"", JAPANESE.encode("iso2022_jp_2004"), JAPANESE.strip()),
        (b"; charset=idna", "für\n".encode(), "für"),  # raises on errors="replace"
        (b"; charset=punycode", "für\n".encode(), "für"),
        (b"; charset=rot13", b"plain\n", "plain"),  # not a text encoding
        (b"; charset=utf-16", b"plain\n", "plain"),  # no NUL byte: not UTF-16
        (b'; charset="\xff\xfe\x00bad"', b"plain\n", "plain"),
        (b"; charset*=utf-8''%ff%fe", b"plain\n", "plain"),
    ],
)
def test_bogus_and_mislabelled_charsets_never_raise(
    params: bytes, body: bytes, expected: str
) -> None:
    raw = _message(params, body + REPORT.encode())
    assert read_mail(raw).text.startswith(expected)
    analysis = analyse_message(raw)
    assert [r.recipient for r in analysis.results] == ["kim@example.org"]
    json.dumps(analysis.to_json("x"), ensure_ascii=False).encode("utf-8")


def test_a_wrong_double_byte_guess_never_swallows_ascii() -> None:
    # Shift_JIS bytes with no label are not guessed as Shift_JIS: every ASCII byte stays.
    raw = _message(b"", (JAPANESE + REPORT).encode("cp932"))
    assert REPORT.strip() in read_mail(raw).text


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (b"=?x-bogus?B?" + base64.b64encode("次".encode()) + b"?=", "次"),
        (b"=?gb2312?B?" + base64.b64encode("堃 test".encode("gb18030")) + b"?=", "堃 test"),
        (
            b"=?iso-2022-jp?B?" + base64.b64encode("①配信".encode("iso2022_jp_2004")) + b"?=",
            "①配信",
        ),
        ("Zustellung für".encode(), "Zustellung für"),  # raw UTF-8 in a header
        (b"=?utf-8?Q?caf=C3=A9?= ok", "café ok"),
    ],
)
def test_header_words_in_any_charset(subject: bytes, expected: str) -> None:
    assert read_mail(_message(b"", REPORT.encode(), subject=subject)).subject == expected


def test_undecodable_transfer_encodings_keep_going() -> None:
    assert read_mail(_message(b"; charset=utf-8", b"!!!***\n", cte=b"base64")) is not None
    raw = _message(b"; charset=shift_jis", b"=8\n=ZZ " + REPORT.encode(), cte=b"quoted-printable")
    assert [r.recipient for r in analyse_message(raw).results] == ["kim@example.org"]


def test_decode_text_without_a_label() -> None:
    assert decode_text(b"plain", None) == "plain"
    assert decode_text("für".encode(), None) == "für"
    assert decode_text(b"\x81\x8d", "") == "\x81\x8d"  # not cp1252: Latin-1, never an error
