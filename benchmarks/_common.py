"""The command line shared by the benchmark scripts: one ``--flag`` per field of a settings dataclass.

Each script keeps its settings in a ``Config`` dataclass (defaults and one docstring per
field) and calls :func:`parse_config`, so flags, types, defaults, help texts and the checks
of the numeric bounds are written once (the parser is :func:`specstop_gym.cli.dataclass_parser`,
the one ``train.py`` and ``evaluate.py`` use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from specstop_gym.cli import dataclass_parser

T = TypeVar("T")


def parse_config(cls: type[T], doc: str, argv: Sequence[str] | None, minimum: dict[str, float]) -> T:
    """``cls`` filled from ``argv`` (``None``: the process's arguments).

    Every field becomes ``--name`` (help: the field's docstring), typed by its annotation (a
    ``list[T]`` field takes one or more values). Fields named in ``minimum`` must be at least
    that value (every element of a list); otherwise the parser exits with an error naming the
    flag. The first paragraph of ``doc`` is the description shown by ``--help``.
    """
    parser = dataclass_parser(cls, None, " ".join(doc.strip().split("\n\n")[0].split()), word_sep="_")
    args = vars(parser.parse_args(argv))
    for name, low in minimum.items():
        given: Any = args[name]
        for v in given if isinstance(given, list) else [given]:
            if v < low:
                parser.error(f"--{name} must be >= {low:g}, got {v}")
    return cls(**args)
