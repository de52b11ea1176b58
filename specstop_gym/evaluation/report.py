"""Results files of an evaluation: the summary document, atomic writes, the tidy rounds CSV.

Everything ``evaluate.py`` writes goes through :func:`write_json_atomic` or
:func:`write_text_atomic`: the content is written to a temporary file in the
destination folder, flushed to disk, then moved over the destination with
``os.replace`` (atomic on POSIX and Windows). An interrupted run therefore never
leaves a half-written ``summary.json``: either the previous file or the new one
is there, and the temporary file is removed.

The schema of ``summary.json`` is documented in docs/evaluation.md and versioned
by :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import ScenarioConfig
from .metrics import add_regret, confidence_interval, is_stationary, reference_rho, summarize
from .runner import BEST_FIXED_K, AgentRun, run_agent, run_best_fixed_k

SCHEMA_VERSION = 1
"""Version of the summary.json layout (bumped on any incompatible change)."""

ROUNDS_CSV_COLUMNS = ("scenario", "agent", "seed", "round", "k", "accepted", "tokens", "time_ms", "rtt_ms",
                      "state", "regret_ms", "pseudo_regret_ms")
"""Columns of rounds.csv; ``pseudo_regret_ms`` only for stationary scenarios."""

_FLOAT_COLUMNS = {"time_ms": "%.4f", "rtt_ms": "%.4f", "regret_ms": "%.4f", "pseudo_regret_ms": "%.4f"}


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
                   on_agent: Callable[[str, float], None] | None = None) -> Comparison:
    """Run every spec on ``scenario`` with the same ``seeds`` (common random numbers), attach regret.

    The oracle is always run (added when ``specs`` has none): it is the reference of the gap and,
    on non-stationary channels, of the regret. ``best-fixed-k`` is run by the runner itself
    (static-k for every k, best in hindsight per seed); every other spec goes through
    :func:`agents.registry.make_agent` unchanged. ``prebuilt`` maps labels to agents already
    built (for ``len(seeds)`` runs) during validation.
    """
    seeds_arr = np.asarray(list(seeds), dtype=np.int64)
    labels = [s.strip() for s in specs]
    oracle_label = next((lab for lab in labels if spec_name(lab) == ORACLE), None)
    requested = list(labels)
    if oracle_label is None:
        oracle_label = ORACLE
        labels.append(ORACLE)
    seed0 = int(seeds_arr[0]) if agent_seed is None else int(agent_seed)
    runs: dict[str, AgentRun] = {}
    timing: dict[str, float] = {}
    for label in labels:
        t0 = time.perf_counter()
        if spec_name(label) == BEST_FIXED_K:
            run = run_best_fixed_k(scenario, seeds_arr, max_rounds=max_rounds, on_round=on_round)
        else:
            agent = (prebuilt or {}).get(label) or build_agent(label, scenario, len(seeds_arr), seed0)
            run = run_agent(agent, scenario, seeds_arr, level=level, max_rounds=max_rounds, on_round=on_round)
        timing[label] = time.perf_counter() - t0
        runs[label] = run
        if on_agent:
            on_agent(label, timing[label])
    reference = reference_rho(scenario, runs[oracle_label])
    for run in runs.values():
        add_regret(run, reference[0], scenario)
    return Comparison(scenario=scenario, seeds=seeds_arr, level=level, max_rounds=max_rounds, runs=runs,
                      specs={lab: lab for lab in labels}, oracle_label=oracle_label, requested=requested,
                      reference=reference, timing=timing)


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
        comp = run_comparison(sc, specs, seeds, level=level, on_round=on_round)
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
    """Write ``text`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    _atomic(path, lambda f: f.write(text))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON (no NaN) to ``path`` atomically; a failure leaves ``path`` untouched."""
    data = to_jsonable(obj)
    _atomic(path, lambda f: (json.dump(data, f, indent=2, allow_nan=False), f.write("\n")))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: str | os.PathLike[str], write: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results files are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and parents) and check that a file can be written there.

    Raises ``OSError`` with a message naming the folder when it cannot be used.
    """
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(f"output folder {str(p)!r} is not writable: {e.strerror or e}") from e
    return p


# --------------------------------------------------------------------------- CSV
def rounds_csv_text(scenario: str, runs: Mapping[str, AgentRun]) -> str:
    """The tidy per-round table of all agents of one scenario, as CSV text (one row per round)."""
    with_pseudo = all("pseudo_regret_ms" in r.columns for r in runs.values()) and bool(runs)
    cols = [c for c in ROUNDS_CSV_COLUMNS if c != "pseudo_regret_ms" or with_pseudo]
    buf = io.StringIO()
    buf.write(",".join(cols) + "\n")
    for label, run in runs.items():
        n = len(run.columns["k"])
        if n == 0:
            continue
        parts: list[np.ndarray] = []
        for c in cols:
            if c == "scenario":
                parts.append(np.full(n, _csv_field(scenario), dtype=object))
            elif c == "agent":
                parts.append(np.full(n, _csv_field(label), dtype=object))
            elif c in _FLOAT_COLUMNS:
                parts.append(np.char.mod(_FLOAT_COLUMNS[c], np.asarray(run.columns[c], dtype=np.float64)))
            else:
                parts.append(np.asarray(run.columns[c]).astype(np.int64).astype(str))
        table = np.stack([p.astype(str) for p in parts], axis=1)
        buf.write("\n".join(",".join(row) for row in table.tolist()))
        buf.write("\n")
    return buf.getvalue()


def _csv_field(text: str) -> str:
    """Quote a CSV field when needed (agent specs may contain commas: ``static-k:k=4,x=1``)."""
    if any(ch in text for ch in ',"\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


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


def oracle_reference(scenario: ScenarioConfig) -> dict[str, Any]:
    """What the exact oracle says about a scenario (SPEC 4): k*, rho*, the critical delay.

    ``k_star``/``rho_star_ms`` for stationary channels (constant, iid) at the long-run mean rtt;
    for drift and Markov channels the stationary optimum at each mean rtt level instead
    (``local``), a guide for the k-over-time plot rather than the reference (the oracle agent
    plays the Markov DP / local rule of SPEC 4).
    """
    from ..oracle import critical_delay, optimal_k_for_costs
    from ..scenarios import build_acceptance, build_channel, stationary_reference

    survival = build_acceptance(scenario).survival(scenario.max_draft)
    c = scenario.marginal_cost_ms
    out: dict[str, Any] = {
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
        out["mean_rtt_ms"] = float(build_channel(scenario).long_run_mean_rtt_ms())
    except Exception:  # noqa: BLE001 - a channel without a long-run mean (e.g. unlooped drift)
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


def final_per_seed(run: AgentRun, column: str) -> np.ndarray:
    """The last value of a cumulative column per seed (0 for a seed without rounds)."""
    out = np.zeros(len(run.seeds))
    for i in range(len(run.seeds)):
        m = run.seed_rows(i)
        if m.any():
            out[i] = run.columns[column][m][-1]
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
