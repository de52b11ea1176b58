"""The clairvoyant oracles as agents (SPEC 4): ``oracle`` and ``local-oracle``."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.acceptance import SwitchingProfileAcceptance
from specstop_gym.core.config import ScenarioConfig
from specstop_gym.oracle import (
    MarkovDPSolution,
    optimal_k_for_costs,
    solve_markov_dp,
    solve_markov_dp_episode,
)
from specstop_gym.path_oracle import (
    PathDPSolution,
    check_problem_size,
    path_from_channel,
    solve_path_dp,
)
from specstop_gym.path_request import RequestPlanner, SharedRequestDP, solve_request_shared
from specstop_gym.scenarios import build_acceptance, build_channel
from specstop_gym.signal_oracle import (
    LatentSignalModel,
    dinkelbach_lambda,
    observation_from_confidence,
    should_continue,
)

from .base import Agent, RoundContext, RoundFeedback, TokenContext
from .ucb_specstop import batch_optimal_k

__all__ = ["LocalOracle", "OracleAgent", "default_grid_ms"]


@functools.lru_cache(maxsize=16)
def _markov_dp(survival: tuple[float, ...], n_tokens: int, generator: Any, rtt_mean: Any, rtt_cv: Any,
               draft_ms: float, verify_base_ms: float, verify_per_token_ms: float, bandwidth: Any,
               bytes_per_token: float) -> MarkovDPSolution:
    """:func:`solve_markov_dp`, cached: its tables are read-only, so agents can share them."""
    return solve_markov_dp(
        np.array(survival), n_tokens=n_tokens, generator_per_ms=generator, rtt_mean_ms=rtt_mean,
        rtt_cv=rtt_cv, draft_ms=draft_ms, verify_base_ms=verify_base_ms,
        verify_per_token_ms=verify_per_token_ms, bandwidth_kbps=bandwidth, bytes_per_token=bytes_per_token)


def _survival(scenario: ScenarioConfig) -> np.ndarray:
    return np.asarray(build_acceptance(scenario).survival(scenario.max_draft), dtype=np.float64)


def _tx_per_token_ms(scenario: ScenarioConfig) -> float:
    if scenario.bandwidth_kbps is None or scenario.bytes_per_token == 0:
        return 0.0
    return scenario.bytes_per_token * 8.0 / scenario.bandwidth_kbps


@functools.lru_cache(maxsize=8)
def _episode_markov_dp(scenario: ScenarioConfig) -> tuple[MarkovDPSolution, ...]:
    """The chained per-request DPs of a whole episode (``markov``, and ``constant``/``iid`` as one state)."""
    s = _survival(scenario)
    if scenario.channel == "markov":
        bandwidth = scenario.markov_bandwidth_kbps
        sols = solve_markov_dp_episode(
            s, n_tokens=scenario.n_tokens, n_requests=scenario.requests_per_episode,
            generator_per_ms=scenario.markov_generator_per_ms, rtt_mean_ms=scenario.markov_rtt_mean_ms,
            rtt_cv=scenario.markov_rtt_cv, draft_ms=scenario.draft_ms, verify_base_ms=scenario.verify_base_ms,
            verify_per_token_ms=scenario.verify_per_token_ms, bandwidth_kbps=bandwidth,
            bytes_per_token=scenario.bytes_per_token)
        return tuple(sols)
    # constant / iid: the rtt of every round is a fresh draw with the same mean, so the state is
    # the tokens left alone, and every request has the same table (time and history carry nothing).
    # Acceptance that switches between two profiles over time: one such table per regime.
    acc = build_acceptance(scenario)
    survivals = ([acc.survival_of(r, scenario.max_draft) for r in (0, 1)]
                 if isinstance(acc, SwitchingProfileAcceptance) else [s])
    return tuple(solve_markov_dp(sv, n_tokens=scenario.n_tokens, generator_per_ms=[[0.0]],
                                 rtt_mean_ms=scenario.delay_ms, rtt_cv=0.0, draft_ms=scenario.draft_ms,
                                 verify_base_ms=scenario.verify_base_ms,
                                 verify_per_token_ms=scenario.verify_per_token_ms + _tx_per_token_ms(scenario))
                 for sv in survivals)


def default_grid_ms(scenario: ScenarioConfig) -> float:
    """The path oracle's default time step (ms): ``draft_ms / 2``, at most 10 ms (docs/model.md,
    "Discretisation", measures the refinement)."""
    return min(10.0, scenario.draft_ms / 2.0)


def signal_model(scenario: ScenarioConfig) -> LatentSignalModel | None:
    """The latent model of the confidence signal when it informs the stopping decision: latent
    acceptance with a signal (profile and geometric acceptance: the signal is noise around a
    constant, independent of the draws; see :mod:`specstop_gym.signal_oracle`), else None."""
    if scenario.acceptance != "latent" or scenario.confidence_sigma is None:
        return None
    assert scenario.profile is not None
    return LatentSignalModel.from_profile(scenario.profile, scenario.max_draft, tau=scenario.latent_tau,
                                          eps_sigma=scenario.latent_eps_sigma,
                                          signal_sigma=scenario.confidence_sigma)


def _signal_lambda(scenario: ScenarioConfig, lookahead: int) -> dict[str, Any]:
    """Dinkelbach's fixed point of the signal rule on a stationary channel (B = mean rtt + verify base)."""
    c = scenario.marginal_cost_ms
    b = scenario.delay_ms + scenario.verify_base_ms
    start = optimal_k_for_costs(_survival(scenario), c, b)[1]
    return _signal_lambda_cached(tuple(scenario.profile or ()), scenario.max_draft, scenario.latent_tau,
                                 scenario.latent_eps_sigma, float(scenario.confidence_sigma or 0.0), c, b, start,
                                 lookahead)


@functools.lru_cache(maxsize=16)
def _signal_lambda_cached(profile: tuple[float, ...], max_draft: int, tau: float, eps_sigma: float, sigma: float,
                          c: float, b: float, start: float, lookahead: int) -> dict[str, Any]:
    """Cached on what the fixed point depends on (not on the episode's length, say)."""
    model = LatentSignalModel.from_profile(profile, max_draft, tau=tau, eps_sigma=eps_sigma, signal_sigma=sigma)
    return dinkelbach_lambda(model, cost_ms=c, fixed_cost_ms=b, lookahead=lookahead, start=start)


@functools.lru_cache(maxsize=4)
def _drift_dp(scenario: ScenarioConfig, grid_ms: float, jitter_nodes: int) -> PathDPSolution:
    """One path DP serves every seed of a drift scenario (the schedule does not depend on the seed)."""
    return _solve_path(scenario, path_from_channel(build_channel(scenario)), grid_ms, jitter_nodes, keep_mb=64.0)


@functools.lru_cache(maxsize=8)
def _scenario_path(scenario: ScenarioConfig) -> Any:
    """The known path of a drift or trace scenario (offset 0), cached: reading a trace file is not free."""
    return path_from_channel(build_channel(scenario))


@functools.lru_cache(maxsize=4)
def _shared_request_dp(scenario: ScenarioConfig, grid_ms: float, jitter_nodes: int,
                       continuation: str) -> SharedRequestDP:
    """One request's DP on the loop of the scenario's path: every run, request and trace offset
    reads it (:func:`specstop_gym.path_request.solve_request_shared`); cached across agents."""
    return solve_request_shared(_survival(scenario), _scenario_path(scenario),
                                n_tokens=scenario.n_tokens, draft_ms=scenario.draft_ms,
                                verify_base_ms=scenario.verify_base_ms,
                                verify_per_token_ms=scenario.verify_per_token_ms,
                                tx_per_token_ms=_tx_per_token_ms(scenario), grid_ms=grid_ms,
                                jitter_nodes=jitter_nodes, continuation=continuation)


#: Memory (MB) the values of a trace's per-offset DPs may take together before each is kept per
#: request and recomputed from checkpoints (one more backward pass each; at least 8 MB per DP).
TRACE_VALUES_BUDGET_MB = 384.0


def _solve_path(scenario: ScenarioConfig, path: Any, grid_ms: float, jitter_nodes: int,
                keep_mb: float = 16.0) -> PathDPSolution:
    """The path DP of a scenario. ``keep_mb``: values kept whole up to this size (64 MB for the one
    DP of a drift scenario; for a trace's per-offset DPs a share of TRACE_VALUES_BUDGET_MB), else
    per request."""
    return solve_path_dp(_survival(scenario), path, n_tokens=scenario.n_tokens,
                         n_requests=scenario.requests_per_episode, draft_ms=scenario.draft_ms,
                         verify_base_ms=scenario.verify_base_ms, verify_per_token_ms=scenario.verify_per_token_ms,
                         tx_per_token_ms=_tx_per_token_ms(scenario), grid_ms=grid_ms, jitter_nodes=jitter_nodes,
                         keep_values_mb=keep_mb)


class OracleAgent(Agent):
    """``oracle``: the clairvoyant optimum of SPEC 4; the reference of regret and gaps.

    Knows the acceptance process (the exact survival ``S_1..S_K`` of
    ``build_acceptance(scenario)``) and the channel model, not the random draws. It is optimal
    for the whole episode (``requests_per_episode`` requests of ``n_tokens`` tokens back to
    back), over round-level policies that may read the ground truth:

    * ``constant`` / ``iid``: the finite-horizon DP over the tokens left
      (:func:`specstop_gym.oracle.solve_markov_dp` with one state): the stationary ``k*`` while
      many tokens are left, shorter drafts near the end of a request (tokens past the request's
      end are worth nothing). The rtt of each round is a fresh draw, so nothing else matters.
      With acceptance that switches over time (``acceptance_switch_ms``, the ``prompt-switch``
      preset) one such DP per regime, played for the regime in force at the round's start: it
      knows the schedule but does not plan across a switch (regimes last hundreds of rounds).
    * ``markov``: the DP over (tokens left, channel state) chained over the requests
      (:func:`specstop_gym.oracle.solve_markov_dp_episode`); reads ``ctx.true_state``.
    * ``drift`` / ``trace``: the DP over (wall-clock time, progress) on the known delay path
      (:func:`specstop_gym.path_oracle.solve_path_dp`): the schedule (one DP for all seeds), or
      the replayed file from the episode's own offset (one DP per offset, read from
      ``ctx.true_trace_offset_ms``), with the per-round jitter and the acceptance in expectation.

    At the token level, with a confidence signal on latent acceptance and a stationary channel
    (``constant``/``iid``), it stops by the Bayes rule of :mod:`specstop_gym.signal_oracle`:
    after drafting ``j`` tokens it drafts another iff ``lam * P(tokens 1..j+1 accepted | the
    confidences so far) > c`` (exact posterior of the latent model with the scenario's
    parameters; ``lam`` = the rule's own long-run per-token latency, Dinkelbach's fixed point;
    at most ``min(K, tokens_left - 1)`` tokens, more cannot count). Everywhere else (no signal, a
    signal that carries no information, or a non-stationary channel) it plans ``k`` at the round
    start and stops there, as every round-level agent does at the token level.

    ``uses_ground_truth = True``. It tracks each run's progress (tokens committed in the
    episode, modulo the episode's tokens) from ``update``; it must see every round's feedback,
    as the runner gives it (a mismatch with ``ctx.tokens_left`` raises ValueError).

    Parameters:
        grid_ms (float, default :func:`default_grid_ms`): time step of the path DP (ms); the
            step used is the largest divisor of ``draft_ms`` not above it.
        jitter_nodes (int, default 3): Gauss-Hermite nodes for the drift's jitter.
        lookahead (int, default 1): steps of lookahead of the signal rule (2: also drafts when
            drafting and deciding again after the next confidence pays; docs/model.md).
        threads (int, default: the CPU count, at most 4): a trace's per-offset DPs are solved
            this many at a time (the kernels release the GIL; the results do not depend on it).
        signal (bool, default True): use the signal rule where it applies (False: plan k).

    Source: SPEC section 4; :mod:`specstop_gym.oracle`, :mod:`specstop_gym.path_oracle`,
    :mod:`specstop_gym.signal_oracle`.
    """

    name: ClassVar[str] = "oracle"
    uses_ground_truth: ClassVar[bool] = True

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 grid_ms: float | None = None, jitter_nodes: int = 3, lookahead: int = 1, signal: bool = True,
                 threads: int | None = None, scope: str = "request", continuation: str = "token-clock",
                 shared: bool | None = None, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        if threads is None:
            threads = min(4, os.cpu_count() or 1)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= 256:
            raise ValueError(f"threads must be an integer in 1..256, got {threads!r}")
        self.threads = int(threads)
        self._keep_mb = max(8.0, TRACE_VALUES_BUDGET_MB / self.n_runs)
        if lookahead not in (1, 2) or isinstance(lookahead, bool):
            raise ValueError(f"lookahead must be 1 or 2, got {lookahead!r}")
        if not isinstance(signal, bool):
            raise ValueError(f"signal must be true or false, got {signal!r}")
        if grid_ms is None:
            grid_ms = default_grid_ms(scenario)
        if isinstance(grid_ms, bool) or not isinstance(grid_ms, (int, float)) or not 0 < float(grid_ms) <= 1e6:
            raise ValueError(f"grid_ms must be a number in (0, 1e6] (ms), got {grid_ms!r}")
        if isinstance(jitter_nodes, bool) or not isinstance(jitter_nodes, (int, np.integer)) or not 1 <= jitter_nodes <= 64:
            raise ValueError(f"jitter_nodes must be an integer in 1..64, got {jitter_nodes!r}")
        if scope not in ("request", "episode"):
            raise ValueError(f"scope must be 'request' or 'episode', got {scope!r}")
        if continuation not in ("token-clock", "completion"):
            raise ValueError(f"continuation must be 'token-clock' or 'completion', got {continuation!r}")
        if shared is not None and not isinstance(shared, bool):
            raise ValueError(f"shared must be true or false (default: chosen by cost), got {shared!r}")
        self.scope = scope
        self.continuation = continuation
        self.grid_ms = float(grid_ms)
        self.jitter_nodes = int(jitter_nodes)
        self.n_tokens = scenario.n_tokens
        self.mode = {"constant": "finite-horizon", "iid": "finite-horizon", "markov": "markov",
                     "drift": "path", "trace": "path"}[scenario.channel]
        self._tables: tuple[MarkovDPSolution, ...] = ()
        self._drift: PathDPSolution | None = None
        self._trace: dict[float, PathDPSolution] = {}
        self._trace_channel: Any = None
        self._planner: RequestPlanner | None = None
        if self.mode in ("finite-horizon", "markov"):
            self._tables = _episode_markov_dp(scenario)
        elif scope == "request":
            path = _scenario_path(scenario)
            costs = dict(draft_ms=scenario.draft_ms, verify_base_ms=scenario.verify_base_ms,
                         verify_per_token_ms=scenario.verify_per_token_ms, tx_per_token_ms=_tx_per_token_ms(scenario),
                         grid_ms=self.grid_ms)
            # one request's DP (per run) must fit; the shared DP is used only where it fits
            check_problem_size(_survival(scenario), path, n_tokens=scenario.n_tokens, n_requests=1, **costs)
            self._planner = RequestPlanner(
                _survival(scenario), path, n_tokens=scenario.n_tokens, n_requests=scenario.requests_per_episode,
                n_runs=self.n_runs, jitter_nodes=self.jitter_nodes, continuation=continuation, shared=shared,
                shared_solver=lambda g: _shared_request_dp(scenario, self.grid_ms, self.jitter_nodes, g),
                threads=self.threads, **costs)
        elif scenario.channel == "drift":
            self._drift = _drift_dp(scenario, self.grid_ms, self.jitter_nodes)
        else:
            self._trace_channel = build_channel(scenario)
            # the per-offset DPs are solved when a run first needs them: refuse a too large one now
            check_problem_size(_survival(scenario), path_from_channel(self._trace_channel), n_tokens=scenario.n_tokens,
                               n_requests=scenario.requests_per_episode, draft_ms=scenario.draft_ms,
                               verify_base_ms=scenario.verify_base_ms,
                               verify_per_token_ms=scenario.verify_per_token_ms,
                               tx_per_token_ms=_tx_per_token_ms(scenario), grid_ms=self.grid_ms)
        self._progress = np.zeros(self.n_runs, np.int64)
        self.lookahead = int(lookahead)
        self._signal = signal_model(scenario) if signal and scenario.channel in ("constant", "iid") else None
        self._signal_fit: dict[str, Any] | None = None
        self._y = np.zeros((self.n_runs, self.max_draft))

    def reset(self) -> None:
        super().reset()
        self._progress[:] = 0

    def update(self, feedback: RoundFeedback) -> None:
        np.add.at(self._progress, np.asarray(feedback.rows, dtype=np.int64), np.asarray(feedback.tokens, np.int64))

    def _checked_progress(self, ctx: RoundContext) -> np.ndarray:
        # an episode commits exactly L tokens, so a run that goes on into a new episode (as in a
        # loop over episodes without reset) is at progress 0 again: count modulo L
        levels = self.n_tokens * self.scenario.requests_per_episode
        p = self._progress[np.asarray(ctx.rows, dtype=np.int64)] % levels
        left = np.asarray(ctx.tokens_left, dtype=np.int64)
        if (self.n_tokens - p % self.n_tokens != left).any():
            raise ValueError("oracle: its count of committed tokens disagrees with tokens_left; it must get "
                             "update() after every round of its runs (and reset() before new episodes)")
        return p

    def path_solution(self, offset_ms: float = 0.0) -> PathDPSolution:
        """The path DP this agent plays (drift: the one of the scenario; trace: the one of ``offset_ms``)."""
        if self._drift is not None:
            return self._drift
        if self._trace_channel is None:
            raise ValueError(f"oracle: no path DP on a {self.scenario.channel!r} channel")
        key = float(offset_ms)
        sol = self._trace.get(key)
        if sol is None:
            sol = _solve_path(self.scenario, path_from_channel(self._trace_channel, key), self.grid_ms,
                              self.jitter_nodes, self._keep_mb)
            self._trace[key] = sol
        return sol

    def _solve_offsets(self, offsets: list[float]) -> None:
        """The path DPs of new trace offsets, ``threads`` at a time."""
        if len(offsets) > 1 and self.threads > 1:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(offsets))) as pool:
                sols = list(pool.map(lambda o: _solve_path(self.scenario, path_from_channel(self._trace_channel, o),
                                                           self.grid_ms, self.jitter_nodes, self._keep_mb),
                                     offsets))
            self._trace.update(zip(offsets, sols))
        for off in offsets:
            self.path_solution(off)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        p = self._checked_progress(ctx)
        if self.mode == "finite-horizon":
            left = np.asarray(ctx.tokens_left, dtype=np.int64)
            if len(self._tables) == 2:  # acceptance that switches: the table of the regime in force
                acc = build_acceptance(self.scenario)
                assert isinstance(acc, SwitchingProfileAcceptance)
                regime = acc.regime(np.asarray(ctx.time_ms, dtype=np.float64))
                return np.where(regime == 0, self._tables[0].k_table[left, 0],
                                self._tables[1].k_table[left, 0]).astype(np.int64)
            return self._tables[0].k_table[left, 0].astype(np.int64)
        if self.mode == "markov":
            state = np.asarray(ctx.true_state, dtype=np.int64)
            m = self._tables[0].n_states
            if (state < 0).any() or (state >= m).any():
                raise ValueError(f"oracle: true_state {state!r} outside 0..{m - 1}")
            req = p // self.n_tokens
            left = np.asarray(ctx.tokens_left, dtype=np.int64)
            return np.array([self._tables[r].k_table[n, s] for r, n, s in zip(req, left, state)], dtype=np.int64)
        t = np.asarray(ctx.time_ms, dtype=np.float64)
        if self._planner is not None:
            if self.scenario.channel == "trace":
                if ctx.true_trace_offset_ms is None:
                    raise ValueError("oracle: a trace channel needs ctx.true_trace_offset_ms (the runner provides it)")
                offsets = np.asarray(ctx.true_trace_offset_ms, dtype=np.float64)
            else:
                offsets = np.zeros(len(p))
            return self._planner.k(np.asarray(ctx.rows, dtype=np.int64), p, t, offsets)
        if self._drift is not None:
            return self._drift.k(p, t)
        if ctx.true_trace_offset_ms is None:
            raise ValueError("oracle: a trace channel needs ctx.true_trace_offset_ms (the runner provides it)")
        offsets = np.asarray(ctx.true_trace_offset_ms, dtype=np.float64)
        self._solve_offsets([float(o) for o in np.unique(offsets) if float(o) not in self._trace])
        out = np.empty(len(p), np.int64)
        for off in np.unique(offsets):
            sel = offsets == off
            out[sel] = self.path_solution(float(off)).k(p[sel], t[sel])
        return out

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        if self._signal is None:
            return super().should_stop(ctx)
        if self._signal_fit is None:
            self._signal_fit = _signal_lambda(self.scenario, self.lookahead)
        self._checked_progress(ctx)
        rows = np.asarray(ctx.rows, dtype=np.int64)
        pos = np.asarray(ctx.position, dtype=np.int64)
        self._y[rows, pos - 1] = observation_from_confidence(self._signal, ctx.confidence, pos)
        cap = np.minimum(self.max_draft, np.maximum(1, np.asarray(ctx.tokens_left, dtype=np.int64) - 1))
        go = should_continue(self._signal, self._y[rows], pos, cap, lam=self._signal_fit["lam"],
                             cost_ms=self.scenario.marginal_cost_ms, lookahead=self.lookahead)
        return ~go

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "mode": self.mode}
        if self._signal is not None:
            out["token_rule"] = "signal (Bayes stopping, exact latent posterior)"
            out["lookahead"] = self.lookahead
            if self._signal_fit is not None:
                out["signal_lambda_ms"] = self._signal_fit["lam"]
        if self.mode == "path":
            out["scope"] = self.scope
            out["grid_ms"] = self.grid_ms
            out["jitter_nodes"] = self.jitter_nodes
            if self._planner is not None:
                out["per_request"] = self._planner.describe()
            elif self._drift is not None:
                out["dp"] = self._drift.describe()
            else:
                out["dp_per_offset"] = {f"{k:.6f}": v.describe() for k, v in self._trace.items()}
        return out


class LocalOracle(Agent):
    """``local-oracle``: the per-round rule ``k*(mean rtt at this moment)`` (reads ground truth).

    A useful comparison, not an optimum: under per-round jitter a fixed ``k`` beats it (the
    current rtt cancels out of the optimal ``k``, SPEC 4), and it ignores the end of a request.
    ``uses_ground_truth = True``: it reads ``ctx.true_state`` (Markov channels) and
    ``ctx.true_mean_rtt_ms`` (drift and trace channels). Survival
    ``S = build_acceptance(scenario).survival(max_draft)`` (exact), ``c = scenario.marginal_cost_ms``.

    Rule, by channel kind:

    * ``constant`` / ``iid``: the stationary optimum
      ``k* = argmin_k (k * c + B) / (1 + sum_{i<=k} S_i)`` with ``B = delay_ms + verify_base_ms``
      (:func:`specstop_gym.oracle.optimal_k_for_costs`), the same every round.
    * ``markov``: the per-request DP over (tokens left, channel state) of
      :func:`specstop_gym.oracle.solve_markov_dp` (each request solved alone), at the true state.
    * ``drift`` / ``trace``: the local optimum at this moment's mean rtt,
      ``k*(true_mean_rtt_ms + verify_base_ms)``, per run (vectorised
      :func:`~agents.ucb_specstop.batch_optimal_k`).

    Parameters: none. This was the project's ``oracle`` before the path DP (issue 11).

    Source: SPEC section 4 and :mod:`specstop_gym.oracle`.
    """

    name: ClassVar[str] = "local-oracle"
    uses_ground_truth: ClassVar[bool] = True

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        self.survival = _survival(scenario)
        self.marginal_cost_ms = float(scenario.marginal_cost_ms)
        self.mode = {"constant": "stationary", "iid": "stationary", "markov": "markov"}.get(
            scenario.channel, "local")
        self.k_stationary: int | None = None
        self.dp: MarkovDPSolution | None = None
        self.k_regimes: tuple[int, int] | None = None
        if self.mode == "stationary":
            fixed = scenario.delay_ms + scenario.verify_base_ms
            self.k_stationary = optimal_k_for_costs(self.survival, self.marginal_cost_ms, fixed)[0]
            acc = build_acceptance(scenario)
            if isinstance(acc, SwitchingProfileAcceptance):  # acceptance drifts: k* of the regime in force
                self.acceptance_switch = acc
                self.k_regimes = tuple(optimal_k_for_costs(acc.survival_of(r, self.max_draft),  # type: ignore
                                                           self.marginal_cost_ms, fixed)[0] for r in (0, 1))
        elif self.mode == "markov":
            self.dp = _markov_dp(
                tuple(self.survival.tolist()), scenario.n_tokens, scenario.markov_generator_per_ms,
                scenario.markov_rtt_mean_ms, scenario.markov_rtt_cv, scenario.draft_ms,
                scenario.verify_base_ms, scenario.verify_per_token_ms, scenario.markov_bandwidth_kbps,
                scenario.bytes_per_token)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        n = len(ctx.rows)
        if self.mode == "stationary":
            assert self.k_stationary is not None
            if self.k_regimes is not None:
                regime = self.acceptance_switch.regime(np.asarray(ctx.time_ms, dtype=np.float64))
                return np.asarray(self.k_regimes, dtype=np.int64)[regime]
            return np.full(n, self.k_stationary, dtype=np.int64)
        if self.mode == "markov":
            assert self.dp is not None
            table = self.dp.k_table
            left = np.clip(np.asarray(ctx.tokens_left, dtype=np.int64), 1, table.shape[0] - 1)
            state = np.asarray(ctx.true_state, dtype=np.int64)
            if (state < 0).any() or (state >= table.shape[1]).any():
                raise ValueError(f"local-oracle: true_state {state!r} outside 0..{table.shape[1] - 1}")
            return table[left, state].astype(np.int64)
        fixed = np.asarray(ctx.true_mean_rtt_ms, dtype=np.float64) + self.scenario.verify_base_ms
        return batch_optimal_k(self.survival, self.marginal_cost_ms, fixed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode}
