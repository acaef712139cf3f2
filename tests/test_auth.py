"""Signing: key formats, the exact pre-sign text, and verification with the public key."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mmbot.kalshi.auth import (
    ACCESS_KEY_HEADER,
    ACCESS_SIGNATURE_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    KeyLoadError,
    Signer,
    load_private_key,
    signing_message,
    verify_signature,
)
from tests.support.keys import KEY_ID, TestKey


def test_signing_message_is_timestamp_method_path_without_query() -> None:
    assert (
        signing_message(1703123456789, "get", "/trade-api/v2/portfolio/orders?limit=5")
        == b"1703123456789GET/trade-api/v2/portfolio/orders"
    )


@pytest.mark.parametrize("fmt", ["pkcs8", "pkcs1"])
def test_rsa_keys_load_from_pkcs8_and_pkcs1(rsa_key: TestKey, fmt: str) -> None:
    pem = rsa_key.pkcs8_pem if fmt == "pkcs8" else rsa_key.pkcs1_pem
    assert pem is not None
    assert (b"BEGIN RSA PRIVATE KEY" in pem) == (fmt == "pkcs1")
    signer = Signer.from_pem(KEY_ID, pem)
    assert signer.key_type == "rsa"
    sig = signer.sign("1", "GET", "/x")
    assert verify_signature(rsa_key.public, sig, signing_message("1", "GET", "/x"))


def test_ed25519_key_loads_from_text(ed25519_key: TestKey) -> None:
    signer = Signer.from_pem(KEY_ID, ed25519_key.pkcs8_pem.decode())
    assert signer.key_type == "ed25519"


def test_headers_sign_the_url_path_and_verify(any_key: TestKey) -> None:
    signer = Signer(KEY_ID, any_key.private, clock_ms=lambda: 1_700_000_000_123)
    headers = signer.headers(
        "POST", "https://api.elections.kalshi.com/trade-api/v2/communications/quotes?x=1"
    )
    assert headers[ACCESS_KEY_HEADER] == KEY_ID
    assert headers[ACCESS_TIMESTAMP_HEADER] == "1700000000123"
    expected = b"1700000000123POST/trade-api/v2/communications/quotes"
    assert verify_signature(any_key.public, headers[ACCESS_SIGNATURE_HEADER], expected)
    # The signature binds method and path: it must not verify for anything else.
    assert not verify_signature(
        any_key.public, headers[ACCESS_SIGNATURE_HEADER], expected.replace(b"POST", b"GET")
    )


def test_rsa_signature_is_pss_sha256_with_digest_length_salt(rsa_key: TestKey) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = base64.b64decode(rsa_key.signer().sign("5", "GET", "/trade-api/ws/v2"))
    # Verifying with the exact documented parameters (and not, say, PKCS#1 v1.5) pins the scheme.
    rsa_key.public.verify(  # type: ignore[union-attr]
        sig,
        b"5GET/trade-api/ws/v2",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_verify_rejects_garbage(ed25519_key: TestKey) -> None:
    assert not verify_signature(ed25519_key.public, "not base64!!", b"x")
    assert not verify_signature(ed25519_key.public, base64.b64encode(b"0" * 64).decode(), b"x")


def test_bad_pem_error_does_not_echo_input() -> None:
    secretish = (
        "-----BEGIN PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyLoadError) as err:
        load_private_key(secretish)
    assert "QUJDREVG" not in str(err.value)


def test_encrypted_key_gets_a_clear_message(rsa_key: TestKey) -> None:
    pem = rsa_key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter22"),
    )
    with pytest.raises(KeyLoadError, match="encrypted"):
        load_private_key(pem)


def test_unsupported_key_type_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyLoadError, match="RSA and Ed25519"):
        load_private_key(pem)


def test_signer_repr_hides_key_id_and_key(rsa_key: TestKey) -> None:
    text = repr(rsa_key.signer()) + str(rsa_key.signer())
    assert KEY_ID not in text
    assert "PRIVATE" not in text
