"""The API key id and the key type the tests sign with.

The fixtures that generate the keys (``rsa_key``, ``ed25519_key``, ``any_key``) stay in
``tests/conftest.py``; test modules import these names from here, as conftest is pytest's
plugin file, not a module to import.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbot.kalshi.auth import PrivateKey, PublicKey, Signer

#: The API key id the fixtures' keys sign as, unless a test names another.
KEY_ID = "0b5e2f7a-6c1d-4e8b-9a3f-1d2c3b4a5e6f"


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
        """The public half, as the exchange registers it."""
        return self.private.public_key()

    def signer(self, key_id: str = KEY_ID) -> Signer:
        """A Signer for this key under ``key_id``."""
        return Signer(key_id, self.private)
