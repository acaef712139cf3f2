"""Kalshi request signing: key loading and the ``KALSHI-ACCESS-*`` headers.

The exchange authenticates every REST request and the WebSocket handshake with
three headers. The signature covers ``timestamp_ms + METHOD + path``, where the
path is the URL path from the root (it includes ``/trade-api/v2``) without the
query string. RSA keys sign with RSA-PSS (SHA-256, MGF1-SHA-256, salt length =
digest length); Ed25519 keys are accepted with the same pre-sign text.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Generator
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "ACCESS_KEY_HEADER",
    "ACCESS_SIGNATURE_HEADER",
    "ACCESS_TIMESTAMP_HEADER",
    "KalshiAuth",
    "KeyLoadError",
    "PrivateKey",
    "PublicKey",
    "Signer",
    "load_private_key",
    "signing_message",
    "verify_signature",
]

ACCESS_KEY_HEADER = "KALSHI-ACCESS-KEY"
ACCESS_TIMESTAMP_HEADER = "KALSHI-ACCESS-TIMESTAMP"
ACCESS_SIGNATURE_HEADER = "KALSHI-ACCESS-SIGNATURE"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class KeyLoadError(ValueError):
    """A private key could not be loaded; the message never contains key material."""


def load_private_key(pem: bytes | str) -> PrivateKey:
    """Load an unencrypted RSA or Ed25519 private key from PEM (PKCS#1 or PKCS#8)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        # cryptography raises TypeError when the PEM is encrypted and no password was given.
        raise KeyLoadError(
            "private key is encrypted; mmbot needs an unencrypted PEM "
            "(decrypt it with `openssl pkey -in KEY -out KEY.plain`)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        # The library's message can quote parts of the input; keep only a generic reason.
        raise KeyLoadError(
            "not a PEM private key (expected RSA or Ed25519, PKCS#1 or PKCS#8)"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyLoadError(
            f"unsupported key type {type(key).__name__}; Kalshi accepts RSA and Ed25519 keys"
        )
    return key


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """Return the exact bytes Kalshi expects to be signed for one request."""
    # Callers may hand over a full path with a query; the query is never signed.
    bare_path = path.split("?", 1)[0]
    return f"{timestamp_ms}{method.upper()}{bare_path}".encode()


def verify_signature(public_key: PublicKey, signature_b64: str, message: bytes) -> bool:
    """Check a base64 signature made by :class:`Signer` (used by tests and the mock exchange)."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, _PSS, hashes.SHA256())
        else:
            public_key.verify(signature, message)
    except Exception:
        return False
    return True


class Signer:
    """Holds a key id and private key and produces signed ``KALSHI-ACCESS-*`` headers."""

    __slots__ = ("_clock_ms", "_key", "_key_id")

    def __init__(
        self,
        key_id: str,
        private_key: PrivateKey,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if not key_id:
            raise ValueError("key id must not be empty")
        self._key_id = key_id
        self._key = private_key
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    @classmethod
    def from_pem(cls, key_id: str, pem: bytes | str) -> Signer:
        """Build a signer from a key id and PEM text."""
        return cls(key_id, load_private_key(pem))

    def __repr__(self) -> str:
        # Never show the key id or key: reprs end up in logs and tracebacks.
        return f"Signer(key_type={self.key_type})"

    @property
    def key_type(self) -> str:
        """``"rsa"`` or ``"ed25519"``."""
        return "rsa" if isinstance(self._key, rsa.RSAPrivateKey) else "ed25519"

    def public_key(self) -> PublicKey:
        """Return the public half of the signing key."""
        return self._key.public_key()

    def sign(self, timestamp_ms: int | str, method: str, path: str) -> str:
        """Return the base64 signature of ``timestamp_ms + METHOD + path``."""
        message = signing_message(timestamp_ms, method, path)
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(message, _PSS, hashes.SHA256())
        else:
            signature = self._key.sign(message)
        return base64.b64encode(signature).decode("ascii")

    def headers(self, method: str, url_or_path: str) -> dict[str, str]:
        """Return the three auth headers for a request to ``url_or_path``."""
        path = urlsplit(url_or_path).path or "/"
        timestamp = str(self._clock_ms())
        return {
            ACCESS_KEY_HEADER: self._key_id,
            ACCESS_TIMESTAMP_HEADER: timestamp,
            ACCESS_SIGNATURE_HEADER: self.sign(timestamp, method, path),
        }


class KalshiAuth(httpx.Auth):
    """httpx auth hook: signs each request as it is sent, so every retry gets a fresh timestamp."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the signed headers to ``request``."""
        # raw_path is what goes on the wire (percent-encoded); drop the query before signing.
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        request.headers.update(self._signer.headers(request.method, path))
        yield request
