"""Shared fixtures: signing keys generated once per session, in every PEM flavour we accept,
an environment without the developer's MMBOT_* settings, and the end-to-end daemon's venue.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mmbot.kalshi.auth import PrivateKey
from mmbot.logs import clear_registered_secrets, configure_logging, reset_logging
from tests.support.env import clear_mmbot_env
from tests.support.keys import TestKey

if TYPE_CHECKING:
    from tests.support.daemon import Daemons, Venue


@pytest.fixture(autouse=True)
def _reset_logging_after_test() -> Iterator[None]:
    """Undo logging set up by a test (e.g. through cli.main) so it cannot leak into the next."""
    yield
    reset_logging()
    clear_registered_secrets()


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
    clear_mmbot_env(monkeypatch)


# The end-to-end fixtures import their harness when used, so that running a unit-test module
# alone does not import the mock exchange and the daemon.


@pytest.fixture
async def venue(
    request: pytest.FixtureRequest, ed25519_key: TestKey, rsa_key: TestKey
) -> AsyncIterator[Venue]:
    """A running mock exchange with the daemon's account and two requesters."""
    from tests.support.daemon import FAST, open_venue

    # A test may ask for another time scale with indirect parametrisation.
    scale = float(getattr(request, "param", FAST))
    async with open_venue(ed25519_key, rsa_key, scale) as opened:
        yield opened


@pytest.fixture
def daemons(venue: Venue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Daemons:
    """Starts in-process daemons against ``venue``, free of the developer's MMBOT_* settings."""
    from tests.support.daemon import recording_daemons

    clear_mmbot_env(monkeypatch)
    made = recording_daemons(venue, tmp_path, monkeypatch)
    configure_logging("INFO", "console", sys.stderr)
    return made
