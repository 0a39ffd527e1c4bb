"""Signed references: round trips, every altered byte refused, key rotation, expiry, garbage."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.container import build_signer
from app.settings import SettingsError, load_settings
from app.signing import (
    RFC5321_LOCAL_MAX,
    RejectReason,
    Signer,
    SigningKey,
    TokenError,
    parse_signing_keys,
)

SECRET_1 = base64.b64encode(bytes(range(32))).decode()
SECRET_2 = base64.urlsafe_b64encode(bytes(range(100, 132))).decode().rstrip("=")
K1 = SigningKey("k1", bytes(range(32)))
K2 = SigningKey("k2", bytes(range(100, 132)))
NOW = 1_780_000_000.0
DAY = 86_400


def signer(*keys: SigningKey) -> Signer:
    return Signer(
        list(keys or (K1,)),
        return_path_domain="bounces.example.net",
        unsubscribe_domain="unsubscribe.example.net",
        unsubscribe_base_url="https://stoplist.example.net/",
    )


def reason(fn: object, *args: object, **kwargs: object) -> RejectReason:
    with pytest.raises(TokenError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.reason


# ---------------------------------------------------------------------------------- round trips


def test_return_path_round_trip_and_shape() -> None:
    s = signer()
    rp = s.return_path("Carol@Example.NET", "newsletter", now=NOW)
    local, _, domain = rp.rpartition("@")
    assert domain == "bounces.example.net"
    assert local.startswith("b+k1-")
    assert local.endswith("-newsletter=carol=example.net")
    assert local == local.lower()
    assert len(local) <= RFC5321_LOCAL_MAX
    ref = s.verify_return_path(rp, now=NOW + 60)
    assert (ref.recipient, ref.stream, ref.key_id, ref.purpose) == (
        "carol@example.net",
        "newsletter",
        "k1",
        "bounce",
    )
    assert ref.issued_at.timestamp() == int(NOW)


def test_return_path_survives_case_folding_and_brackets() -> None:
    s = signer()
    rp = s.return_path("carol@example.net", None, now=NOW)
    assert s.verify_return_path(f"<{rp.upper()}>", now=NOW).recipient == "carol@example.net"
    assert s.verify_return_path(rp, now=NOW).stream is None


def test_recipient_with_equals_and_dashes() -> None:
    s = signer()
    rp = s.return_path("a-b=c.d@mail-1.example.net", "promo-eu.1", now=NOW)
    ref = s.verify_return_path(rp, now=NOW)
    assert (ref.recipient, ref.stream) == ("a-b=c.d@mail-1.example.net", "promo-eu.1")


def test_compact_tokens_round_trip() -> None:
    s = signer()
    token = s.ref_token("carol@example.net", "newsletter", now=NOW)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    ref = s.verify_ref_token(token, now=NOW)
    assert (ref.recipient, ref.stream, ref.purpose) == ("carol@example.net", "newsletter", "ref")
    unsub = s.unsubscribe_token("carol@example.net", None, now=NOW)
    assert s.verify_unsubscribe_token(unsub, now=NOW).stream is None


def test_purposes_do_not_mix() -> None:
    s = signer()
    ref = s.ref_token("carol@example.net", "newsletter", now=NOW)
    unsub = s.unsubscribe_token("carol@example.net", "newsletter", now=NOW)
    assert reason(s.verify_unsubscribe_token, ref, now=NOW) == RejectReason.FORGED
    assert reason(s.verify_ref_token, unsub, now=NOW) == RejectReason.FORGED
    rp = s.return_path("carol@example.net", "newsletter", now=NOW)
    as_unsub = rp.replace("b+", "unsubscribe+", 1)
    assert reason(s.verify_unsubscribe_address, as_unsub, now=NOW) == RejectReason.FORGED


def test_headers_for_a_message() -> None:
    h = signer().headers("carol@example.net", "newsletter", now=NOW)
    assert h["return_path"].startswith("b+k1-")
    assert h["unsubscribe_url"].startswith("https://stoplist.example.net/v1/unsubscribe/")
    assert h["unsubscribe_mailto"].startswith("unsubscribe+k1-")
    assert h["list_unsubscribe"] == (
        f"<{h['unsubscribe_url']}>, <mailto:{h['unsubscribe_mailto']}?subject=unsubscribe>"
    )
    assert h["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"


def test_unusable_recipients_are_refused_when_minting() -> None:
    s = signer()
    with pytest.raises(ValueError, match="recipient"):
        s.return_path("not an address")
    with pytest.raises(ValueError, match="stream"):
        s.ref_token("carol@example.net", "Bad Stream!")


# ------------------------------------------------------------------------------------ tampering


def test_every_character_change_of_a_return_path_is_refused() -> None:
    s = signer()
    rp = s.return_path("carol@example.net", "newsletter", now=NOW)
    local = rp.rpartition("@")[0]
    for i, ch in enumerate(local):
        for other in {"a", "z", "2", "-", "="} - {ch}:
            altered = local[:i] + other + local[i + 1 :] + "@bounces.example.net"
            try:
                ref = s.verify_return_path(altered, now=NOW)
            except TokenError as exc:
                assert exc.reason in {
                    RejectReason.FORGED,
                    RejectReason.MALFORMED,
                    RejectReason.UNKNOWN_KEY,
                    RejectReason.EXPIRED,
                    RejectReason.TAMPERED,
                }
            else:
                raise AssertionError(f"altered address verified: {altered} -> {ref}")


@pytest.mark.parametrize("purpose", ["ref", "unsubscribe"])
def test_every_bit_flip_of_a_token_is_refused(purpose: str) -> None:
    s = signer()
    mint = s.ref_token if purpose == "ref" else s.unsubscribe_token
    verify = s.verify_ref_token if purpose == "ref" else s.verify_unsubscribe_token
    token = mint("carol@example.net", "newsletter", now=NOW)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for i in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            altered = base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("=")
            with pytest.raises(TokenError):
                verify(altered, now=NOW)


def test_every_character_change_of_a_token_is_refused() -> None:
    # Includes the last character, whose low bits base64 does not use: the text must be canonical.
    s = signer()
    token = s.ref_token("carol@example.net", "newsletter", now=NOW)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, ch in enumerate(token):
        for other in alphabet:
            if other == ch:
                continue
            with pytest.raises(TokenError):
                s.verify_ref_token(token[:i] + other + token[i + 1 :], now=NOW)


def test_truncated_and_extended_tokens_are_refused() -> None:
    s = signer()
    token = s.ref_token("carol@example.net", "newsletter", now=NOW)
    for n in range(len(token)):
        with pytest.raises(TokenError):
            s.verify_ref_token(token[:n], now=NOW)
    assert reason(s.verify_ref_token, token + "A", now=NOW) in {
        RejectReason.MALFORMED,
        RejectReason.FORGED,
    }


# ------------------------------------------------------------------------------ keys and expiry


def test_wrong_key() -> None:
    token = signer(K1).ref_token("carol@example.net", now=NOW)
    other = Signer([SigningKey("k1", bytes(range(1, 33)))])
    assert reason(other.verify_ref_token, token, now=NOW) == RejectReason.FORGED
    assert reason(signer(K2).verify_ref_token, token, now=NOW) == RejectReason.UNKNOWN_KEY


def test_rotation_old_key_verifies_new_key_signs() -> None:
    old = signer(K1)
    token = old.ref_token("carol@example.net", now=NOW)
    rp = old.return_path("carol@example.net", now=NOW)
    rotated = signer(K2, K1)
    assert rotated.verify_ref_token(token, now=NOW).key_id == "k1"
    assert rotated.verify_return_path(rp, now=NOW).key_id == "k1"
    fresh = rotated.ref_token("carol@example.net", now=NOW)
    assert rotated.verify_ref_token(fresh, now=NOW).key_id == "k2"
    assert rotated.return_path("carol@example.net", now=NOW).startswith("b+k2-")
    # Once k1 is retired, its tokens are refused by name.
    assert reason(signer(K2).verify_ref_token, token, now=NOW) == RejectReason.UNKNOWN_KEY


def test_expiry_is_a_verify_argument() -> None:
    s = signer()
    token = s.unsubscribe_token("carol@example.net", "newsletter", now=NOW)
    later = NOW + 40 * DAY
    assert s.verify_unsubscribe_token(token, now=later).recipient == "carol@example.net"
    with pytest.raises(TokenError) as info:
        s.verify_unsubscribe_token(token, now=later, max_age=timedelta(days=30))
    assert info.value.reason == RejectReason.EXPIRED
    assert info.value.expired_ref is not None
    assert info.value.expired_ref.recipient == "carol@example.net"
    rp = s.return_path("carol@example.net", now=NOW)
    assert reason(s.verify_return_path, rp, now=later) == RejectReason.EXPIRED  # 30 days default


def test_issued_in_the_future_is_refused() -> None:
    s = signer()
    token = s.ref_token("carol@example.net", now=NOW + 3600)
    assert reason(s.verify_ref_token, token, now=NOW) == RejectReason.TAMPERED
    assert s.verify_ref_token(s.ref_token("carol@example.net", now=NOW + 60), now=NOW)


# ---------------------------------------------------------------------------------- malformed


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_strings_only_raise_token_error(text: str) -> None:
    s = signer()
    for verify in (
        s.verify_ref_token,
        s.verify_unsubscribe_token,
        s.verify_return_path,
        s.verify_unsubscribe_address,
    ):
        with pytest.raises(TokenError):
            verify(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_arbitrary_bytes_as_tokens_only_raise_token_error(raw: bytes) -> None:
    s = signer()
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(TokenError):
        s.verify_ref_token(text)
    with pytest.raises(TokenError):
        s.verify_return_path(f"b+k1-{text[:7].lower()}-aaaaaaaa-x={text.lower()}=example.com@x")


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}@[a-z0-9]{1,10}\.(com|net|org)", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)),
)
def test_round_trip_property(recipient: str, stream: str | None) -> None:
    if ".." in recipient or ".@" in recipient:
        return
    s = signer()
    ref = s.verify_return_path(s.return_path(recipient, stream, now=NOW), now=NOW)
    assert (ref.recipient, ref.stream) == (recipient, stream)
    ref = s.verify_ref_token(s.ref_token(recipient, stream, now=NOW), now=NOW)
    assert (ref.recipient, ref.stream) == (recipient, stream)


# ------------------------------------------------------------------------------------ settings


def test_key_list_parsing() -> None:
    keys = parse_signing_keys(f"k2:{SECRET_2}, k1:{SECRET_1}")
    assert [k.key_id for k in keys] == ["k2", "k1"]
    assert keys[1].secret == bytes(range(32))
    assert "secret=<32 bytes>" in repr(keys[0])


@pytest.mark.parametrize(
    "value",
    [
        "k1:oldsecret",  # placeholder, too short
        "k1:" + base64.b64encode(b"x" * 40).decode(),  # long but no entropy
        "k1:not base64!",
        "K1:" + SECRET_1,  # key ids are lower case
        "k1" + SECRET_1,
        f"k1:{SECRET_1},k1:{SECRET_2}",
    ],
)
def test_bad_keys_are_refused_at_start(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(signing_keys=value)
    assert "STOPLIST_SIGNING_KEYS" in str(info.value)
    assert SECRET_1 not in str(info.value)


def test_require_signed_needs_keys() -> None:
    with pytest.raises(SettingsError, match="STOPLIST_REQUIRE_SIGNED_BOUNCES"):
        load_settings(require_signed_bounces=True)
    s = load_settings(signing_keys=f"k1:{SECRET_1}", require_signed_reports=True)
    assert s.require_signed_reports


def test_build_signer_from_settings() -> None:
    assert build_signer(load_settings(signing_keys=None)) is None
    s = build_signer(
        load_settings(
            signing_keys=f"k2:{SECRET_2},k1:{SECRET_1}",
            return_path_domain="bounces.example.net",
            token_max_age_days=10,
        )
    )
    assert s is not None
    assert s.current.key_id == "k2"
    assert s.bounce_max_age == timedelta(days=10)
    assert s.return_path("carol@example.net").endswith("@bounces.example.net")


def test_known_answers() -> None:
    """The format is a contract with sending code outside this repository: pin it down.

    Key ``k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=`` (bytes 0..31), issued at 1780000000.
    """
    s = signer()
    assert s.return_path("carol@example.net", "newsletter", now=NOW) == (
        "b+k1-tfrksg-ot4x6ro6-newsletter=carol=example.net@bounces.example.net"
    )
    assert s.ref_token("carol@example.net", "newsletter", now=NOW) == (
        "AQJrMWoYpQAKbmV3c2xldHRlcmNhcm9sQGV4YW1wbGUubmV0lii8ixv0men3u4J9uq2wjg"
    )
    assert s.unsubscribe_token("carol@example.net", "newsletter", now=NOW) == (
        "AQJrMWoYpQAKbmV3c2xldHRlcmNhcm9sQGV4YW1wbGUubmV0o-Uha06kGNAth9job-1Vlg"
    )
    assert s.unsubscribe_mailto_address("carol@example.net", "newsletter", now=NOW) == (
        "unsubscribe+k1-tfrksg-mqxfchw2-newsletter=carol=example.net@unsubscribe.example.net"
    )
