"""Metrics of SPEC 5: per-token latency, regret, gap to the oracle, confidence intervals over seeds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.config import ScenarioConfig
from .runner import AgentRun

STATIONARY_CHANNELS = ("constant", "iid")


def confidence_interval(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean and a Student-t confidence interval over seeds (half-width 0 for a single seed)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = v.size
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": int(n)}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": int(n)}


def is_stationary(scenario: ScenarioConfig) -> bool:
    """Stationary channel (constant or i.i.d. rtt) and acceptance that does not switch over time: the
    reference is the exact rho*."""
    return scenario.channel in STATIONARY_CHANNELS and scenario.acceptance_switch_ms is None


def reference_rho(scenario: ScenarioConfig, oracle_run: AgentRun | None) -> tuple[np.ndarray, str]:
    """Per-seed reference per-token latency for regret (ms/token) and its description.

    Stationary channels: the exact stationary ``rho*`` (same for every seed).
    Otherwise: the oracle agent's realised per-token latency on the same seed.
    """
    if is_stationary(scenario):
        from ..scenarios import stationary_reference

        rho = stationary_reference(scenario)[1]
        n = len(oracle_run.seeds) if oracle_run is not None else 1
        return np.full(n, rho), "stationary rho* (exact)"
    if oracle_run is None:
        raise ValueError("a non-stationary scenario needs the oracle's run as the regret reference")
    return oracle_run.per_token_latency_ms, "oracle's realised per-token latency on the same seed"


def add_regret(run: AgentRun, rho_ref: np.ndarray, scenario: ScenarioConfig) -> None:
    """Add cumulative realised regret (and pseudo-regret for stationary scenarios) to a run whose
    rounds were kept (``run.columns``), ms, and refresh ``run.stats`` accordingly.

    Realised: ``R(t) = sum_{r<=t} (T_r - rho_ref * N_r)``. Pseudo-regret replaces ``T_r`` and
    ``N_r`` by their expectations given ``k_r``: ``k c + B`` and ``1 + sum_{i<=k} S_i``. The same
    :class:`~specstop_gym.evaluation.stream.RoundRecorder` computes them while a run streams
    its rounds (``run_agent(..., rho_ref=...)``); here the kept records are replayed through it.
    """
    from .stream import ROUND_COLUMNS, RoundRecorder

    cols = run.columns
    if cols is None:
        raise ValueError("add_regret needs the run's rounds (run_agent(..., keep_rounds=True)); "
                         "or pass rho_ref to run_agent to compute the regret while it runs")
    rec = RoundRecorder(run.seeds, rho_ref=np.asarray(rho_ref, np.float64), scenario=scenario, keep=True)
    n = len(cols["seed"])
    if n:
        seed_pos = {int(s): i for i, s in enumerate(run.seeds)}
        pos = np.array([seed_pos[int(s)] for s in cols["seed"]], dtype=np.int64)
        order = np.lexsort((pos, cols["round"]))
        rounds = cols["round"][order]
        cuts = np.flatnonzero(np.diff(rounds)) + 1
        for part in np.split(order, cuts):  # one batch per round index: each seed at most once
            rec.add(pos[part], {c: cols[c][part] for c in ROUND_COLUMNS if c != "seed"})
    columns, stats = rec.finish()
    run.columns = columns
    run.stats = stats


def final_per_seed(run: AgentRun, column: str) -> np.ndarray:
    """The last value of a cumulative column per seed (0 for a seed without rounds)."""
    if run.stats is None or column not in run.stats.final:
        raise ValueError(f"{column} was not computed for {run.agent!r} (no regret reference)")
    return np.asarray(run.stats.final[column], dtype=np.float64)


def summarize(runs: dict[str, AgentRun], oracle_name: str = "oracle") -> dict[str, Any]:
    """Per agent: per-token latency, final cumulative regret, gap to the oracle (mean and 95% CI)."""
    oracle = runs.get(oracle_name)
    out: dict[str, Any] = {}
    for name, run in runs.items():
        lat = run.per_token_latency_ms
        st = run.stats
        if st is None:
            raise ValueError(f"run {name!r} has no round statistics")
        entry: dict[str, Any] = {
            "per_token_latency_ms": confidence_interval(lat),
            "cumulative_regret_ms": confidence_interval(final_per_seed(run, "regret_ms")),
            "rounds": st.n_rounds,
            "mean_k": st.mean_k,
            "parameters": run.description,
        }
        if "pseudo_regret_ms" in st.final:
            entry["cumulative_pseudo_regret_ms"] = confidence_interval(final_per_seed(run, "pseudo_regret_ms"))
        if oracle is not None:
            gap = (lat - oracle.per_token_latency_ms) / oracle.per_token_latency_ms * 100.0
            entry["gap_to_oracle_pct"] = confidence_interval(gap)
        out[name] = entry
    return out
