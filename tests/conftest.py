"""Shared fixtures: signing keys generated once per session, in every PEM flavour we accept."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mmbot.kalshi.auth import PrivateKey, PublicKey, Signer
from mmbot.logs import clear_registered_secrets, reset_logging

KEY_ID = "0b5e2f7a-6c1d-4e8b-9a3f-1d2c3b4a5e6f"


@pytest.fixture(autouse=True)
def _reset_logging_after_test() -> Iterator[None]:
    """Undo logging set up by a test (e.g. through cli.main) so it cannot leak into the next."""
    yield
    reset_logging()
    clear_registered_secrets()


@dataclass(frozen=True)
class TestKey:
    """A generated private key with its PEM encodings and public half."""

    __test__ = False  # not a test class, despite the name

    kind: str
    private: PrivateKey
    pkcs8_pem: bytes
    # PKCS#1 ("BEGIN RSA PRIVATE KEY") exists only for RSA.
    pkcs1_pem: bytes | None

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    def signer(self, key_id: str = KEY_ID) -> Signer:
        return Signer(key_id, self.private)


def _pem(key: PrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="session")
def rsa_key() -> TestKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return TestKey(
        "rsa",
        key,
        _pem(key, serialization.PrivateFormat.PKCS8),
        _pem(key, serialization.PrivateFormat.TraditionalOpenSSL),
    )


@pytest.fixture(scope="session")
def ed25519_key() -> TestKey:
    key = ed25519.Ed25519PrivateKey.generate()
    return TestKey("ed25519", key, _pem(key, serialization.PrivateFormat.PKCS8), None)


@pytest.fixture(params=["rsa", "ed25519"])
def any_key(request: pytest.FixtureRequest) -> TestKey:
    """Run a test once with an RSA key and once with an Ed25519 key."""
    key: TestKey = request.getfixturevalue(f"{request.param}_key")
    return key


@pytest.fixture
def rsa_key_file(tmp_path: Path, rsa_key: TestKey) -> Path:
    path = tmp_path / "kalshi.key"
    path.write_bytes(rsa_key.pkcs8_pem)
    # As an operator should keep it; a wider mode is tested where the warning is the point.
    path.chmod(0o600)
    return path


@pytest.fixture
def no_mmbot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every MMBOT_ variable, so the developer's own settings cannot leak in."""
    for name in list(os.environ):
        if name.upper().startswith("MMBOT_"):
            monkeypatch.delenv(name)
