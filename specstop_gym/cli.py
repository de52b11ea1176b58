"""Command-line plumbing shared by ``evaluate.py``, ``train.py`` and the benchmark scripts: a
parser with one flag per dataclass field (help from the field's docstring), the help formatter,
command-line values, ``--set field=value`` scenario overrides, and the checks of counts, seeds,
numbers and paths given on the command line (each error names the flag; the scripts report it
in one line, ``prog: error: ...``, with exit code 2)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import math
import sys
import typing
from collections.abc import Iterable
from typing import Any, Literal, NoReturn

MAX_SEEDS = 100_000
"""Most seeds of one evaluation (seeds are rows of one batched simulator)."""
MAX_SEED = 2**32 - 1
"""Largest seed value (numpy's and SB3's global seeding take 32-bit seeds)."""
MAX_VALUE_CHARS = 100_000
"""Longest value of ``--set``, ``--hyperparams`` or an agent parameter, characters."""
MAX_PATH_CHARS = 4_096
"""Longest path given on the command line."""


class UsageError(Exception):
    """An invalid argument: reported without a traceback, exit code 2, nothing run."""


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` (difflib ratio >= ``cutoff``), else ``""``.

    Case and ``_``/``-`` are ignored in the comparison (``Markov_CSI`` -> ``markov-csi``)."""
    import difflib

    options = list(choices)
    norm = {c.lower().replace("_", "-"): c for c in options}
    match = difflib.get_close_matches(str(word).lower().replace("_", "-"), list(norm), n=1, cutoff=cutoff)
    return f" (did you mean {norm[match[0]]!r}?)" if match else ""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``prog: error: message (see prog --help)``,
    with exit code 2 (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):  # a misspelt flag: suggest the closest one
            flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            for token in message.split(":", 1)[1].split():
                if token.startswith("--"):
                    hint = did_you_mean(token.split("=", 1)[0], flags)
                    if hint:
                        message += hint
                        break
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_count(flag: str, value: Any, lo: int, hi: int) -> int:
    """An integer ``lo <= value <= hi`` or a UsageError naming ``flag`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown = value if not isinstance(value, int) or abs(value) < 10**30 else f"{str(value)[:20]}..."
        raise UsageError(f"{flag} must be an integer in {lo}..{hi}, got {shown}")
    return value


def check_number(flag: str, value: Any, lo: float, hi: float, unit: str = "") -> float:
    """A finite number ``lo <= value <= hi`` or a UsageError naming ``flag`` and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not lo <= value <= hi:
        raise UsageError(f"{flag} must be a finite number in [{lo:g}, {hi:g}]{' ' + unit if unit else ''}, "
                         f"got {value!r}")
    return float(value)


def check_path(flag: str, value: Any) -> str:
    """A path of at most :data:`MAX_PATH_CHARS` characters without NUL bytes."""
    if not isinstance(value, str) or not value or len(value) > MAX_PATH_CHARS or "\x00" in value:
        raise UsageError(f"{flag} must be a path of 1..{MAX_PATH_CHARS} characters, got {str(value)[:80]!r}")
    return value


def parse_seeds(items: Iterable[str | int], flag: str = "--seeds", limit: int = MAX_SEEDS) -> list[int]:
    """``["1000-1003", "7"]`` -> ``[1000, 1001, 1002, 1003, 7]`` (duplicates dropped, order kept).

    Seeds are integers in ``0..MAX_SEED``; at most ``limit`` of them (a range is measured before
    it is built, so ``0-1000000000`` is refused at once, not allocated)."""
    out: dict[int, None] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            try:
                a, b = (int(lo), int(hi)) if dash and lo else (int(part), int(part))
            except ValueError:
                raise UsageError(f"{flag}: {part[:40]!r} is not a seed (integer in 0..{MAX_SEED}) "
                                 f"or a range A-B") from None
            if a < 0 or b < a or b > MAX_SEED:
                raise UsageError(f"{flag}: {part[:40]!r} gives no seeds in 0..{MAX_SEED}")
            if b - a + 1 + len(out) > limit:
                raise UsageError(f"{flag}: at most {limit} seeds, got {part[:40]!r} (and {len(out)} before)")
            for seed in range(a, b + 1):
                out[seed] = None
    if not out:
        raise UsageError(f"{flag} needs at least one seed")
    return list(out)


def print_error(prog: str, message: str) -> None:
    """The scripts' one-line error report on stderr."""
    line = " ".join(str(message).split())
    print(f"{prog}: error: {line}", file=sys.stderr)


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


def dataclass_parser(cls: type, prog: str | None, doc: str | None, *, epilog: str | None = None,
                     suppress_defaults: bool = False, negatable: tuple[str, ...] = (),
                     word_sep: str = "-") -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``cls``.

    The flag of field ``a_b`` is ``--a-b`` (``word_sep="_"``: ``--a_b``); its help is the
    field's docstring (:func:`field_docs`), its destination the field name, its default the
    field's (``suppress_defaults``: unset flags stay out of the namespace, to tell which were
    given). From the annotation: ``bool`` is a switch (``--x``; fields in ``negatable`` also get
    ``--no-x``), ``Literal[...]`` gives choices, ``list[T]`` (or ``list[T] | None``) one or more
    values of type ``T``, anything else (or ``T | None``) one value of type ``T``; a field named
    ``set`` collects repeated ``--set FIELD=VALUE`` strings (default None). ``metavar`` may be
    given in the field's metadata. The description is the first paragraph of ``doc``.
    """
    parser = OneLineParser(prog=prog, description=(doc or "").split("\n\n")[0], epilog=epilog,
                           formatter_class=HelpFormatter)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kw: dict[str, Any] = {"help": docs.get(f.name, ""), "dest": f.name,
                              "default": argparse.SUPPRESS if suppress_defaults else default}
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if f.name in negatable:
            kw["action"] = argparse.BooleanOptionalAction
        elif tp is bool:
            kw["action"] = "store_true"
        elif typing.get_origin(tp) is Literal:
            kw["choices"] = list(typing.get_args(tp))
        elif f.name == "set":
            kw.update(action="append", metavar="FIELD=VALUE", type=str)
            if not suppress_defaults:
                kw["default"] = None
        elif typing.get_origin(tp) is list or (args and typing.get_origin(args[0]) is list):
            inner = typing.get_args(tp if typing.get_origin(tp) is list else args[0])[0]
            kw.update(nargs="+", type=inner)
            kw.setdefault("metavar", inner.__name__.upper())
        else:
            kw["type"] = args[0] if args else tp
        parser.add_argument("--" + f.name.replace("_", word_sep), **kw)
    return parser


def tuples_from_lists(v: Any) -> Any:
    """Lists -> tuples, recursively (ScenarioConfig fields are tuples)."""
    return tuple(tuples_from_lists(x) for x in v) if isinstance(v, list) else v


def parse_value(text: str) -> Any:
    """A value given on the command line (``--set``, ``--hyperparams``, agent specs):
    ``true``/``false``/``none``/``null`` (any case), else an int (``3``, ``04``), else a Python
    literal (``3e-4``, ``[64, 64]``, ``{"a": 1}``, ``"quoted"``), else a float (``nan``, ``inf``),
    else the string itself (``tanh``, ``lin_3e-4``)."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
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
        raise UsageError(f"--set expects field=value, got {item[:80]!r}")
    valid = field_names()
    if key not in valid:
        raise UsageError(f"--set {item[:80]!r}: unknown scenario field {key[:40]!r}; valid: {', '.join(valid)}")
    if len(text) > MAX_VALUE_CHARS:
        raise UsageError(f"--set {key}: the value has {len(text)} characters; at most {MAX_VALUE_CHARS}")
    return key, tuples_from_lists(parse_value(text))


def parse_scenario_overrides(items: list[str]) -> dict[str, Any]:
    """Several ``field=value`` items -> a dict of scenario overrides (later items win)."""
    return dict(parse_override(item) for item in items)
