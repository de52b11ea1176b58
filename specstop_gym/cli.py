"""Command-line plumbing shared by ``evaluate.py`` and ``train.py``: dataclass-field help
text, the help formatter, command-line values, and ``--set field=value`` scenario overrides."""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
from typing import Any


class UsageError(Exception):
    """An invalid argument: reported without a traceback, exit code 2, nothing run."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring line under each field of a dataclass (the CleanRL/tyro convention)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default unless it is None, False, empty or the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if not (d is None or d is False or d == [] or d == argparse.SUPPRESS) and "default" not in text:
            shown = " ".join(map(str, d)) if isinstance(d, list) else d
            text += f" (default: {shown})"
        return text


def tuples_from_lists(v: Any) -> Any:
    """JSON lists -> tuples, recursively (ScenarioConfig fields are tuples)."""
    return tuple(tuples_from_lists(x) for x in v) if isinstance(v, list) else v


def parse_value(text: str) -> Any:
    """A value given on the command line (``--set``, ``--hyperparams``, agent specs):
    ``true``/``false``/``none``/``null`` (any case), else a Python literal (``3``, ``3e-4``,
    ``[64, 64]``, ``{"a": 1}``, ``"quoted"``), else a float (``nan``, ``inf``), else the string
    itself (``tanh``, ``lin_3e-4``)."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_override(item: str) -> tuple[str, Any]:
    """``field=value`` -> (field, value): the field must be a ScenarioConfig field; the value is
    parsed by :func:`parse_value` (lists become tuples)."""
    from .core.config import field_names

    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise UsageError(f"--set expects field=value, got {item!r}")
    valid = field_names()
    if key not in valid:
        raise UsageError(f"--set {item!r}: unknown scenario field {key!r}; valid: {', '.join(valid)}")
    return key, tuples_from_lists(parse_value(text))


def parse_scenario_overrides(items: list[str]) -> dict[str, Any]:
    """Several ``field=value`` items -> a dict of scenario overrides (later items win)."""
    return dict(parse_override(item) for item in items)
