"""Results files of an evaluation: the summary document, the per-round table, atomic writes.

Everything ``evaluate.py`` writes goes through :mod:`specstop_gym.fileio` (temporary file in the
destination folder, ``fsync``, ``os.replace``): an interrupted or killed run never leaves a
half-written file under its final name. The rounds of every agent are streamed to
``rounds.parquet`` (:class:`RoundsFile`, a :class:`specstop_gym.dataset.DatasetWriter`) as
they are produced, so memory does not grow with the number of seeds.

The schema of ``summary.json`` and of the rounds table is documented in docs/evaluation.md
and versioned by :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import fileio
from ..core.config import ScenarioConfig
from ..dataset import DatasetWriter, iter_dataset
from .metrics import (
    add_regret,
    confidence_interval,
    final_per_seed,
    is_stationary,
    reference_rho,
    summarize,
)
from .runner import BEST_FIXED_K, AgentRun, run_agent, run_best_fixed_k
from .stream import ROUND_COLUMNS, RoundRecorder, Sink

SCHEMA_VERSION = 2
"""Version of the summary.json layout (bumped on any incompatible change)."""

ROUNDS_SCHEMA: tuple[tuple[str, str], ...] = (
    ("scenario", "string"), ("agent", "string"), ("seed", "int64"), ("round", "int32"), ("k", "int32"),
    ("accepted", "int32"), ("tokens", "int32"), ("time_ms", "float64"), ("rtt_ms", "float64"), ("state", "int32"),
    ("start_ms", "float64"), ("regret_ms", "float64"), ("pseudo_regret_ms", "float64"))
"""Columns and types of the rounds table (rounds.parquet); ``pseudo_regret_ms`` only for
stationary scenarios."""
ROUNDS_CSV_COLUMNS = tuple(c for c, _ in ROUNDS_SCHEMA)
ROUNDS_FORMATS = {"parquet": "rounds.parquet", "csv.gz": "rounds.csv.gz", "csv": "rounds.csv"}
"""File name of the rounds table per ``--rounds-format``."""


ORACLE = "oracle"
"""Registry name of the clairvoyant oracle agent (the reference of gaps and regret)."""

ProgressFn = Callable[[int], None]


# --------------------------------------------------------------------------- comparisons
def spec_name(spec: str) -> str:
    """The agent name of a spec (``"static-k:k=4"`` -> ``"static-k"``; ``"sb3:PATH"`` -> ``"sb3"``)."""
    return spec.strip().partition(":")[0].strip()


@dataclass
class Comparison:
    """Runs of several agents on one scenario and the same seeds, with regret columns attached."""

    scenario: ScenarioConfig
    seeds: np.ndarray
    level: str
    max_rounds: int | None
    runs: dict[str, AgentRun]
    specs: dict[str, str]
    oracle_label: str
    requested: list[str]
    reference: tuple[np.ndarray, str]
    timing: dict[str, float] = field(default_factory=dict)

    def latency(self, label: str) -> np.ndarray:
        """Per-seed per-token latency (ms/token) of one agent."""
        return self.runs[label].per_token_latency_ms


def build_agent(spec: str, scenario: ScenarioConfig, n_runs: int, seed: int) -> Any:
    """An online agent from its spec, through the registry untouched (so ``sb3:PATH`` specs work
    as soon as the registry builds them)."""
    from agents.registry import make_agent

    return make_agent(spec, scenario, n_runs=n_runs, seed=seed)


def run_comparison(scenario: ScenarioConfig, specs: Sequence[str], seeds: Sequence[int], *, level: str = "round",
                   max_rounds: int | None = None, agent_seed: int | None = None,
                   prebuilt: Mapping[str, Any] | None = None, on_round: ProgressFn | None = None,
                   on_agent: Callable[[str, float], None] | None = None, rounds: RoundsFile | None = None,
                   keep_rounds: bool = True) -> Comparison:
    """Run every spec on ``scenario`` with the same ``seeds`` (common random numbers), with regret.

    The oracle is always run (added when ``specs`` has none), first: it is the reference of the
    gap and, on non-stationary channels, of the regret (its realised per-token latency per seed),
    so every other agent's regret is computed while it runs. ``best-fixed-k`` is run by the
    runner itself (static-k for every k, best in hindsight per seed); every other spec goes
    through :func:`agents.registry.make_agent` unchanged. ``prebuilt`` maps labels to agents
    already built (for ``len(seeds)`` runs) during validation.

    ``rounds``: stream every round to this table as it is produced (then ``keep_rounds=False``
    keeps memory independent of the number of seeds); on a non-stationary channel the oracle's
    rounds go to a temporary file first and are copied with their regret once its latency is
    known. ``keep_rounds``: keep the records in ``AgentRun.columns`` (library use).
    """
    seeds_arr = np.asarray(list(seeds), dtype=np.int64)
    labels = [s.strip() for s in specs]
    oracle_label = next((lab for lab in labels if spec_name(lab) == ORACLE), None)
    requested = list(labels)
    if oracle_label is None:
        oracle_label = ORACLE
        labels.append(ORACLE)
    seed0 = int(seeds_arr[0]) if agent_seed is None else int(agent_seed)
    stationary = is_stationary(scenario)
    rho_ref, ref_desc = reference_rho(scenario, None) if stationary else (None, "")
    if rho_ref is not None:
        rho_ref = np.full(len(seeds_arr), float(rho_ref[0]))
    runs: dict[str, AgentRun] = {}
    timing: dict[str, float] = {}

    def sink(label: str) -> Sink | None:
        return rounds.sink(label) if rounds is not None else None

    def run_one(label: str, rho: np.ndarray | None, out: Sink | None, keep: bool) -> AgentRun:
        if spec_name(label) == BEST_FIXED_K:
            return run_best_fixed_k(scenario, seeds_arr, max_rounds=max_rounds, on_round=on_round, keep_rounds=keep,
                                    rho_ref=rho, sink=out)
        agent = (prebuilt or {}).get(label) or build_agent(label, scenario, len(seeds_arr), seed0)
        return run_agent(agent, scenario, seeds_arr, level=level, max_rounds=max_rounds, on_round=on_round,
                         keep_rounds=keep, rho_ref=rho, sink=out)

    for label in [oracle_label] + [lab for lab in labels if lab != oracle_label]:
        t0 = time.perf_counter()
        if label == oracle_label and rho_ref is None:
            # the regret reference is this run's own latency: record first, add the regret after
            if rounds is None:
                run = run_one(label, None, None, True)
                rho_ref, ref_desc = reference_rho(scenario, run)
                add_regret(run, rho_ref, scenario)
                if not keep_rounds:
                    run.columns = None
            else:
                with rounds.spill(seeds_arr) as spill:
                    run = run_one(label, None, spill.sink, False)
                    rho_ref, ref_desc = reference_rho(scenario, run)
                    run.stats = spill.replay(run.seeds, rho_ref, scenario, rounds.sink(label))
        else:
            run = run_one(label, rho_ref, sink(label), keep_rounds)
        timing[label] = time.perf_counter() - t0
        runs[label] = run
        if on_agent:
            on_agent(label, timing[label])
    runs = {lab: runs[lab] for lab in labels}  # report in the order given (the oracle last if added)
    assert rho_ref is not None
    return Comparison(scenario=scenario, seeds=seeds_arr, level=level, max_rounds=max_rounds, runs=runs,
                      specs={lab: lab for lab in labels}, oracle_label=oracle_label, requested=requested,
                      reference=(rho_ref, ref_desc), timing=timing)


def default_sweep_delays() -> list[float]:
    """The default delay grid of the sweep: 8 points, log-spaced from 10 to 2000 ms."""
    return [float(round(d, 1)) for d in np.geomspace(10.0, 2000.0, 8)]


def exact_delay_curve(scenario: ScenarioConfig, delays_ms: Sequence[float]) -> dict[str, Any]:
    """The oracle's k*(D) and rho*(D) at constant delays D (SPEC 4), plus D_c."""
    from ..oracle import optimal_k_for_costs
    from ..scenarios import build_acceptance

    survival = build_acceptance(scenario).survival(scenario.max_draft)
    c = scenario.marginal_cost_ms
    ks, rhos = [], []
    for d in delays_ms:
        k, rho = optimal_k_for_costs(survival, c, float(d) + scenario.verify_base_ms)
        ks.append(int(k))
        rhos.append(float(rho))
    return {"delays_ms": [float(d) for d in delays_ms], "k_star": ks, "rho_star_ms": rhos}


def delay_sweep(scenario: ScenarioConfig, specs: Sequence[str], delays_ms: Sequence[float], seeds: Sequence[int], *,
                requests: int = 1, level: str = "round", on_round: ProgressFn | None = None,
                on_point: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Short runs of every agent at each constant delay (channel replaced by ``constant``).

    The acceptance process and the costs are the scenario's; the channel becomes a constant rtt
    of ``D`` ms and each run serves ``requests`` requests. ``best-fixed-k`` is skipped (on a
    constant channel it is the oracle's k* up to noise, at K times the cost). Returns the
    ``sweep`` section of summary.json.
    """
    from ..oracle import critical_delay
    from ..scenarios import build_acceptance

    specs = [s for s in specs if spec_name(s) != BEST_FIXED_K]
    per_agent: dict[str, Any] = {}
    for d in delays_ms:
        sc = scenario.replace(channel="constant", delay_ms=float(d), requests_per_episode=int(requests))
        comp = run_comparison(sc, specs, seeds, level=level, on_round=on_round, keep_rounds=False)
        for label, run in comp.runs.items():
            e = per_agent.setdefault(label, {"per_token_latency_ms": [], "per_seed_latency_ms": [],
                                             "gap_to_oracle_pct": []})
            lat = run.per_token_latency_ms
            e["per_token_latency_ms"].append(confidence_interval(lat))
            e["per_seed_latency_ms"].append(lat)
            gap = (lat - comp.latency(comp.oracle_label)) / comp.latency(comp.oracle_label) * 100.0
            e["gap_to_oracle_pct"].append(confidence_interval(gap))
        if on_point:
            on_point(float(d))
    survival = build_acceptance(scenario).survival(scenario.max_draft)
    c = scenario.marginal_cost_ms
    d_c = critical_delay(survival, draft_ms=c, verify_base_ms=scenario.verify_base_ms, verify_per_token_ms=0.0)
    lo, hi = min(delays_ms), max(delays_ms)
    fine = np.unique(np.r_[np.geomspace(max(lo, 1e-3), hi, 400), [d_c] if lo <= d_c <= hi else []])
    at_grid = exact_delay_curve(scenario, delays_ms)
    return {
        "delays_ms": [float(d) for d in delays_ms],
        "channel": "constant",
        "requests_per_episode": int(requests),
        "seeds": [int(s) for s in seeds],
        "critical_delay_ms": d_c,
        "k_star": at_grid["k_star"],
        "rho_star_ms": at_grid["rho_star_ms"],
        "exact": exact_delay_curve(scenario, fine),
        "agents": per_agent,
    }


# --------------------------------------------------------------------------- JSON
def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`specstop_gym.fileio.atomic_write_text`)."""
    fileio.atomic_write_text(path, text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN/inf as null) to ``path`` atomically; a failure leaves
    ``path`` untouched."""
    data = to_jsonable(obj)
    fileio.atomic_write(path, lambda f: (json.dump(data, f, indent=2, allow_nan=False), f.write("\n")))


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and parents) and check that a file can be written there (OSError naming
    the folder otherwise)."""
    return fileio.check_writable(folder)


# --------------------------------------------------------------------------- rounds table
class RoundsFile:
    """The rounds table of one scenario (``rounds.parquet`` by default), written while the agents
    run: one :class:`~specstop_gym.dataset.DatasetWriter`, agents appended one after another
    (the oracle first), rows of an agent in the order they finished (by round, then seed).

    ``sink(label)`` is the callback a run streams its rounds to; ``spill()`` a temporary table
    for rounds whose regret is known only at the end of their run (the oracle's, on
    non-stationary channels). ``close()`` moves the finished file into place atomically.
    """

    def __init__(self, path: str | os.PathLike[str], scenario: ScenarioConfig, *, fmt: str = "parquet",
                 row_group_rows: int = 1 << 16) -> None:
        self.path = Path(path)
        self.scenario = scenario.name
        schema = [(c, t) for c, t in ROUNDS_SCHEMA if c != "pseudo_regret_ms" or is_stationary(scenario)]
        self.columns = [c for c, _ in schema]
        self.row_group_rows = row_group_rows
        self.writer = DatasetWriter(self.path, schema, format=fmt, row_group_rows=row_group_rows,
                                    metadata={"kind": "specstop-gym rounds", "schema_version": str(SCHEMA_VERSION),
                                              "scenario": scenario.name})

    def sink(self, label: str) -> Sink:
        writer, name = self.writer, self.scenario

        def write(batch: dict[str, np.ndarray]) -> None:
            writer.write({"scenario": name, "agent": label, **{c: batch[c] for c in self.columns[2:]}})

        return write

    def spill(self, seeds: np.ndarray) -> _Spill:
        return _Spill(self.path.parent, seeds, self.row_group_rows)

    @property
    def rows_written(self) -> int:
        return self.writer.rows_written

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class _Spill:
    """A temporary table of raw rounds (seed positions and a batch number), replayed through a
    :class:`RoundRecorder` once the regret reference is known; removed on exit."""

    SCHEMA = (("pos", "int64"), ("batch", "int64"), ("round", "int64"), ("k", "int64"), ("accepted", "int64"),
              ("tokens", "int64"), ("time_ms", "float64"), ("rtt_ms", "float64"), ("state", "int64"),
              ("start_ms", "float64"))

    def __init__(self, folder: Path, seeds: np.ndarray, row_group_rows: int) -> None:
        self.path = fileio.temporary_name(folder / "rounds-spill.parquet")
        self.writer = DatasetWriter(self.path, self.SCHEMA, row_group_rows=row_group_rows)
        self._batch = 0
        seeds = np.asarray(seeds, np.int64)
        self._sorter = np.argsort(seeds, kind="stable")
        self._sorted = seeds[self._sorter]

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.writer.abort()
        for p in (self.path, self.writer.tmp):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def sink(self, batch: dict[str, np.ndarray]) -> None:
        pos = self._sorter[np.searchsorted(self._sorted, batch["seed"])]
        self.writer.write({"pos": pos, "batch": self._batch,
                           **{c: batch[c] for c, _ in self.SCHEMA if c not in ("pos", "batch")}})
        self._batch += 1

    def replay(self, seeds: np.ndarray, rho_ref: np.ndarray, scenario: ScenarioConfig, out: Sink) -> Any:
        self.writer.close()  # moves the spill to self.path
        rec = RoundRecorder(seeds, rho_ref=rho_ref, scenario=scenario, sink=out, keep=False)
        for chunk in iter_dataset(self.path):
            cuts = np.flatnonzero(np.diff(chunk["batch"])) + 1
            for part in np.split(np.arange(len(chunk["batch"])), cuts):
                rec.add(chunk["pos"][part], {c: chunk[c][part] for c in ROUND_COLUMNS if c != "seed"})
        return rec.finish()[1]


# --------------------------------------------------------------------------- summary
def versions() -> dict[str, str]:
    """Versions of the interpreter and the packages that shape the results."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("specstop_gym", "numpy", "scipy", "gymnasium", "matplotlib", "torch", "stable_baselines3"):
        m = sys.modules.get(mod)
        if m is None and mod in ("specstop_gym", "numpy", "scipy", "gymnasium"):
            try:
                m = __import__(mod)
            except ImportError:
                m = None
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "unknown"))
    return out


ORACLE_POLICIES = {
    "constant": "finite-horizon DP over the tokens left (one channel state): the stationary k* while many "
                "tokens are left, other drafts near the end of a request",
    "iid": "finite-horizon DP over the tokens left (one channel state): the stationary k* while many tokens "
           "are left, other drafts near the end of a request",
    "markov": "DP over (tokens left, channel state), chained over the requests of the episode",
    "drift": "path DP per request over (wall-clock time, tokens committed) on the drift schedule from the "
             "request's exact start, the rest of the episode valued by the token clock, jitter and acceptance "
             "in expectation (within 0.02% of the whole-episode DP, docs/model.md; oracle:scope=episode solves that)",
    "trace": "path DP per request over (wall-clock time, tokens committed) on the replayed trace from the "
             "request's exact start, the rest of the episode valued by the token clock (within 0.01% of the "
             "whole-episode DP, docs/model.md; oracle:scope=episode solves that)",
}
"""What the ``oracle`` agent plays, per channel kind (SPEC 4; agents/oracle_agent.py)."""


def oracle_reference(scenario: ScenarioConfig) -> dict[str, Any]:
    """What the exact oracle says about a scenario (SPEC 4): which oracle it is, k*, rho*, D_c.

    ``policy`` says what the ``oracle`` agent plays on this channel (``token_rule``: what it adds
    at the token level); ``k_star``/``rho_star_ms`` for stationary channels (constant, iid) at
    the long-run mean rtt; for drift and Markov channels the stationary optimum at each mean
    rtt level instead (``local``), a guide for the k-over-time plot rather than the reference.
    ``mean_rtt_ms`` is the channel's long-run mean rtt (a trace: over its samples, each counted
    once); a trace also gets ``time_weighted_mean_rtt_ms``.
    """
    from ..oracle import critical_delay, optimal_k_for_costs
    from ..scenarios import build_acceptance, build_channel, stationary_reference

    survival = build_acceptance(scenario).survival(scenario.max_draft)
    c = scenario.marginal_cost_ms
    signal = (scenario.acceptance == "latent" and scenario.confidence_sigma is not None
              and scenario.channel in ("constant", "iid"))
    out: dict[str, Any] = {
        "policy": ORACLE_POLICIES[scenario.channel],
        "token_rule": ("Bayes stopping on the confidence signal (exact latent posterior, threshold = the "
                       "rule's own long-run per-token latency)" if signal else "plans k at the round start"),
        "marginal_cost_ms": c,
        "survival": np.asarray(survival).tolist(),
        # D_c with the full marginal cost c (transmission included when bandwidth is modelled)
        "critical_delay_ms": critical_delay(survival, draft_ms=c, verify_base_ms=scenario.verify_base_ms,
                                            verify_per_token_ms=0.0),
        "k_star": None,
        "rho_star_ms": None,
        "mean_rtt_ms": None,
        "local": [],
    }
    try:
        channel = build_channel(scenario)
        out["mean_rtt_ms"] = float(channel.long_run_mean_rtt_ms())
        if scenario.channel == "trace":
            out["time_weighted_mean_rtt_ms"] = float(channel.time_weighted_mean_rtt_ms())
    except Exception:
        out["mean_rtt_ms"] = None
    if is_stationary(scenario):
        k, rho = stationary_reference(scenario)
        out["k_star"], out["rho_star_ms"] = int(k), float(rho)
    levels: list[float] = []
    if scenario.channel == "drift" and scenario.drift_schedule:
        levels = sorted({float(d) for _, d in scenario.drift_schedule})
    elif scenario.channel == "markov" and scenario.markov_rtt_mean_ms:
        levels = [float(d) for d in scenario.markov_rtt_mean_ms]
    for d in levels:
        k, rho = optimal_k_for_costs(survival, c, d + scenario.verify_base_ms)
        out["local"].append({"rtt_ms": d, "k_star": int(k), "rho_star_ms": float(rho)})
    return out


def build_summary(comp: Comparison, *, command: str, sweep: Mapping[str, Any] | None = None,
                  files: Mapping[str, Any] | None = None, created: str | None = None) -> dict[str, Any]:
    """The summary.json document of one scenario (schema in docs/evaluation.md)."""
    from datetime import datetime, timezone

    scenario = comp.scenario
    metrics = summarize(dict(comp.runs), oracle_name=comp.oracle_label)
    agents: dict[str, Any] = {}
    for label, run in comp.runs.items():
        m = metrics[label]
        wall = float(comp.timing.get(label, float("nan")))
        entry: dict[str, Any] = {
            "spec": comp.specs.get(label, label),
            "per_token_latency_ms": m["per_token_latency_ms"],
            "cumulative_regret_ms": m["cumulative_regret_ms"],
            "cumulative_pseudo_regret_ms": m.get("cumulative_pseudo_regret_ms"),
            "gap_to_oracle_pct": m.get("gap_to_oracle_pct"),
            "rounds": m["rounds"],
            "mean_k": m["mean_k"],
            "parameters": m["parameters"],
            "requested": label in comp.requested,
            "per_seed": {
                "per_token_latency_ms": run.per_token_latency_ms,
                "total_time_ms": run.total_time_ms,
                "total_tokens": run.total_tokens,
                "cumulative_regret_ms": final_per_seed(run, "regret_ms"),
            },
            "wall_s": wall,
            "rounds_per_s": m["rounds"] / wall if wall and wall > 0 else None,
        }
        agents[label] = entry
    rho_ref, ref_desc = comp.reference
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "specstop-gym evaluation summary",
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(),
        "scenario": {"name": scenario.name, "stationary": is_stationary(scenario), "config": scenario.to_dict()},
        "seeds": [int(s) for s in comp.seeds],
        "level": comp.level,
        "budget": {"requests_per_episode": scenario.requests_per_episode, "n_tokens": scenario.n_tokens,
                   "max_rounds": comp.max_rounds},
        "oracle": oracle_reference(scenario),
        "oracle_agent": comp.oracle_label,
        "regret_reference": {"description": ref_desc, "rho_ms_per_seed": np.asarray(rho_ref)},
        "agents": agents,
        "sweep": dict(sweep) if sweep is not None else None,
        "files": dict(files or {}),
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """The compact results table printed at the end of a run (agent, latency, gap, regret, mean k)."""
    rows = [("agent", "latency ms/token", "gap to oracle %", "regret ms", "mean k")]
    for label, e in summary["agents"].items():
        lat = e["per_token_latency_ms"]
        gap = e.get("gap_to_oracle_pct")
        reg = e["cumulative_regret_ms"]
        rows.append((label, _pm(lat), _pm(gap, 2) if gap else "-", _pm(reg, 0), f"{e['mean_k']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i])
                               for i in range(len(r))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pm(ci: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not ci or ci.get("mean") is None:
        return "-"
    mean = ci["mean"]
    half = (ci["ci_high"] - ci["ci_low"]) / 2 if ci.get("ci_high") is not None else 0.0
    return f"{mean:.{digits}f} ± {half:.{digits}f}"
