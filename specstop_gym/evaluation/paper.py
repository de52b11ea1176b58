"""``evaluate.py --paper``: the reference paper's claims measured on our presets.

The paper (arXiv 2606.20591; only its abstract is public, see SPEC section 7) reports seven
kinds of numbers. Each experiment below measures the same quantity in this simulator and
reports it beside the paper's value, whether or not it matches (docs/paper.md explains the
setup and why numbers can differ: the paper's own parameters are not public).

(a) ``critical-delay``: the k = 1 -> 2 transition of qwen-geometric and llama-heavy-head
    (exact D_c, plus the crossing of simulated k = 1 and k = 2 latencies) vs 83 / 111 ms.
(b) ``log-growth``: slope of k*(D) against ln D, vs 1 / ln(1 / alpha) (geometric acceptance).
(c) ``vs-specdec``: ucb-specstop vs specdec++ (threshold tuned once on the grid, :data:`SPECDEC_TUNED`)
    over a constant-delay grid (paper: up to 22.4%).
(d) ``oracle-gap``: ucb-specstop's gap to the oracle where communication dominates (0.2-2.4%).
(e) ``vs-naive-ucb``: ucb-specstop vs naive-ucb (BanditSpec's UCBSpec as its public code does it) over
    the same grid (paper: up to 7.5%).
(f) ``drift``: static tuning under delay drift (paper: 14.0-18.7% gap removed).
(g) ``csi``: contextual-ucb vs ucb-specstop on Markov channels with observed state (3.0-6.8%).

(c)-(e) run at the token level, so that specdec++ uses its per-token stopping rule; every
relative number is computed per seed on common random numbers and reported as mean and 95%
CI over seeds. (c)-(g) are judged strictly by :func:`judge` ("yes" only where every point the
claim covers is consistent with the paper's figure and none goes significantly the other way;
the points against the claim are listed); (a), (b) are exact numbers checked within a tolerance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import ScenarioConfig
from .metrics import confidence_interval
from .report import (
    Comparison,
    run_comparison,
    to_jsonable,
    versions,
    write_json_atomic,
    write_text_atomic,
)

PAPER = "arXiv 2606.20591"
PAPER_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class PaperBudget:
    """Sizes of the --paper experiments (the defaults keep the run within ~5 minutes on 2 CPUs)."""

    seeds: int = 8
    """Seeds per comparison (common random numbers)."""
    grid_requests: int = 8
    """Requests per run on the delay grid of (c)-(e)."""
    grid_delays_ms: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
    """Constant delays of (c)-(e)."""
    crossing_requests: int = 4
    """Requests per run of the simulated k = 1 vs k = 2 crossing (a)."""
    drift_requests: int = 12
    """Requests per run on the drift presets (f): long enough to cover several delay regimes."""
    csi_requests: int = 12
    """Requests per run on the Markov presets (g)."""
    csi_presets: tuple[str, ...] = ("markov-csi", "markov-nr5g", "markov-starlink")
    """Markov presets with observed channel state for (g)."""
    n_tokens: int | None = None
    """Override of n_tokens for every experiment (None: the presets' 256)."""

    @classmethod
    def quick(cls) -> PaperBudget:
        """A smoke-test budget (seconds; the numbers are noisy)."""
        return cls(seeds=2, grid_requests=1, grid_delays_ms=(50.0, 400.0), crossing_requests=1, drift_requests=2,
                   csi_requests=1, csi_presets=("markov-csi",), n_tokens=64)


def _scenario(name: str, budget: PaperBudget, **overrides: Any) -> ScenarioConfig:
    from ..scenarios import make_scenario

    if budget.n_tokens is not None:
        overrides.setdefault("n_tokens", budget.n_tokens)
    return make_scenario(name, **overrides)


def _rel(comp: Comparison, worse: str, better: str) -> dict[str, float]:
    """Per-seed ``(lat_worse - lat_better) / lat_worse * 100``: how much lower ``better`` is, %."""
    a, b = comp.latency(worse), comp.latency(better)
    return confidence_interval((a - b) / a * 100.0)


def _gap(comp: Comparison, label: str) -> dict[str, float]:
    """Per-seed gap to the oracle, %: ``(lat - lat_oracle) / lat_oracle * 100``."""
    a, o = comp.latency(label), comp.latency(comp.oracle_label)
    return confidence_interval((a - o) / o * 100.0)


def _lat(comp: Comparison, label: str) -> dict[str, float]:
    return confidence_interval(comp.latency(label))


def _verdict(checks: Sequence[bool]) -> str | None:
    """(a), (b) only (exact numbers, no confidence interval): "yes" (all checks), "partly" (some), "no".

    (a) D_c within 5% of the paper's; (b) the fitted slope within 10% of 1/ln(1/alpha).
    """
    if not checks:
        return None
    return "yes" if all(checks) else ("no" if not any(checks) else "partly")


# --------------------------------------------------------------------------- strict judging, (c)-(g)
def point(label: str, ci: Mapping[str, Any]) -> dict[str, Any]:
    """A measured point of a claim: its label and mean with 95% CI (``confidence_interval``'s keys)."""
    return {"label": label, "mean": float(ci["mean"]), "ci_low": float(ci["ci_low"]),
            "ci_high": float(ci["ci_high"])}


def against(p: Mapping[str, Any], bound: float, claimed: str) -> bool:
    """The point goes significantly the other way: its whole 95% CI is on the wrong side of ``bound``.

    ``claimed="above"``: the claim says the quantity exceeds ``bound`` (an improvement > 0);
    ``claimed="below"``: it says the quantity stays under ``bound`` (a gap <= 2.4%).
    """
    if claimed == "above":
        return p["ci_high"] < bound
    if claimed == "below":
        return p["ci_low"] > bound
    raise ValueError(f"claimed must be 'above' or 'below', got {claimed!r}")


def overlaps(p: Mapping[str, Any], lo: float, hi: float) -> bool:
    """The point's 95% CI meets the closed interval ``[lo, hi]``."""
    return p["ci_low"] <= hi and p["ci_high"] >= lo


def judge(points: Sequence[Mapping[str, Any]], *, paper: tuple[float, float], bound: float, claimed: str,
          up_to: bool = False) -> dict[str, Any]:
    """Strict verdict of one claim from its measured points (docs/paper.md, "How the verdicts are made").

    ``paper = (lo, hi)`` is the paper's range in the points' unit. Every point the claim covers
    is classified: *against* (:func:`against`: significantly the other way), *inside* (its CI
    meets the paper's range) or *outside* (neither: the direction holds or is unclear, the size
    does not match). For an "up to X" claim (``up_to=True``, ``paper = (bound, X)``) the largest
    measured point must also reach X: its CI contains X.

    * "yes": every point inside, none against (and, for "up to", the largest reaches X);
    * "no": no point inside;
    * "partly": otherwise.

    Returns the verdict and the labels of each class (``against`` is the list the claims table
    shows), plus the largest point for "up to" claims.
    """
    if not points:
        return {"verdict": None, "paper_range": list(paper), "inside": [], "outside": [], "against": [],
                "largest": None, "reaches_up_to": None}
    lo, hi = paper
    opp = [p["label"] for p in points if against(p, bound, claimed)]
    inside = [p["label"] for p in points if p["label"] not in opp and overlaps(p, lo, hi)]
    outside = [p["label"] for p in points if p["label"] not in opp and p["label"] not in inside]
    largest = max(points, key=lambda p: p["mean"])
    reaches = (largest["ci_low"] <= hi <= largest["ci_high"]) if up_to else None
    if not inside:
        verdict = "no"
    elif not opp and not outside and reaches is not False:
        verdict = "yes"
    else:
        verdict = "partly"
    return {"verdict": verdict, "paper_range": [lo, hi], "inside": inside, "outside": outside, "against": opp,
            "largest": dict(largest) if up_to else None, "reaches_up_to": reaches}


def against_text(judgement: Mapping[str, Any]) -> str:
    """The points that go significantly the other way, for the claims table ("none" if none)."""
    opp = judgement.get("against") or []
    return "; ".join(opp) if opp else "none"


def _fmt(ci: Mapping[str, Any] | None, digits: int = 1, unit: str = "%") -> str:
    if not ci or ci.get("mean") is None:
        return "-"
    half = (ci["ci_high"] - ci["ci_low"]) / 2
    return f"{ci['mean']:.{digits}f} ± {half:.{digits}f}{unit}"


def _range(values: Sequence[float], digits: int = 1, unit: str = "%") -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "-"
    lo, hi = min(v), max(v)
    return f"{lo:.{digits}f}{unit}" if abs(hi - lo) < 0.5 * 10 ** -digits else f"{lo:.{digits}f} to {hi:.{digits}f}{unit}"


# --------------------------------------------------------------------------- (a)
def claim_critical_delay(budget: PaperBudget, seeds: list[int], tick: Callable[[], None]) -> dict[str, Any]:
    """(a) D_c of the two calibrated presets, exact and from simulated k = 1 / k = 2 latencies."""
    from ..oracle import critical_delay
    from ..scenarios import build_acceptance

    rows = []
    for name, paper_ms in (("qwen-geometric", 83.0), ("llama-heavy-head", 111.0)):
        sc = _scenario(name, budget)
        surv = build_acceptance(sc).survival(sc.max_draft)
        d_c = critical_delay(surv, draft_ms=sc.marginal_cost_ms, verify_base_ms=sc.verify_base_ms,
                             verify_per_token_ms=0.0)
        # simulated: constant delays around D_c, paired difference of static k = 2 and k = 1
        grid = [round(d_c * f, 1) for f in (0.6, 0.8, 1.0, 1.2, 1.4)]
        diffs = []
        for d in grid:
            comp = run_comparison(sc.replace(channel="constant", delay_ms=d,
                                             requests_per_episode=budget.crossing_requests),
                                  ["static-k:k=1", "static-k:k=2"], seeds)
            diffs.append(float(np.mean(comp.latency("static-k:k=2") - comp.latency("static-k:k=1"))))
            tick()
        slope, icept = np.polyfit(grid, diffs, 1)
        crossing = float(-icept / slope) if slope < 0 else float("nan")
        rows.append({"preset": name, "paper_ms": paper_ms, "critical_delay_ms": d_c,
                     "relative_error_pct": (d_c - paper_ms) / paper_ms * 100.0,
                     "simulated_crossing_ms": crossing, "grid_ms": grid,
                     "latency_k2_minus_k1_ms": diffs})
    measured = "; ".join(f"{r['preset']}: D_c = {r['critical_delay_ms']:.1f} ms (simulated crossing "
                         f"{r['simulated_crossing_ms']:.0f} ms)" for r in rows)
    return {"id": "a", "key": "critical-delay", "claim": "k* switches from 1 to 2 at a critical delay",
            "paper": "83 ms (Qwen pair), 111 ms (Llama pair)", "measured": measured,
            "consistent": _verdict([abs(r["relative_error_pct"]) <= 5.0 for r in rows]),
            "setup": ("exact D_c = c (1 + S_1 - S_2) / S_2 - verify_base_ms of the presets; simulated crossing: "
                      "linear fit of the paired latency difference static k=2 minus k=1 at constant delays "
                      "0.6..1.4 x D_c"),
            "details": rows}


# --------------------------------------------------------------------------- (b)
def claim_log_growth(budget: PaperBudget) -> dict[str, Any]:
    """(b) k*(D) for geometric acceptance grows like ln(D) / ln(1/alpha): fitted slope vs theory."""
    from ..oracle import optimal_k_for_costs

    base = _scenario("qwen-geometric", budget)
    c, vb = base.marginal_cost_ms, base.verify_base_ms
    rows = []
    for alpha in (0.5, 0.6, 0.7, 0.8, 0.9):
        surv = alpha ** np.arange(1, 401)
        entry: dict[str, Any] = {"alpha": alpha, "theory_slope": 1.0 / math.log(1.0 / alpha)}
        for tag, (lo, hi) in (("realistic", (100.0, 2000.0)), ("asymptotic", (1e4, 1e7))):
            d = np.geomspace(lo, hi, 60)
            k = np.array([optimal_k_for_costs(surv, c, x + vb)[0] for x in d], dtype=float)
            slope = float(np.polyfit(np.log(d), k, 1)[0])
            entry[f"{tag}_range_ms"] = [lo, hi]
            entry[f"{tag}_slope"] = slope
            entry[f"{tag}_ratio"] = slope / entry["theory_slope"]
        rows.append(entry)
    ratios = [r["asymptotic_ratio"] for r in rows]
    measured = ("k* vs ln D slope / (1 / ln(1/alpha)): " + _range(ratios, 2, "") + " for D in 10 s..10^4 s, "
                + _range([r["realistic_ratio"] for r in rows], 2, "") + " for D in 100..2000 ms (alpha 0.5..0.9)")
    return {"id": "b", "key": "log-growth", "claim": "k* grows logarithmically in the delay",
            "paper": "logarithmic growth (no number)", "measured": measured,
            "consistent": _verdict([0.9 <= r <= 1.1 for r in ratios]),
            "setup": (f"exact k*(D) for geometric S_i = alpha^i (K = 400, c = {c:.2f} ms, verify_base = {vb:.0f} ms), "
                      "least-squares slope of k* against ln D over 60 log-spaced delays"),
            "details": rows}


# --------------------------------------------------------------------------- (c)-(e)
SPECDEC_TUNED = "specdec++:threshold=0.1"
"""SpecDec++ as compared in (c): its delay-blind threshold tuned once for both presets, the lowest mean
gap to the oracle over the 14 grid points among 0.1..0.9 (docs/agents.md, the tuning table; 0.1 and
0.2 tie within noise). The public code's example default (0.7) runs beside it (:data:`SPECDEC_DEFAULT`)."""
SPECDEC_DEFAULT = "specdec++"
"""SpecDec++ with its defaults (threshold 0.7, bound [2, 20]), shown in the grid table, not judged."""
NAIVE_UCB = "naive-ucb"
"""Naive UCB as compared in (e): BanditSpec's UCBSpec as its public code does it (docs/agents.md)."""


def delay_grid(budget: PaperBudget, seeds: list[int], tick: Callable[[], None]) -> list[dict[str, Any]]:
    """Constant-delay grid on both calibrated presets: ucb-specstop, specdec++ (tuned and default), naive-ucb,
    oracle."""
    rows = []
    specs = ["ucb-specstop", SPECDEC_TUNED, SPECDEC_DEFAULT, NAIVE_UCB, "oracle"]
    for name in ("qwen-geometric", "llama-heavy-head"):
        base = _scenario(name, budget)
        for d in budget.grid_delays_ms:
            sc = base.replace(channel="constant", delay_ms=d, requests_per_episode=budget.grid_requests)
            comp = run_comparison(sc, specs, seeds, level="token")
            ok = comp.runs["oracle"]
            rtt_share = float(np.sum(ok.columns["rtt_ms"]) / np.sum(ok.columns["time_ms"]))
            rows.append({
                "preset": name, "delay_ms": d, "rtt_share_of_oracle_time": rtt_share,
                "latency_ms": {lab: _lat(comp, lab) for lab in specs},
                "gap_to_oracle_pct": {lab: _gap(comp, lab) for lab in specs if lab != "oracle"},
                "ucb_vs_specdec_pct": _rel(comp, SPECDEC_TUNED, "ucb-specstop"),
                "ucb_vs_specdec_default_pct": _rel(comp, SPECDEC_DEFAULT, "ucb-specstop"),
                "ucb_vs_naive_pct": _rel(comp, NAIVE_UCB, "ucb-specstop"),
                "ucb_gap_to_oracle_pct": _gap(comp, "ucb-specstop"),
                "oracle_mean_k": float(ok.columns["k"].mean()),
            })
            tick()
    return rows


COMM_DOMINATED_SHARE = 0.75
"""Communication dominates where the rtt is at least this share of the oracle's round time."""


def _label(r: Mapping[str, Any]) -> str:
    return f"{r['preset']} {r['delay_ms']:g} ms"


def _up_to_text(j: Mapping[str, Any], values: Sequence[float]) -> str:
    big = j["largest"]
    return (f"up to {_fmt(big)} lower ({big['label']}); range over the grid {_range(values)}"
            + (f"; outside the paper's 0-{j['paper_range'][1]:g}%: {', '.join(j['outside'])}" if j["outside"] else ""))


def claims_from_grid(rows: list[dict[str, Any]], budget: PaperBudget) -> list[dict[str, Any]]:
    """(c), (d), (e) from the delay grid, judged strictly (:func:`judge`)."""
    setup = (f"constant delays {', '.join(f'{d:g}' for d in budget.grid_delays_ms)} ms on qwen-geometric and "
             f"llama-heavy-head, token level, {budget.grid_requests} request(s) x n_tokens per run, agents learn "
             "from scratch in each run; per-seed paired differences")
    table = [{"preset": r["preset"], "delay_ms": r["delay_ms"], "rtt_share": r["rtt_share_of_oracle_time"],
              "ucb_vs_specdec_pct": r["ucb_vs_specdec_pct"],
              "ucb_vs_specdec_default_pct": r.get("ucb_vs_specdec_default_pct"),
              "ucb_vs_naive_pct": r["ucb_vs_naive_pct"], "ucb_gap_to_oracle_pct": r["ucb_gap_to_oracle_pct"],
              "gap_to_oracle_pct": r.get("gap_to_oracle_pct", {}), "latency_ms": r["latency_ms"]} for r in rows]
    jc = judge([point(_label(r), r["ucb_vs_specdec_pct"]) for r in rows], paper=(0.0, 22.4), bound=0.0,
               claimed="above", up_to=True)
    je = judge([point(_label(r), r["ucb_vs_naive_pct"]) for r in rows], paper=(0.0, 7.5), bound=0.0,
               claimed="above", up_to=True)
    comm = [r for r in rows if r["rtt_share_of_oracle_time"] >= COMM_DOMINATED_SHARE]
    jd = judge([point(_label(r), r["ucb_gap_to_oracle_pct"]) for r in comm], paper=(0.2, 2.4), bound=2.4,
               claimed="below")
    comm_delays = ", ".join(f"{d:g}" for d in sorted({r["delay_ms"] for r in comm}))
    c = {"id": "c", "key": "vs-specdec", "claim": "UCB-SpecStop lowers per-token latency vs SpecDec++",
         "paper": "up to 22.4% lower",
         "measured": _up_to_text(jc, [r["ucb_vs_specdec_pct"]["mean"] for r in rows]),
         "consistent": jc["verdict"], "judgement": jc, "setup": setup, "details": table}
    d = {"id": "d", "key": "oracle-gap", "claim": "UCB-SpecStop is close to the offline oracle when communication dominates",
         "paper": "within 0.2-2.4%",
         "measured": (f"gap {_range([r['ucb_gap_to_oracle_pct']['mean'] for r in comm], 1)} at delays where rtt >= "
                      f"{COMM_DOMINATED_SHARE:.0%} of the oracle's round time ({comm_delays} ms); "
                      + ", ".join(f"{_label(r)} {_fmt(r['ucb_gap_to_oracle_pct'])}" for r in comm)
                      if comm else "no grid point where communication dominates"),
         "consistent": jd["verdict"], "judgement": jd, "setup": setup,
         "details": [{"preset": r["preset"], "delay_ms": r["delay_ms"], "rtt_share": r["rtt_share_of_oracle_time"],
                      "ucb_gap_to_oracle_pct": r["ucb_gap_to_oracle_pct"]} for r in comm]}
    e = {"id": "e", "key": "vs-naive-ucb", "claim": "UCB-SpecStop beats naive (per-arm) UCB",
         "paper": "up to 7.5% better",
         "measured": _up_to_text(je, [r["ucb_vs_naive_pct"]["mean"] for r in rows]),
         "consistent": je["verdict"], "judgement": je, "setup": setup, "details": table}
    return [c, d, e]


# --------------------------------------------------------------------------- (f)
def _oracle_name() -> str:
    """Which oracle the drift claim (f) compares with: the per-round local rule until the path DP exists.

    The local rule ``k*(mean rtt now)`` is not optimal under jitter (SPEC 4); once the clairvoyant
    dynamic program on the known delay path is the ``oracle`` (and the local rule the agent
    ``local-oracle``), this names it.
    """
    from agents.registry import AGENTS

    if "local-oracle" in AGENTS:
        return "clairvoyant oracle (dynamic program on the known delay path)"
    return "clairvoyant oracle (local k* at the current mean rtt, not optimal under jitter)"


def claim_drift(budget: PaperBudget, seeds: list[int], tick: Callable[[], None]) -> dict[str, Any]:
    """(f) static k tuned for the first delay regime, best fixed k in hindsight, ucb-specstop, oracle."""
    from ..oracle import optimal_k_for_costs
    from ..scenarios import build_acceptance

    rows = []
    preset = _scenario("drift", budget)
    assert preset.drift_schedule is not None
    times = [t for t, _ in preset.drift_schedule]
    levels = [d for _, d in preset.drift_schedule]
    rotated = tuple(zip(times, levels[1:] + levels[:1]))  # the same levels, starting with the second
    variants = ((f"{preset.drift_mode}, {levels[0]:g} ms first", {}),
                (f"{preset.drift_mode}, {rotated[0][1]:g} ms first", {"drift_schedule": rotated}),
                (f"{'linear' if preset.drift_mode == 'step' else 'step'}, {levels[0]:g} ms first",
                 {"drift_mode": "linear" if preset.drift_mode == "step" else "step"}))
    for tag, ov in variants:
        sc = _scenario("drift", budget, requests_per_episode=budget.drift_requests, **ov)
        surv = build_acceptance(sc).survival(sc.max_draft)
        assert sc.drift_schedule is not None
        first = sc.drift_schedule[0][1]
        k1 = optimal_k_for_costs(surv, sc.marginal_cost_ms, first + sc.verify_base_ms)[0]
        static = f"static-k:k={k1}"
        comp = run_comparison(sc, [static, "best-fixed-k", "ucb-specstop", "oracle"], seeds)
        span_s = float(np.median([comp.runs["oracle"].columns["start_ms"][comp.runs["oracle"].seed_rows(i)].max()
                                  for i in range(len(seeds))]) / 1000.0)
        rows.append({"variant": tag, "first_level_ms": first, "static_k": int(k1), "static_spec": static,
                     "best_fixed_k": comp.runs["best-fixed-k"].extra["k"],
                     "episode_span_s": span_s, "drift_period_s": (sc.drift_period_ms or float("nan")) / 1000.0,
                     "static_gap_to_oracle_pct": _gap(comp, static),
                     "best_fixed_k_gap_to_oracle_pct": _gap(comp, "best-fixed-k"),
                     "ucb_gap_to_oracle_pct": _gap(comp, "ucb-specstop"),
                     "ucb_vs_static_pct": _rel(comp, static, "ucb-specstop"),
                     "gap_removed_pp": confidence_interval(
                         (comp.latency(static) - comp.latency("ucb-specstop")) / comp.latency("oracle") * 100.0),
                     "ucb_vs_best_fixed_k_pct": _rel(comp, "best-fixed-k", "ucb-specstop"),
                     "latency_ms": {lab: _lat(comp, lab) for lab in comp.runs}})
        tick()
    schedule_text = ", ".join(f"{d:g} ms from {t / 1000:g} s" for t, d in preset.drift_schedule)
    period_s = f"{preset.drift_period_ms / 1000:g}" if preset.drift_period_ms else "none"
    jf = judge([point(r["variant"], r["gap_removed_pp"]) for r in rows], paper=(14.0, 18.7), bound=0.0,
               claimed="above")
    measured = "; ".join(
        f"{r['variant']}: static k={r['static_k']} leaves {_fmt(r['static_gap_to_oracle_pct'])}, ucb-specstop "
        f"{_fmt(r['ucb_gap_to_oracle_pct'])}, so {_fmt(r['gap_removed_pp'], unit=' pp')} removed"
        + (" (ucb-specstop worse than static)" if against(point(r["variant"], r["gap_removed_pp"]), 0.0, "above")
           else "")
        + f" (best fixed k {_fmt(r['best_fixed_k_gap_to_oracle_pct'])})" for r in rows)
    return {"id": "f", "key": "drift", "claim": "Static tuning leaves a gap under delay drift; UCB-SpecStop removes it",
            "paper": "14.0-18.7% gap removed", "measured": measured,
            "consistent": jf["verdict"], "judgement": jf,
            "setup": (f"drift preset (mean rtt schedule {schedule_text}, period {period_s} s, "
                      f"{preset.drift_mode}; jitter cv {preset.drift_cv:g}), the same starting at the other level, "
                      "and with the other drift mode; "
                      f"{budget.drift_requests} requests per run; static k = the first level's k*; best fixed k "
                      "in hindsight per seed; gap removed = (static - ucb-specstop) / oracle, percentage points; "
                      f"gaps to the {_oracle_name()}"),
            "details": rows}


# --------------------------------------------------------------------------- (g)
def claim_csi(budget: PaperBudget, seeds: list[int], tick: Callable[[], None]) -> dict[str, Any]:
    """(g) contextual-ucb (per-state delay statistics) vs ucb-specstop on Markov channels with CSI."""
    rows = []
    for name in budget.csi_presets:
        sc = _scenario(name, budget, requests_per_episode=budget.csi_requests)
        comp = run_comparison(sc, ["ucb-specstop", "contextual-ucb", "oracle"], seeds)
        rows.append({"preset": name, "csi_gain_pct": _rel(comp, "ucb-specstop", "contextual-ucb"),
                     "ucb_gap_to_oracle_pct": _gap(comp, "ucb-specstop"),
                     "contextual_gap_to_oracle_pct": _gap(comp, "contextual-ucb"),
                     "latency_ms": {lab: _lat(comp, lab) for lab in comp.runs}})
        tick()
    jg = judge([point(r["preset"], r["csi_gain_pct"]) for r in rows], paper=(3.0, 6.8), bound=0.0, claimed="above")
    measured = "; ".join(f"{r['preset']}: {_fmt(r['csi_gain_pct'])}" for r in rows)
    return {"id": "g", "key": "csi", "claim": "Channel state information lowers per-token latency",
            "paper": "3.0-6.8% gained from CSI", "measured": "contextual-ucb vs ucb-specstop: " + measured,
            "consistent": jg["verdict"], "judgement": jg,
            "setup": (f"{', '.join(budget.csi_presets)} (state observed), {budget.csi_requests} requests per run; "
                      "the oracle is the Markov DP"),
            "details": rows}


# --------------------------------------------------------------------------- driver
def run_paper(out: str | Path, *, quick: bool = False, quiet: bool = False, command: str = "",
              budget: PaperBudget | None = None) -> dict[str, Any]:
    """Run every claim, write ``paper.json`` and ``paper.md`` into ``out``; returns the document."""
    from tqdm import tqdm

    budget = budget or (PaperBudget.quick() if quick else PaperBudget())
    seeds = list(range(budget.seeds))
    out = Path(out)
    n_steps = 10 + 2 * len(budget.grid_delays_ms) + 3 + len(budget.csi_presets)
    bar = tqdm(total=n_steps, desc="paper", unit="step", disable=quiet or not _isatty(), leave=False)
    timings: dict[str, float] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        bar.set_postfix(claim=key)
        value = fn()
        timings[key] = time.perf_counter() - t0
        return value

    tick = lambda: bar.update(1)
    t_start = time.perf_counter()
    claims = [timed("a", lambda: claim_critical_delay(budget, seeds, tick)),
              timed("b", lambda: claim_log_growth(budget))]
    grid = timed("c-e", lambda: delay_grid(budget, seeds, tick))
    claims += claims_from_grid(grid, budget)
    claims.append(timed("f", lambda: claim_drift(budget, seeds, tick)))
    claims.append(timed("g", lambda: claim_csi(budget, seeds, tick)))
    bar.close()
    from datetime import datetime, timezone

    doc = {
        "schema_version": PAPER_SCHEMA_VERSION,
        "kind": "specstop-gym paper claims",
        "paper": PAPER,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(),
        "quick": quick,
        "budget": asdict(budget),
        "seeds": seeds,
        "wall_s": time.perf_counter() - t_start,
        "wall_s_per_claim": timings,
        "claims": claims,
    }
    doc = to_jsonable(doc)
    write_json_atomic(out / "paper.json", doc)
    write_text_atomic(out / "paper.md", format_markdown(doc))
    return doc


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(doc: Mapping[str, Any]) -> str:
    """paper.md: the claims table, then the delay-grid table of (c)-(e)."""
    b = doc["budget"]
    lines = [f"# {PAPER}: claims measured on specstop-gym presets", "",
             (f"Command: `{doc.get('command', '')}`; {len(doc['seeds'])} seeds"
              f"{' (quick budget: noisy)' if doc.get('quick') else ''}; {doc['wall_s']:.0f} s."), "",
             "| | claim | paper | measured here (mean ± 95% CI) | verdict | significantly against the claim |",
             "|---|---|---|---|---|---|"]
    for c in doc["claims"]:
        cons = c.get("consistent") or "-"
        j = c.get("judgement")
        opp = against_text(j) if j else "-"
        lines.append(f"| ({c['id']}) | {_md(c['claim'])} | {_md(c['paper'])} | {_md(c['measured'])} | {cons} | "
                     f"{_md(opp)} |")
    lines += ["", ("Verdicts of (c)-(g) (docs/paper.md): every point the claim covers is *inside* (its 95% CI "
                   "meets the paper's range), *against* (significantly the other way) or *outside*; \"yes\" = all "
                   "inside (for \"up to X\" the largest point's CI also contains X), \"no\" = none inside, "
                   "else \"partly\"."), ""]
    for c in doc["claims"]:
        j = c.get("judgement")
        if not j:
            continue
        lo, hi = j["paper_range"]
        reach = ("" if j.get("reaches_up_to") is None else
                 f". Largest: {j['largest']['label']} {_fmt(j['largest'])}, "
                 f"{'reaches' if j['reaches_up_to'] else 'does not reach'} {hi:g}%")
        lines.append(f"* ({c['id']}) paper range {lo:g} to {hi:g}. Inside: {'; '.join(j['inside']) or 'none'}. "
                     f"Outside: {'; '.join(j['outside']) or 'none'}. Against: {'; '.join(j['against']) or 'none'}"
                     f"{reach}.")
    lines += ["", "Setups:", ""]
    for c in doc["claims"]:
        lines.append(f"* ({c['id']}) {c['setup']}")
    grid = next((c for c in doc["claims"] if c["key"] == "vs-specdec"), None)
    if grid and grid["details"]:
        lines += ["", ("Delay grid of (c)-(e) (mean ± 95% CI over seeds): ucb-specstop's advantage over each "
                       "baseline, % (positive = ucb-specstop lower), and its gap to the oracle:"), "",
                  (f"| preset | delay ms | rtt share | vs `{SPECDEC_TUNED}` | vs `{SPECDEC_DEFAULT}` (0.7) | "
                   f"vs `{NAIVE_UCB}` | gap to oracle |"),
                  "|---|---|---|---|---|---|---|"]
        for r in grid["details"]:
            lines.append(f"| {r['preset']} | {r['delay_ms']:g} | {r['rtt_share']:.2f} | "
                         f"{_fmt(r['ucb_vs_specdec_pct'])} | {_fmt(r.get('ucb_vs_specdec_default_pct'))} | "
                         f"{_fmt(r['ucb_vs_naive_pct'])} | {_fmt(r['ucb_gap_to_oracle_pct'])} |")
        labels = [lab for lab in (SPECDEC_TUNED, SPECDEC_DEFAULT, NAIVE_UCB, "ucb-specstop")
                  if all(lab in r.get("gap_to_oracle_pct", {}) for r in grid["details"])]
        if labels:
            lines += ["", "Gap to the oracle of every agent on the grid, % (mean ± 95% CI):", "",
                      "| preset | delay ms | " + " | ".join(f"`{lab}`" for lab in labels) + " |",
                      "|---|---|" + "---|" * len(labels)]
            for r in grid["details"]:
                lines.append(f"| {r['preset']} | {r['delay_ms']:g} | "
                             + " | ".join(_fmt(r["gap_to_oracle_pct"][lab]) for lab in labels) + " |")
    lines += ["", f"Budget: {', '.join(f'{k}={v}' for k, v in b.items())}.", ""]
    return "\n".join(lines)
