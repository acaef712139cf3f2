"""The ``mmbot`` command line: one module per command group.

``entry`` parses the common flags and dispatches; ``run`` is the daemon, ``ops`` the
operator commands against the exchange, ``health`` the container health probe, ``bench``
the benchmark. Each command module registers its own sub-parser, so a command's flags live
next to the code that reads them.
"""

from __future__ import annotations

from mmbot.cli.entry import Handler, build_parser, format_config, main

__all__ = ["Handler", "build_parser", "format_config", "main"]
