"""The command line shared by the benchmark scripts: one ``--flag`` per field of a settings dataclass.

Each script keeps its settings in a ``Config`` dataclass (defaults and one docstring per
field) and calls :func:`parse_config`, so flags, types, defaults and the checks of the
numeric bounds are written once.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence, TypeVar

from specstop_gym.cli import HelpFormatter, field_docs

T = TypeVar("T")


def parse_config(cls: type[T], doc: str, argv: Sequence[str] | None, minimum: dict[str, float]) -> T:
    """``cls`` filled from ``argv`` (``None``: the process's arguments).

    Every field becomes ``--name`` (help: the field's docstring), typed like its default (a list default takes one or more
    values of its first element's type). Fields named in ``minimum`` must be at least that
    value (every element of a list); otherwise the parser exits with an error naming the flag.
    The first paragraph of ``doc`` is the description shown by ``--help``.
    """
    parser = argparse.ArgumentParser(description=" ".join(doc.strip().split("\n\n")[0].split()),
                                     formatter_class=HelpFormatter)
    defaults = cls()
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(defaults, field.name)
        kind = type(value[0]) if isinstance(value, list) else type(value)
        parser.add_argument(f"--{field.name}", type=kind, nargs="+" if isinstance(value, list) else None,
                            default=value, help=docs.get(field.name, ""))
    args = vars(parser.parse_args(argv))
    for name, low in minimum.items():
        given: Any = args[name]
        for v in given if isinstance(given, list) else [given]:
            if v < low:
                parser.error(f"--{name} must be >= {low:g}, got {v}")
    return cls(**args)
