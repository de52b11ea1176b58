"""``python -m specstop_gym COMMAND``: the package's small command-line tools.

Commands::

    scenarios        the scenario presets, their parameters and sources, as markdown
                     (``python -m specstop_gym scenarios > docs/scenarios.md`` regenerates the docs page)

The trace tools have their own entry point, ``python -m specstop_gym.traces``. (The scenario
generator was ``python -m specstop_gym.scenarios``; running a module of a package that the package
itself imports makes ``runpy`` warn about a second copy of the module, so it lives here now.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code (2 for a usage error, from argparse)."""
    parser = argparse.ArgumentParser(prog="python -m specstop_gym",
                                     description="Small command-line tools of specstop-gym.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("scenarios", help="print the scenario presets as markdown (docs/scenarios.md)")
    args = parser.parse_args(argv)
    if args.command == "scenarios":
        from .scenarios import scenarios_markdown

        try:
            sys.stdout.write(scenarios_markdown())
            sys.stdout.flush()
        except BrokenPipeError:  # piped into head: not an error
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
