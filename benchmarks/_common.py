"""The command line shared by the benchmark scripts: one ``--flag`` per field of a settings dataclass.

Each script keeps its settings in a ``Config`` dataclass (defaults and one docstring per
field) and calls :func:`parse_config`, so flags, types, defaults, help texts and the checks
of the numeric bounds are written once (the parser is :func:`specstop_gym.cli.dataclass_parser`,
the one ``train.py`` and ``evaluate.py`` use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from specstop_gym.cli import dataclass_parser

T = TypeVar("T")


DEFAULT_MAXIMUM = 10**9
"""Largest value of a numeric flag unless the script sets its own (``maximum=``)."""


def parse_config(cls: type[T], doc: str, argv: Sequence[str] | None, minimum: dict[str, float],
                 maximum: dict[str, float] | None = None) -> T:
    """``cls`` filled from ``argv`` (``None``: the process's arguments).

    Every field becomes ``--name`` (help: the field's docstring), typed by its annotation (a
    ``list[T]`` field takes one or more values). Fields named in ``minimum`` must be at least
    that value (every element of a list); every numeric value must be finite and at most
    ``maximum[name]`` (default :data:`DEFAULT_MAXIMUM`); a ``scenario`` field must name a preset
    and an ``agent`` field a registered agent; otherwise the parser exits (code 2) with one line
    naming the flag. The first paragraph of ``doc`` is the description shown by ``--help``.
    """
    parser = dataclass_parser(cls, None, " ".join(doc.strip().split("\n\n")[0].split()), word_sep="_")
    args = vars(parser.parse_args(argv))
    maximum = maximum or {}
    for name, given in args.items():
        for v in given if isinstance(given, list) else [given]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            high = maximum.get(name, DEFAULT_MAXIMUM)
            if not math.isfinite(v) or v > high:
                parser.error(f"--{name} must be a finite number <= {high:g}, got {v}")
            if name in minimum and v < minimum[name]:
                parser.error(f"--{name} must be >= {minimum[name]:g}, got {v}")
    if isinstance(args.get("scenario"), str):
        from specstop_gym import scenario_names

        if args["scenario"] not in scenario_names():
            parser.error(f"--scenario: unknown scenario {args['scenario'][:40]!r}; valid: {', '.join(scenario_names())}")
    if isinstance(args.get("agent"), str):
        from agents.registry import agent_names

        if args["agent"].partition(":")[0] not in agent_names():
            parser.error(f"--agent: unknown agent {args['agent'][:40]!r}; valid: {', '.join(agent_names())}")
    return cls(**args)
