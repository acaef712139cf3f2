"""Allow ``python -m mmbot``."""

from mmbot.cli import main

raise SystemExit(main())
