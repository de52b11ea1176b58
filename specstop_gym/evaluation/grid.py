"""Experiment grids as data: a TOML file (or ``evaluate.py`` flags) naming scenarios, ``--set``
overrides, named variants, constant delays, delay traces, agents and seed blocks; expanded into
cells, each a pure function of its configuration (:mod:`specstop_gym.evaluation.cell`) keyed by a
hash of that configuration and of the code version.

A grid file (docs/evaluation.md, "Grids", has the table of keys)::

    name = "my-grid"                  # the default output folder is results/<name>
    seeds = 16                        # defaults for every experiment below
    seed_block = 8                    # cells of 8 seeds: 2 cells per point

    [[experiment]]
    name = "delays"
    scenarios = ["qwen-geometric", "llama-heavy-head"]
    agents = ["ucb-specstop", "specdec++", "oracle"]
    delays_ms = [25, 100, 400]        # channel = constant at each delay
    requests = 8
    level = "token"
    set = { n_tokens = 128 }

    [[experiment]]
    name = "traces"
    scenarios = ["qwen-geometric"]
    traces = ["delay/starlink_isl_ping.csv"]   # channel = trace, delay_trace = each path
    agents = ["ucb-specstop", "oracle"]

Cells are the product, in this order, of scenarios x variants x the channel axis (``delays_ms``,
``critical_delay_factors`` or ``traces``) x seed blocks; every agent of a cell runs on the same
seeds (common random numbers) and the oracle is always run. Overrides apply in this order (later
wins): ``requests``, the grid's ``set``, the experiment's ``set``, the variant's ``set``, the
channel axis.

Validation happens before any work and reports the first problem in one line naming the file,
the line and the key (``grid.toml:12: experiment 'delays': delays_ms: ...``), as
:class:`~specstop_gym.cli.UsageError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cli import MAX_SEED, MAX_SEEDS, UsageError
from .cell import CellSpec

GRID_SCHEMA_VERSION = 1
"""Version of the grid file format and of the grid's output layout."""
MAX_GRID_BYTES = 1 << 20
MAX_CELLS = 100_000
MAX_EXPERIMENTS = 1_000
MAX_AXIS = 1_000
"""Most values of one axis (scenarios, variants, delays, traces, factors)."""
MAX_AGENTS = 64
_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+ ,-]{0,99}")

GRID_KEYS = ("name", "description", "rounds_table", "experiment")
EXPERIMENT_KEYS = ("name", "scenarios", "agents", "seeds", "seed_block", "level", "requests", "rounds", "set",
                   "delays_ms", "critical_delay_factors", "traces", "variants")
DEFAULT_KEYS = tuple(k for k in EXPERIMENT_KEYS if k not in ("name", "variants"))
"""Experiment keys that may also stand at the top of the file, as defaults for every experiment."""
VARIANT_KEYS = ("name", "set", "agents")
AXES = ("delays_ms", "critical_delay_factors", "traces")


# ----------------------------------------------------------------------------- specification
@dataclass(frozen=True)
class Variant:
    """A named set of scenario overrides (one value of an experiment's ``variants`` axis); its
    ``agents``, when given, replace the experiment's."""

    name: str
    set: Mapping[str, Any] = field(default_factory=dict)
    agents: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Experiment:
    """One block of a grid: the product of its axes (module docstring)."""

    name: str
    scenarios: tuple[str, ...] = ("qwen-geometric",)
    agents: tuple[str, ...] = ("ucb-specstop", "oracle")
    seeds: tuple[int, ...] = tuple(range(8))
    seed_block: int | None = None
    level: str = "round"
    requests: int | None = None
    rounds: int | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    delays_ms: tuple[float, ...] | None = None
    critical_delay_factors: tuple[float, ...] | None = None
    traces: tuple[str, ...] | None = None
    variants: tuple[Variant, ...] = ()


@dataclass(frozen=True)
class Grid:
    """A grid: experiments, and whether the cells record their rounds."""

    name: str
    experiments: tuple[Experiment, ...]
    description: str = ""
    rounds_table: bool = True
    source: str = "<flags>"
    """Where the grid came from (a file path, or ``<flags>``), for messages."""
    locate: Any = None
    """``locate(path) -> line`` for messages (None: no line numbers)."""


@dataclass(frozen=True)
class Cell:
    """One cell: its coordinates in the grid, what it computes and its cache key."""

    index: int
    experiment: str
    scenario: str
    variant: str | None
    delay_ms: float | None
    trace: str | None
    block: int
    spec: CellSpec
    key: str
    n_blocks: int = 1

    @property
    def label(self) -> str:
        """``experiment/scenario[/variant][/delay ms | /trace][/seeds a..b]``."""
        parts = [self.experiment, self.scenario]
        if self.variant is not None:
            parts.append(self.variant)
        if self.delay_ms is not None:
            parts.append(f"{self.delay_ms:g} ms")
        if self.trace is not None:
            parts.append(Path(self.trace).name)
        if self.n_blocks > 1:
            parts.append(f"seeds {self.spec.seeds[0]}..{self.spec.seeds[-1]}")
        return "/".join(parts)

    def coordinates(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "scenario": self.scenario, "variant": self.variant,
                "delay_ms": self.delay_ms, "trace": self.trace, "block": self.block,
                "seeds": list(self.spec.seeds), "level": self.spec.level, "agents": list(self.spec.agents)}


# ----------------------------------------------------------------------------- loading a file
class _Where:
    """Error messages naming the file, the line and the key."""

    def __init__(self, source: str, locate: Any) -> None:
        self.source, self.locate = source, locate

    def error(self, path: Sequence[Any], message: str) -> UsageError:
        line = self.locate(tuple(path)) if self.locate else None
        where = f"{self.source}:{line}" if line else self.source
        return UsageError(f"{where}: {_path_text(path)}: {message}")


def _path_text(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p + 1}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "grid"


def line_locator(text: str) -> Any:
    """``locate(path) -> line number`` for a TOML text: the line that sets the key (or opens the
    table) at ``path`` (``("experiment", 0, "delays_ms")``; array-of-tables entries by index), or
    of its nearest parent; None when nothing matches."""
    lines: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
    keyline = re.compile(r"^\s*(\"[^\"]*\"|[A-Za-z0-9_\-]+)\s*=")
    for no, raw in enumerate(text.splitlines(), start=1):
        m = header.match(raw)
        if m:
            parts = [p.strip().strip('"') for p in m.group(2).split(".")]
            resolved: list[Any] = []
            for i, part in enumerate(parts):
                resolved.append(part)
                prefix = tuple(resolved)
                if m.group(1) == "[[" and i == len(parts) - 1:
                    counts[prefix] = counts.get(prefix, -1) + 1
                    resolved.append(counts[prefix])
                elif prefix in counts:  # a sub-table of the latest entry of an array of tables
                    resolved.append(counts[prefix])
            table = tuple(resolved)
            lines.setdefault(table, no)
            continue
        k = keyline.match(raw)
        if k:
            lines.setdefault(table + (k.group(1).strip('"'),), no)

    def locate(path: tuple[Any, ...]) -> int | None:
        p = tuple(path)
        while p:
            if p in lines:
                return lines[p]
            p = p[:-1]
        return None

    return locate


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file (TOML); :class:`UsageError` naming file, line and key."""
    p = Path(path)
    try:
        if not p.is_file():
            raise UsageError(f"{path}: no such grid file")
        if p.stat().st_size > MAX_GRID_BYTES:
            raise UsageError(f"{path}: a grid file is at most {MAX_GRID_BYTES} bytes")
        raw = p.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the grid file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_grid(text, str(path), default_name=p.stem)


def _toml() -> Any:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib


def parse_grid(text: str, source: str = "<grid>", default_name: str = "grid") -> Grid:
    """A grid from TOML text (see :func:`load_grid`)."""
    tomllib = _toml()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = m.group(1) if m else (str(max(1, len(text.splitlines()))) if "end of document" in msg else None)
        where = f"{source}:{line}" if line else source
        raise UsageError(f"{where}: invalid TOML: {re.sub(r' *[(]at (line|end of document).*[)]', '', msg)}") from None
    return grid_from_dict(doc, source, line_locator(text), default_name=default_name)


def grid_from_dict(doc: Mapping[str, Any], source: str = "<grid>", locate: Any = None,
                   default_name: str = "grid") -> Grid:
    """A grid from its parsed document (the TOML tables as dicts)."""
    w = _Where(source, locate)
    _check_keys(w, (), doc, GRID_KEYS + DEFAULT_KEYS)
    name = _name(w, ("name",), doc.get("name", default_name))
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > 10_000:
        raise w.error(("description",), "must be a string of at most 10000 characters")
    rounds_table = doc.get("rounds_table", True)
    if not isinstance(rounds_table, bool):
        raise w.error(("rounds_table",), f"must be true or false, got {rounds_table!r}")
    defaults = {k: doc[k] for k in DEFAULT_KEYS if k in doc}
    raw_exps = doc.get("experiment")
    if raw_exps is None:
        raw_exps, single = [{"name": name}], True
    else:
        single = False
        if not isinstance(raw_exps, list) or not raw_exps or not all(isinstance(e, dict) for e in raw_exps):
            raise w.error(("experiment",), "must be one or more [[experiment]] tables")
    if len(raw_exps) > MAX_EXPERIMENTS:
        raise w.error(("experiment",), f"at most {MAX_EXPERIMENTS} experiments, got {len(raw_exps)}")
    experiments = []
    for i, raw in enumerate(raw_exps):
        base: tuple[Any, ...] = () if single else ("experiment", i)
        if not single:
            _check_keys(w, base, raw, EXPERIMENT_KEYS)
        merged = {**defaults, **raw}
        if "set" in defaults and "set" in raw:
            _mapping(w, ("set",), defaults["set"])
            _mapping(w, base + ("set",), raw["set"])
            merged["set"] = {**defaults["set"], **raw["set"]}
        paths = {k: (base + (k,) if k in raw or single else (k,)) for k in merged}
        experiments.append(_experiment(w, base, merged, paths))
    names = [e.name for e in experiments]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise w.error(("experiment", len(names) - 1 - names[::-1].index(dup), "name"),
                      f"two experiments are named {dup!r}")
    return Grid(name=name, experiments=tuple(experiments), description=description, rounds_table=rounds_table,
                source=source, locate=locate)


def _check_keys(w: _Where, path: tuple[Any, ...], table: Mapping[str, Any], valid: Sequence[str]) -> None:
    for key in table:
        if key not in valid:
            raise w.error(path + (key,), f"unknown key; valid keys: {', '.join(valid)}")


def _name(w: _Where, path: tuple[Any, ...], value: Any) -> str:
    if value is None:
        raise w.error(path, "missing: every experiment and variant needs a name")
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value.strip() != value:
        raise w.error(path, f"must be 1-100 characters of letters, digits and . _ + - , or space (not first), "
                            f"got {str(value)[:60]!r}")
    return value


def _mapping(w: _Where, path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise w.error(path, f"must be a table of scenario fields (set = {{ field = value }}), got {value!r:.60}")
    from ..cli import tuples_from_lists
    from ..core.config import field_names

    valid = field_names()
    for key in value:
        if key not in valid:
            raise w.error(path + (key,), f"unknown scenario field; valid: {', '.join(valid)}")
    return {k: tuples_from_lists(v) for k, v in value.items()}


def _str_list(w: _Where, path: tuple[Any, ...], value: Any, what: str, limit: int = MAX_AXIS) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and 0 < len(v) <= 4096 for v in value):
        raise w.error(path, f"must be a non-empty list of {what} (strings)")
    if len(value) > limit:
        raise w.error(path, f"at most {limit} entries, got {len(value)}")
    if len(set(value)) != len(value):
        raise w.error(path, f"lists {next(v for v in value if value.count(v) > 1)!r} twice")
    return tuple(value)


def _num_list(w: _Where, path: tuple[Any, ...], value: Any, lo: float, hi: float, unit: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise w.error(path, "must be a non-empty list of numbers")
    if len(value) > MAX_AXIS:
        raise w.error(path, f"at most {MAX_AXIS} values, got {len(value)}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise w.error(path, f"every value must be a finite number in [{lo:g}, {hi:g}]{unit}, got {v!r}")
        out.append(float(v))
    if len(set(out)) != len(out):
        raise w.error(path, "lists a value twice")
    return tuple(out)


def _int(w: _Where, path: tuple[Any, ...], value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise w.error(path, f"must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _seeds(w: _Where, path: tuple[Any, ...], value: Any) -> tuple[int, ...]:
    """``8`` (seeds 0..7), ``[0, 5, 9]`` or ``"0-7,20"`` (ranges)."""
    from ..cli import parse_seeds

    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(_int(w, path, value, 1, MAX_SEEDS)))
    if isinstance(value, list):
        if not value or len(value) > MAX_SEEDS:
            raise w.error(path, f"a list of 1..{MAX_SEEDS} seeds")
        for v in value:
            _int(w, path, v, 0, MAX_SEED)
        if len(set(value)) != len(value):
            raise w.error(path, "lists a seed twice")
        return tuple(value)
    if isinstance(value, str):
        try:
            return tuple(parse_seeds([value], flag="seeds"))
        except UsageError as e:
            raise w.error(path, str(e).removeprefix("seeds: ")) from None
    raise w.error(path, f"must be a number of seeds, a list of seeds or a string of ranges (\"0-7,20\"), got {value!r}")


def _experiment(w: _Where, base: tuple[Any, ...], raw: Mapping[str, Any], paths: Mapping[str, tuple[Any, ...]]
                ) -> Experiment:
    from ..core.config import BOUNDS, MAX_DELAY_MS

    name = _name(w, base + ("name",), raw.get("name"))
    kw: dict[str, Any] = {"name": name}
    if "scenarios" in raw:
        kw["scenarios"] = _str_list(w, paths["scenarios"], raw["scenarios"], "scenario presets")
    if "agents" in raw:
        kw["agents"] = _agents(w, paths["agents"], raw["agents"])
    if "seeds" in raw:
        kw["seeds"] = _seeds(w, paths["seeds"], raw["seeds"])
    if "seed_block" in raw:
        kw["seed_block"] = _int(w, paths["seed_block"], raw["seed_block"], 1, MAX_SEEDS)
    if "level" in raw:
        if raw["level"] not in ("round", "token"):
            raise w.error(paths["level"], f"must be \"round\" or \"token\", got {raw['level']!r}")
        kw["level"] = raw["level"]
    if "requests" in raw:
        kw["requests"] = _int(w, paths["requests"], raw["requests"], 1, int(BOUNDS["requests_per_episode"].hi))
    if "rounds" in raw:
        kw["rounds"] = _int(w, paths["rounds"], raw["rounds"], 1, 10**9)
    if "set" in raw:
        kw["set"] = _mapping(w, paths["set"], raw["set"])
    axes = [a for a in AXES if a in raw]
    if len(axes) > 1:
        raise w.error(paths[axes[1]], f"one channel axis per experiment; {axes[0]} is given too")
    if "delays_ms" in raw:
        kw["delays_ms"] = _num_list(w, paths["delays_ms"], raw["delays_ms"], 0.0, MAX_DELAY_MS, " ms")
    if "critical_delay_factors" in raw:
        kw["critical_delay_factors"] = _num_list(w, paths["critical_delay_factors"], raw["critical_delay_factors"],
                                                 0.0, 1000.0, "")
    if "traces" in raw:
        kw["traces"] = _str_list(w, paths["traces"], raw["traces"], "delay trace paths")
    if "variants" in raw:
        vs = raw["variants"]
        if not isinstance(vs, list) or not vs or not all(isinstance(v, dict) for v in vs):
            raise w.error(paths["variants"], "must be one or more [[experiment.variants]] tables")
        if len(vs) > MAX_AXIS:
            raise w.error(paths["variants"], f"at most {MAX_AXIS} variants, got {len(vs)}")
        variants = []
        for j, v in enumerate(vs):
            vp = paths["variants"] + (j,)
            _check_keys(w, vp, v, VARIANT_KEYS)
            variants.append(Variant(name=_name(w, vp + ("name",), v.get("name")),
                                    set=_mapping(w, vp + ("set",), v.get("set", {})),
                                    agents=_agents(w, vp + ("agents",), v["agents"]) if "agents" in v else None))
        vnames = [v.name for v in variants]
        if len(set(vnames)) != len(vnames):
            raise w.error(paths["variants"], f"two variants are named {next(n for n in vnames if vnames.count(n) > 1)!r}")
        kw["variants"] = tuple(variants)
    return Experiment(**kw)


def _agents(w: _Where, path: tuple[Any, ...], value: Any) -> tuple[str, ...]:
    specs = _str_list(w, path, value, "agent specs", limit=MAX_AGENTS)
    return tuple(s.strip() for s in specs)


# ----------------------------------------------------------------------------- from flags
def grid_from_flags(name: str, *, scenarios: Sequence[str], agents: Sequence[str], seeds: Sequence[int],
                    seed_block: int | None, level: str, requests: int | None, rounds: int | None,
                    overrides: Mapping[str, Any], delays_ms: Sequence[float] | None,
                    traces: Sequence[str] | None, rounds_table: bool = True) -> Grid:
    """The one-experiment grid that ``evaluate.py``'s flags describe (already range-checked)."""
    if len(set(delays_ms or ())) != len(delays_ms or ()):
        raise UsageError("--grid-delays lists a delay twice")
    if len(set(traces or ())) != len(traces or ()):
        raise UsageError("--grid-traces lists a trace twice")
    exp = Experiment(name=name, scenarios=tuple(scenarios), agents=tuple(a.strip() for a in agents),
                     seeds=tuple(seeds), seed_block=seed_block, level=level, requests=requests, rounds=rounds,
                     set=dict(overrides), delays_ms=tuple(delays_ms) if delays_ms else None,
                     traces=tuple(traces) if traces else None)
    return Grid(name=name, experiments=(exp,), rounds_table=rounds_table, source="<flags>")


# ----------------------------------------------------------------------------- cells
def cell_key(spec: CellSpec, code: str) -> str:
    """The cache key of a cell: the first 24 hex digits of a sha256 over its configuration (every
    scenario field except the free-text ``description``/``sources``; the agents, seeds, level,
    round cap, whether rounds are recorded; the sha256 of each trace file and sb3 model it reads)
    and the code version ``code`` (:func:`specstop_gym.evaluation.cell.code_key`)."""
    from ..traces.manifest import sha256_file

    cfg = spec.scenario.to_dict()
    for k in ("description", "sources"):
        cfg.pop(k, None)
    files = {}
    for fld in ("delay_trace", "acceptance_trace"):
        path = cfg.get(fld)
        if path:
            from ..scenarios import resolve_data_path

            files[fld] = sha256_file(resolve_data_path(path))
    for a in spec.agents:
        if a.startswith("sb3:"):
            files[a] = _sb3_sha(a[4:])
    doc = {"scenario": cfg, "agents": list(spec.agents), "seeds": list(spec.seeds), "level": spec.level,
           "max_rounds": spec.max_rounds, "rounds": spec.rounds, "files": files, "code": code,
           "grid_schema": GRID_SCHEMA_VERSION}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return repr(v)


def _sb3_sha(path: str) -> str:
    from ..traces.manifest import sha256_file

    p = Path(path)
    if p.is_dir():
        p = p / "model.zip"
    try:
        return sha256_file(p)
    except OSError:
        return "unreadable"


def expand(grid: Grid, code: str) -> list[Cell]:
    """Every cell of the grid, validated (scenarios, overrides, traces, agents), in grid order.

    Raises :class:`UsageError` naming the file, line and key of the first problem.
    """
    from agents.registry import agent_names

    from ..core.config import MAX_DELAY_MS, ConfigError
    from ..scenarios import build_acceptance, build_channel, make_scenario, scenario_names
    from .report import BEST_FIXED_K, ORACLE, spec_name

    w = _Where(grid.source, grid.locate)
    flags = grid.source == "<flags>"
    cells: list[Cell] = []
    valid_agents = agent_names() + [BEST_FIXED_K]
    checked_agents: set[tuple[str, str]] = set()
    checked_channels: set[str] = set()
    for ei, exp in enumerate(grid.experiments):
        ep: tuple[Any, ...] = ("experiment", ei) if len(grid.experiments) > 1 or not flags else ()

        def where(key: str, *more: Any, _ep: tuple[Any, ...] = ep) -> tuple[Any, ...]:
            return _ep + (key, *more)

        for s in exp.scenarios:
            if s not in scenario_names():
                raise _err(w, flags, "--scenarios", where("scenarios"),
                           f"unknown scenario {s!r}; valid scenarios: {', '.join(scenario_names())}")
        variants: Sequence[Variant | None] = exp.variants or (None,)
        for v in variants:
            for label in (v.agents if v is not None and v.agents is not None else exp.agents):
                name = spec_name(label)
                if name not in valid_agents and name != "sb3":
                    raise _err(w, flags, "--agents", where("agents"),
                               f"unknown agent {name!r}; valid agents: {', '.join(valid_agents)} (and sb3:PATH)")
                if name == BEST_FIXED_K and label != BEST_FIXED_K:
                    raise _err(w, flags, "--agents", where("agents"), f"best-fixed-k takes no parameters, got {label!r}")
        blocks = _blocks(exp)
        for scen in exp.scenarios:
            for vi, var in enumerate(variants):
                ov: dict[str, Any] = {}
                if exp.requests is not None:
                    ov["requests_per_episode"] = exp.requests
                ov.update(exp.set)
                vpath = where("set")
                if var is not None:
                    ov.update(var.set)
                    vpath = where("variants", vi, "set")
                try:
                    base = make_scenario(scen, **ov)
                except (ConfigError, ValueError, TypeError) as e:
                    raise _err(w, flags, "--set", vpath, f"scenario {scen!r}: {e}") from None
                points: list[tuple[dict[str, Any], float | None, str | None, tuple[Any, ...]]]
                if exp.delays_ms is not None:
                    points = [({"channel": "constant", "delay_ms": d}, d, None, where("delays_ms"))
                              for d in exp.delays_ms]
                elif exp.critical_delay_factors is not None:
                    d_c = critical_delay_of(base)
                    points = []
                    for f in exp.critical_delay_factors:
                        d = round(d_c * f, 1)
                        if not (math.isfinite(d) and 0.0 <= d <= MAX_DELAY_MS):
                            raise w.error(where("critical_delay_factors"),
                                          f"{f:g} x D_c = {d} ms is outside [0, {MAX_DELAY_MS:g}] ms")
                        points.append(({"channel": "constant", "delay_ms": d}, d, None,
                                       where("critical_delay_factors")))
                elif exp.traces is not None:
                    points = [({"channel": "trace", "delay_trace": t}, None, t, where("traces")) for t in exp.traces]
                else:
                    points = [({}, None, None, vpath)]
                agents = var.agents if var is not None and var.agents is not None else exp.agents
                for axis_ov, delay, trace, apath in points:
                    try:
                        cfg = base.replace(**axis_ov) if axis_ov else base
                        ident = json.dumps(cfg.to_dict(), sort_keys=True, default=_json_default)
                        if ident not in checked_channels:
                            build_acceptance(cfg)
                            build_channel(cfg)
                            checked_channels.add(ident)
                    except (ConfigError, ValueError, TypeError, OSError) as e:
                        raise _err(w, flags, "--grid-traces" if trace else "--set", apath,
                                   f"scenario {scen!r}: {e}") from None
                    always = [] if any(spec_name(a) == ORACLE for a in agents) else [ORACLE]  # always run
                    for label in [*agents, *always]:
                        if spec_name(label) == BEST_FIXED_K:
                            continue
                        ck = (label, ident, len(blocks[0]))
                        if ck in checked_agents:
                            continue
                        try:
                            check_agent(label, cfg, len(blocks[0]), blocks[0][0])
                        except (ValueError, TypeError, OSError, ImportError, KeyError, OverflowError) as e:
                            what = ("the oracle (always run as the reference)" if label in always
                                    else f"agent {label!r}")
                            raise _err(w, flags, "--agents", apath if label in always else where("agents"),
                                       f"{what} on scenario {scen!r}: {e}") from None
                        checked_agents.add(ck)
                    for bi, seeds in enumerate(blocks):
                        spec = CellSpec(scenario=cfg, agents=tuple(agents), seeds=tuple(seeds), level=exp.level,
                                        max_rounds=exp.rounds, rounds=grid.rounds_table)
                        cells.append(Cell(index=len(cells), experiment=exp.name, scenario=scen,
                                          variant=var.name if var is not None else None, delay_ms=delay,
                                          trace=trace, block=bi, spec=spec, key=cell_key(spec, code),
                                          n_blocks=len(blocks)))
                        if len(cells) > MAX_CELLS:
                            raise w.error(("experiment",) if not flags else (), f"more than {MAX_CELLS} cells")
    return cells


def check_agent(label: str, cfg: Any, n_runs: int, seed: int) -> None:
    """Build an agent as a cell would, to check its spec on the scenario (ValueError etc. naming
    the problem); the oracle on a drift or trace channel is checked without solving its path DP
    (tens of seconds, which each cell does anyway): its parameters on a constant channel, the DP's
    size on the real one (``specstop_gym.path_oracle.check_problem_size``, as the agent does)."""
    from .report import ORACLE, build_agent, spec_name

    if spec_name(label) != ORACLE or cfg.channel not in ("drift", "trace"):
        build_agent(label, cfg, n_runs, seed)
        return
    from ..path_oracle import check_problem_size, path_from_channel
    from ..scenarios import build_acceptance, build_channel

    agent = build_agent(label, cfg.replace(channel="constant"), n_runs, seed)
    tx = 0.0 if cfg.bandwidth_kbps is None or cfg.bytes_per_token == 0 else cfg.bytes_per_token * 8.0 / cfg.bandwidth_kbps
    check_problem_size(build_acceptance(cfg).survival(cfg.max_draft), path_from_channel(build_channel(cfg)),
                       n_tokens=cfg.n_tokens, n_requests=cfg.requests_per_episode, draft_ms=cfg.draft_ms,
                       verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms,
                       tx_per_token_ms=tx, grid_ms=agent.grid_ms)


def _err(w: _Where, flags: bool, flag: str, path: tuple[Any, ...], message: str) -> UsageError:
    return UsageError(f"{flag}: {message}") if flags else w.error(path, message)


def _blocks(exp: Experiment) -> list[tuple[int, ...]]:
    n = exp.seed_block or len(exp.seeds)
    return [exp.seeds[i:i + n] for i in range(0, len(exp.seeds), n)]


def critical_delay_of(cfg: Any) -> float:
    """The critical delay D_c of a scenario (SPEC 4), ms: the delay above which k* >= 2."""
    from ..oracle import critical_delay
    from ..scenarios import build_acceptance

    surv = build_acceptance(cfg).survival(cfg.max_draft)
    return float(critical_delay(surv, draft_ms=cfg.marginal_cost_ms, verify_base_ms=cfg.verify_base_ms,
                                verify_per_token_ms=0.0))


def grid_document(grid: Grid) -> dict[str, Any]:
    """The grid as a plain dict (written to the output folder as grid.json: what was run)."""
    def exp_doc(e: Experiment) -> dict[str, Any]:
        d = {"name": e.name, "scenarios": list(e.scenarios), "agents": list(e.agents), "seeds": list(e.seeds),
             "seed_block": e.seed_block, "level": e.level, "requests": e.requests, "rounds": e.rounds,
             "set": dict(e.set), "delays_ms": e.delays_ms, "critical_delay_factors": e.critical_delay_factors,
             "traces": e.traces,
             "variants": [{"name": v.name, "set": dict(v.set), "agents": v.agents} for v in e.variants]}
        return d
    return {"name": grid.name, "description": grid.description, "rounds_table": grid.rounds_table,
            "source": grid.source, "experiments": [exp_doc(e) for e in grid.experiments],
            "schema_version": GRID_SCHEMA_VERSION}


def with_rounds_table(grid: Grid, rounds_table: bool) -> Grid:
    return replace(grid, rounds_table=rounds_table)


__all__ = ["Cell", "Experiment", "GRID_SCHEMA_VERSION", "Grid", "Variant", "cell_key", "critical_delay_of",
           "expand", "grid_document", "grid_from_dict", "grid_from_flags", "line_locator", "load_grid",
           "parse_grid"]
