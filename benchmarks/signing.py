"""What signing one request costs, RSA-PSS 2048 against Ed25519: ``python -m benchmarks.signing``.

Every REST request (and the WebSocket handshake) carries a signature over timestamp,
method and path, computed on the event loop just before the request is written; on the
quote path its cost adds straight to RFQ-to-quote latency. This times
``Signer.headers`` as the daemon calls it, best of several rounds.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mmbot.kalshi.auth import PrivateKey, Signer

_PATH = "/trade-api/v2/communications/quotes"


def cost_us(key: PrivateKey, *, requests: int, rounds: int) -> float:
    """Microseconds ``Signer.headers`` takes per request with ``key`` (best round)."""
    signer = Signer("bench", key)
    best = min(timeit.repeat(lambda: signer.headers("POST", _PATH), number=requests, repeat=rounds))
    return best / requests * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-request signing cost of both key types."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.signing", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="signatures per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported")
    args = parser.parse_args(argv)
    keys: list[tuple[str, PrivateKey]] = [
        ("RSA-PSS 2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("Ed25519", ed25519.Ed25519PrivateKey.generate()),
    ]
    costs = {name: cost_us(key, requests=args.requests, rounds=args.rounds) for name, key in keys}
    for name, us in costs.items():
        print(f"{name:<14} {us:8.1f} us per signed request")
    print(f"RSA / Ed25519  {costs['RSA-PSS 2048'] / costs['Ed25519']:8.1f} x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
