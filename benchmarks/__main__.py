"""``python -m benchmarks``: the same as ``mmbot bench``."""

from __future__ import annotations

import sys

from mmbot.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
