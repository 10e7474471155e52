"""Keyed digests and the password escrow."""

from __future__ import annotations

import base64
import string

import pytest

from bridge.redaction import Redacted
from bridge.secrets.digests import input_digest, secret_digest
from bridge.secrets.escrow import generate_password, open_escrow, seal_escrow
from tests.secrets.plans import VALUES, make_plan

KEY = Redacted("0123456789abcdef" * 4)
OTHER_KEY = Redacted("fedcba9876543210" * 4)


def test_input_digest_is_keyed_and_stable() -> None:
    data = b"render-schema:1\0name:alpha\0secret-value\0hunter2hunter2"
    first = input_digest(KEY, data)
    assert first.startswith("hmac-sha256:") and len(first) == len("hmac-sha256:") + 64
    assert input_digest(KEY, data) == first
    assert input_digest(OTHER_KEY, data) != first
    assert input_digest(KEY, data + b"x") != first


def test_subkeys_are_rfc5869_hkdf_as_cryptography_derives_them() -> None:
    """Every digest in every repo hangs on these bytes: the standard-library
    HKDF must give what `cryptography`'s HKDF gave before it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from bridge.secrets.digests import INPUT_DIGEST_INFO, SECRET_DIGEST_INFO, hkdf_sha256
    from bridge.secrets.escrow import ESCROW_INFO

    # RFC 5869, test case 3 (SHA-256, no salt, no info): the first 32 bytes of its OKM.
    assert hkdf_sha256(b"\x0b" * 22, b"") == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
    )
    for material in (b"k", KEY.reveal().encode(), "clé-ü".encode(), b"\xff" * 200):
        for info in (INPUT_DIGEST_INFO, SECRET_DIGEST_INFO, ESCROW_INFO, b""):
            theirs = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
            assert hkdf_sha256(material, info) == theirs.derive(material)
    # And a digest pinned from before the change (cryptography's HKDF).
    assert input_digest(KEY, b"abc") == (
        "hmac-sha256:d173c6288918d4bc8e9b0e1f4f5bbb5d0dcc3e5cd6c5add723996d05f841b3e8"
    )


def test_input_digest_without_key_is_plain_sha256() -> None:
    import hashlib

    assert input_digest(None, b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_input_and_secret_digests_use_separate_subkeys() -> None:
    # Same key, same bytes, different purpose -> different MAC (HKDF info differs).
    from bridge.secrets.digests import encode_plan

    plan = make_plan()
    assert input_digest(KEY, encode_plan(plan)) != secret_digest(KEY, plan)


def test_secret_digest_keyed_stable_and_sensitive_to_every_field() -> None:
    plan = make_plan()
    digest = secret_digest(KEY, plan)
    assert digest.startswith("hmac-sha256:")
    assert secret_digest(KEY, make_plan()) == digest
    assert secret_digest(OTHER_KEY, plan) != digest
    variants = [
        make_plan(name="beta-env"),
        make_plan(namespace="other"),
        make_plan(file="secret-other.yaml"),
        make_plan(labels={"a": "b"}),
        make_plan(annotations={"a": "b"}),
        make_plan({**VALUES, "API_TOKEN": VALUES["API_TOKEN"] + "x"}),
        make_plan({k: v for k, v in VALUES.items() if k != "TRICKY"}),
    ]
    assert len({secret_digest(KEY, p) for p in variants} | {digest}) == len(variants) + 1


def test_secret_digest_encoding_is_unambiguous() -> None:
    # Moving a character across a field boundary must change the digest.
    a = make_plan({"AB": "value-one-long"}, labels={})
    b = make_plan({"A": "Bvalue-one-long"}, labels={})
    assert secret_digest(KEY, a) != secret_digest(KEY, b)
    c = make_plan({}, labels={"x": "yz"})
    d = make_plan({}, labels={"xy": "z"})
    assert secret_digest(KEY, c) != secret_digest(KEY, d)


def test_digests_carry_no_plaintext() -> None:
    plan = make_plan()
    for digest in (secret_digest(KEY, plan), input_digest(KEY, VALUES["API_TOKEN"].encode())):
        for value in VALUES.values():
            assert value not in digest
        assert KEY.reveal() not in digest


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        input_digest(Redacted(""), b"x")


def test_password_alphabet_length_and_randomness() -> None:
    passwords = [generate_password() for _ in range(50)]
    allowed = set(string.ascii_letters + string.digits)
    for p in passwords:
        assert isinstance(p, Redacted)
        assert len(p.reveal()) == 40
        assert set(p.reveal()) <= allowed
        assert str(p) == "****" and p.reveal() not in repr(p)
    assert len({p.reveal() for p in passwords}) == 50


def test_escrow_round_trip_and_randomised() -> None:
    password = generate_password()
    token = seal_escrow(KEY, "postgres:dep-1", password)
    assert token.startswith("v1:")
    assert password.reveal() not in token
    assert open_escrow(KEY, "postgres:dep-1", token) == password
    # A fresh nonce each time: two seals of the same password differ.
    assert seal_escrow(KEY, "postgres:dep-1", password) != token


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: (OTHER_KEY, "postgres:dep-1", t), id="wrong-key"),
        pytest.param(lambda t: (KEY, "postgres:dep-2", t), id="wrong-purpose"),
        pytest.param(
            lambda t: (KEY, "postgres:dep-1", t[:-4] + ("AAAA" if t[-4:] != "AAAA" else "BBBB")),
            id="tampered",
        ),
        pytest.param(lambda t: (KEY, "postgres:dep-1", t[:20]), id="truncated"),
        pytest.param(lambda t: (KEY, "postgres:dep-1", "v1:not base64!!"), id="garbled"),
        pytest.param(lambda t: (KEY, "postgres:dep-1", "v2:" + t[3:]), id="unknown-version"),
        pytest.param(lambda t: (KEY, "postgres:dep-1", ""), id="empty"),
    ],
)
def test_escrow_refuses_wrong_key_purpose_or_damage(mutate: object) -> None:
    password = generate_password()
    token = seal_escrow(KEY, "postgres:dep-1", password)
    key, purpose, bad = mutate(token)  # type: ignore[operator]
    with pytest.raises(ValueError) as info:
        open_escrow(key, purpose, bad)
    message = str(info.value)
    assert password.reveal() not in message
    assert KEY.reveal() not in message and OTHER_KEY.reveal() not in message


def test_escrow_token_bit_flip_anywhere_is_detected() -> None:
    password = generate_password()
    token = seal_escrow(KEY, "p", password)
    raw = bytearray(base64.urlsafe_b64decode(token[3:]))
    for i in range(0, len(raw), 7):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises(ValueError):
            open_escrow(KEY, "p", "v1:" + base64.urlsafe_b64encode(bytes(flipped)).decode())
