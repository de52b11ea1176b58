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
    """Stationary channel (constant or i.i.d. rtt): the reference is the exact rho*."""
    return scenario.channel in STATIONARY_CHANNELS


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
    """Add cumulative realised regret (and pseudo-regret for stationary scenarios) per record, ms.

    Realised: ``R(t) = sum_{r<=t} (T_r - rho_ref * N_r)``. Pseudo-regret replaces ``T_r`` and
    ``N_r`` by their expectations given ``k_r``: ``k c + B`` and ``1 + sum_{i<=k} S_i``.
    """
    cols = run.columns
    seed_pos = {int(s): i for i, s in enumerate(run.seeds)}
    ref = rho_ref[np.array([seed_pos[int(s)] for s in cols["seed"]], dtype=np.int64)] if len(cols["seed"]) else np.zeros(0)
    inst = cols["time_ms"] - ref * cols["tokens"]
    cols["regret_ms"] = _cumsum_by_seed(cols["seed"], inst)
    if is_stationary(scenario):
        from ..scenarios import build_acceptance, build_channel

        surv = build_acceptance(scenario).survival(scenario.max_draft)
        b = build_channel(scenario).long_run_mean_rtt_ms() + scenario.verify_base_ms
        k = cols["k"].astype(np.int64)
        exp_t = k * scenario.marginal_cost_ms + b
        exp_n = 1.0 + np.concatenate([[0.0], np.cumsum(surv)])[k]
        cols["pseudo_regret_ms"] = _cumsum_by_seed(cols["seed"], exp_t - ref * exp_n)


def _cumsum_by_seed(seed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cumulative sum of x restarting at each seed (records are sorted by seed, then round)."""
    out = np.cumsum(x)
    if len(x) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, seed[1:] != seed[:-1]])
    offsets = np.zeros_like(out)
    base = np.r_[0.0, out[starts[1:] - 1]]
    lengths = np.diff(np.r_[starts, len(x)])
    offsets = np.repeat(base, lengths)
    return out - offsets


def summarize(runs: dict[str, AgentRun], oracle_name: str = "oracle") -> dict[str, Any]:
    """Per agent: per-token latency, final cumulative regret, gap to the oracle (mean and 95% CI)."""
    oracle = runs.get(oracle_name)
    out: dict[str, Any] = {}
    for name, run in runs.items():
        lat = run.per_token_latency_ms
        cols = run.columns
        final_regret = np.array([cols["regret_ms"][run.seed_rows(i)][-1] if run.seed_rows(i).any() else 0.0
                                 for i in range(len(run.seeds))])
        entry: dict[str, Any] = {
            "per_token_latency_ms": confidence_interval(lat),
            "cumulative_regret_ms": confidence_interval(final_regret),
            "rounds": int(len(cols["k"])),
            "mean_k": float(cols["k"].mean()) if len(cols["k"]) else float("nan"),
            "parameters": run.description,
        }
        if "pseudo_regret_ms" in cols:
            pr = np.array([cols["pseudo_regret_ms"][run.seed_rows(i)][-1] if run.seed_rows(i).any() else 0.0
                           for i in range(len(run.seeds))])
            entry["cumulative_pseudo_regret_ms"] = confidence_interval(pr)
        if oracle is not None:
            gap = (lat - oracle.per_token_latency_ms) / oracle.per_token_latency_ms * 100.0
            entry["gap_to_oracle_pct"] = confidence_interval(gap)
        out[name] = entry
    return out
