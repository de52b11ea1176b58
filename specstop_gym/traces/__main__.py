"""``python -m specstop_gym.traces``: see :mod:`specstop_gym.traces.cli`."""

from .cli import main

raise SystemExit(main())
