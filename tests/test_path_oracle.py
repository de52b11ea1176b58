"""The path oracle (specstop_gym.path_oracle): exact on its discretised model, and what it reduces to.

* the DP equals brute-force enumeration of every deterministic policy on tiny discretised models
  (a trace path and a jittered drift path; one request and two chained requests);
* the forward check propagates the DP's policy to the DP's own value (nothing leaks);
* on a constant trace it is the finite-horizon DP over tokens left (the stationary ``k*`` while
  many tokens are left); under i.i.d. jitter (a flat drift schedule) it does at least as well as
  every fixed ``k`` (exact expectations) and than every static-k on the simulator's draws;
* the error of the time grid shrinks under refinement; the path equals the simulator's mean rtt;
  per-request values recomputed from checkpoints are bit-identical; bad input is refused.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.core.channel import Channel
from specstop_gym.evaluation import run_agent
from specstop_gym.evaluation.runner import seed_keys
from specstop_gym.oracle import expected_request_time_fixed_k, optimal_k_for_costs, solve_markov_dp
from specstop_gym.path_oracle import DelayPath, _jitter_nodes, path_from_channel, solve_path_dp
from specstop_gym.scenarios import build_acceptance, build_channel, build_simulator


# --------------------------------------------------------------------------- brute force
def _brute_force(survival, path, *, n_tokens, n_requests, draft_ms, vb, vp, grid_ms, hi, jitter_nodes=3):
    """min over every deterministic policy of the expected episode time on the discretised model.

    The model, written out independently of the DP: states (p, i), i in 0..hi (every level has
    the window [0, hi]); action k costs k c + vb + m(i h + k draft_ms); the landing time
    x = i h + k c + vb + m e_j (jitter node j, weight w_j) goes to the grid points floor(x/h) and
    floor(x/h) + 1 with the linear weights, clamped to the window; outcome a (P = S_a - S_{a+1},
    a < k; S_k at a = k) moves to level p + min(a + 1, tokens left).
    """
    h = grid_ms
    c = draft_ms + vp
    e, w = _jitter_nodes(path.jitter_cv, jitter_nodes)
    S = np.concatenate([[1.0], survival, [0.0]])
    K = len(survival)
    L = n_tokens * n_requests

    def succ(p, i, k):
        m = float(path.mean_rtt_ms(i * h + k * draft_ms))
        cost = k * c + vb + m
        n = n_tokens - p % n_tokens
        out = []
        for ej, wj in zip(e, w):
            u = (i * h + k * c + vb + m * ej) / h
            i0 = int(np.floor(u))
            fr = u - i0
            for a in range(k + 1):
                pa = S[a] - S[a + 1] if a < k else S[k]
                pt = p + min(a + 1, n)
                for v, wt in ((i0, 1.0 - fr), (i0 + 1, fr)):
                    if wt * pa * wj > 0:
                        out.append((pt, min(max(v, 0), hi), wj * pa * wt))
        return cost, out

    # reachable states from (0, 0) under any policy
    states, todo = {(0, 0)}, [(0, 0)]
    while todo:
        p, i = todo.pop()
        for k in range(1, K + 1):
            for pt, it, _ in succ(p, i, k)[1]:
                if pt < L and (pt, it) not in states:
                    states.add((pt, it))
                    todo.append((pt, it))
    order = sorted(states, reverse=True)  # higher levels first: transitions only go up
    model = {(s, k): succ(*s, k) for s in order for k in range(1, K + 1)}
    best = np.inf
    for ks in itertools.product(range(1, K + 1), repeat=len(order)):
        v = {}
        for s, k in zip(order, ks):
            cost, out = model[(s, k)]
            v[s] = cost + sum(wt * (v[(pt, it)] if pt < L else 0.0) for pt, it, wt in out)
        best = min(best, v[(0, 0)])
    return best, len(order)


TINY = [
    # (survival, path, n_tokens, n_requests, grid ms, window top, jitter nodes)
    ([0.6, 0.3], DelayPath("trace", [0.0, 30.0, 60.0], [40.0, 10.0, 80.0], duration_ms=90.0, offset_ms=17.0),
     3, 1, 10.0, 7, 1),
    ([0.7, 0.4], DelayPath("trace", [0.0, 25.0, 50.0, 75.0], [15.0, 60.0, 5.0, 30.0], duration_ms=100.0),
     2, 2, 10.0, 4, 1),
    ([0.8, 0.5, 0.2], DelayPath("drift", [0.0, 40.0], [20.0, 70.0], period_ms=80.0, jitter_cv=0.3),
     2, 1, 10.0, 6, 3),
]


@pytest.mark.parametrize("survival, path, n_tokens, n_requests, grid, hi, nodes", TINY)
def test_dp_equals_brute_force_enumeration(survival, path, n_tokens, n_requests, grid, hi, nodes) -> None:
    L = n_tokens * n_requests
    draft = 7.0  # not a multiple of the grid: a round is sent between grid points
    sol = solve_path_dp(survival, path, n_tokens=n_tokens, n_requests=n_requests, draft_ms=draft,
                        verify_base_ms=5.0, verify_per_token_ms=0.5, grid_ms=grid, jitter_nodes=nodes,
                        windows=(np.zeros(L, np.int64), np.full(L, hi, np.int64)))
    brute, n_states = _brute_force(np.array(survival), path, n_tokens=n_tokens, n_requests=n_requests,
                                   draft_ms=draft, vb=5.0, vp=0.5, grid_ms=grid, hi=hi, jitter_nodes=nodes)
    assert n_states >= 6  # the enumeration is not trivial (K^states policies)
    assert sol.value_ms == pytest.approx(brute, rel=1e-12)
    # with windows that hold every reachable time the forward check (which propagates the true
    # times, where the tiny windows above clamp them) carries the DP's policy to the DP's value
    wide = solve_path_dp(survival, path, n_tokens=n_tokens, n_requests=n_requests, draft_ms=draft,
                         verify_base_ms=5.0, verify_per_token_ms=0.5, grid_ms=grid, jitter_nodes=nodes,
                         windows=(np.zeros(L, np.int64), np.full(L, 200, np.int64)))
    assert wide.leak == 0.0 and wide.overflow == 0.0
    assert wide.expected_time_ms == pytest.approx(wide.value_ms, rel=1e-12)


# --------------------------------------------------------------------------- reductions
def _dp(cfg, grid_ms=10.0, offset_ms=0.0, **kw):
    s = build_acceptance(cfg).survival(cfg.max_draft)
    return solve_path_dp(s, path_from_channel(build_channel(cfg), offset_ms), n_tokens=cfg.n_tokens,
                         n_requests=cfg.requests_per_episode, draft_ms=cfg.draft_ms,
                         verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms,
                         grid_ms=grid_ms, **kw)


def test_constant_trace_is_the_finite_horizon_dp(tmp_path) -> None:
    """On a constant trace the remaining time does not depend on the clock, so the path DP is
    the DP over tokens left of one channel state (chained over requests: R times its value), and
    it plays that DP's k at every (progress, time): the stationary k* while many tokens are left."""
    from specstop_gym.traces import DelayTrace, write_delay_trace

    f = tmp_path / "flat.csv"
    write_delay_trace(f, DelayTrace(t_ms=np.arange(0.0, 60_000.0, 50.0), rtt_ms=np.full(1200, 150.0)))
    cfg = make_scenario("qwen-geometric", channel="trace", delay_trace=str(f), n_tokens=48,
                        requests_per_episode=3)
    s = build_acceptance(cfg).survival(cfg.max_draft)
    sol = _dp(cfg)
    ref = solve_markov_dp(s, n_tokens=cfg.n_tokens, generator_per_ms=[[0.0]], rtt_mean_ms=150.0, rtt_cv=0.0,
                          draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                          verify_per_token_ms=cfg.verify_per_token_ms)
    assert sol.value_ms == pytest.approx(3 * ref.value_ms[cfg.n_tokens, 0], rel=1e-12)
    assert sol.expected_time_ms == pytest.approx(sol.value_ms, rel=1e-10)
    rng = np.random.default_rng(0)
    p = rng.integers(0, sol.levels, 400)
    t = rng.uniform(sol.lo[p], sol.hi[p]) * sol.grid_ms
    left = cfg.n_tokens - p % cfg.n_tokens
    np.testing.assert_array_equal(sol.k(p, t), ref.k_table[left, 0])
    k_star = optimal_k_for_costs(s, cfg.marginal_cost_ms, 150.0 + cfg.verify_base_ms)[0]
    assert (ref.k_table[3 * cfg.max_draft:, 0] == k_star).all()


def test_iid_jitter_at_least_as_good_as_every_fixed_k() -> None:
    """A flat drift schedule is an i.i.d. lognormal channel: the path DP's expected episode time is
    at most that of every fixed k (exact: expected_request_time_fixed_k), and on the simulator's
    draws the oracle is not beaten by any static-k beyond noise."""
    cfg = make_scenario("drift", drift_schedule=((0.0, 200.0),), drift_period_ms=None, drift_cv=0.3,
                        n_tokens=64, requests_per_episode=2)
    s = build_acceptance(cfg).survival(cfg.max_draft)
    sol = _dp(cfg)
    fixed = [2 * expected_request_time_fixed_k(s, k, n_tokens=cfg.n_tokens, generator_per_ms=[[0.0]],
                                               rtt_mean_ms=200.0, rtt_cv=0.0, draft_ms=cfg.draft_ms,
                                               verify_base_ms=cfg.verify_base_ms,
                                               verify_per_token_ms=cfg.verify_per_token_ms)[0]
             for k in range(1, cfg.max_draft + 1)]
    assert sol.value_ms <= min(fixed) * (1 + 1e-12)
    assert sol.value_ms < sorted(fixed)[1]  # strictly better than all but the best fixed k
    seeds = list(range(12))
    oracle = run_agent(make_agent("oracle", cfg, n_runs=len(seeds)), cfg, seeds)
    for k in range(1, cfg.max_draft + 1):
        other = run_agent(make_agent("static-k", cfg, n_runs=len(seeds), k=k), cfg, seeds)
        d = other.per_token_latency_ms - oracle.per_token_latency_ms
        half = 2.2 * d.std(ddof=1) / np.sqrt(len(seeds))
        assert d.mean() >= -half, (k, d.mean(), half)


def test_refinement_shrinks_the_grid_error() -> None:
    """A drift schedule switching 40 <-> 400 ms every 3 s: the DP's value at h = 20, 10, 5 ms moves
    less at each halving (and by little)."""
    cfg = make_scenario("drift", n_tokens=96, requests_per_episode=2, drift_schedule=((0.0, 40.0), (3000.0, 400.0)),
                        drift_period_ms=6000.0)
    v = [_dp(cfg, g).value_ms for g in (20.0, 10.0, 5.0)]
    assert abs(v[2] - v[1]) < abs(v[1] - v[0])
    assert abs(v[2] - v[1]) < 2e-3 * v[2]


def test_dp_value_matches_the_simulator() -> None:
    """The oracle's simulated episode time on a trace offset agrees with its DP's expected time
    within Monte-Carlo noise and the grid's error (same offset, different acceptance draws)."""
    cfg = make_scenario("trace-cellular", n_tokens=128, requests_per_episode=1, delay_trace_offset=False)
    sol = _dp(cfg)
    seeds = list(range(48))
    run = run_agent(make_agent("oracle", cfg, n_runs=len(seeds)), cfg, seeds)
    t = run.total_time_ms
    half = 2.0 * t.std(ddof=1) / np.sqrt(t.size)
    assert abs(t.mean() - sol.value_ms) < half + 2e-3 * sol.value_ms, (t.mean(), sol.value_ms, half)


def test_path_is_the_channels_mean_rtt() -> None:
    for name, over in (("drift", {}), ("drift", {"drift_mode": "linear"}), ("trace-starlink", {})):
        cfg = make_scenario(name, **over)
        sim = build_simulator(cfg, 3)
        sim.reset_rows(np.arange(3), seed_keys([0, 1, 2]))
        for row in range(3):
            path = path_from_channel(sim.channel, sim.rows.offset_ms[row])
            t = np.random.default_rng(row).uniform(0, 3e5, 2000)
            want = Channel.mean_rtt_ms(sim.channel, sim.rows, np.full(t.size, row), t, np.zeros(t.size, np.int64))
            np.testing.assert_array_equal(path.mean_rtt_ms(t), want)


def test_recomputed_blocks_are_bit_identical() -> None:
    """Values kept per request and recomputed from checkpoints are the bits the first pass had
    (kept whole when small): the same decisions in any order of visiting the requests."""
    cfg = make_scenario("drift", n_tokens=48, requests_per_episode=4)
    whole = _dp(cfg)
    a, b = _dp(cfg, keep_values_mb=0.0), _dp(cfg, keep_values_mb=0.0)
    p = np.arange(0, a.levels, 7)
    t = (a.lo[p] + a.hi[p]) / 2 * a.grid_ms
    ka = a.k(p, t)  # walks through the requests in order (blocks recomputed from checkpoints)
    kb = b.k(p[::-1], t[::-1])[::-1]  # backwards: another cache history
    np.testing.assert_array_equal(ka, kb)
    np.testing.assert_array_equal(ka, whole.k(p, t))
    assert a.blocks_recomputed >= 3 and whole.blocks_recomputed == 0
    ptr_w, vals_w = whole._block(0)
    for r in range(4):
        ptr, vals = a._block(r)
        for lev in range(r * cfg.n_tokens, (r + 1) * cfg.n_tokens):
            wd = a.hi[lev] - a.lo[lev] + 1
            np.testing.assert_array_equal(vals[ptr[lev]:ptr[lev] + wd], vals_w[ptr_w[lev]:ptr_w[lev] + wd])
    assert a.leak < 1e-6 and a.overflow < 1e-12
    assert a.expected_time_ms == pytest.approx(a.value_ms, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_tokens": 0}, "n_tokens"),
    ({"draft_ms": float("nan")}, "draft_ms"),
    ({"verify_base_ms": -1.0}, "verify_base_ms"),
    ({"grid_ms": 0.0}, "grid_ms"),
    ({"windows": (np.zeros(3, np.int64), np.zeros(2, np.int64))}, "windows"),
    ({"jitter_nodes": 0}, "jitter_nodes"),
])
def test_bad_input_is_refused(kwargs, message) -> None:
    path = DelayPath("trace", [0.0, 50.0], [30.0, 60.0], duration_ms=100.0)
    args = {"n_tokens": 4, "n_requests": 1, "draft_ms": 20.0, "verify_base_ms": 16.0, "verify_per_token_ms": 0.1}
    with pytest.raises(ValueError, match=message):
        solve_path_dp([0.5, 0.25], path, **{**args, **kwargs})
    with pytest.raises(ValueError, match="duration_ms"):
        DelayPath("trace", [0.0], [10.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        DelayPath("drift", [0.0, 10.0, 5.0], [1.0, 2.0, 3.0])


def test_too_large_a_problem_is_a_clear_error() -> None:
    """A drift episode of 100,000 tokens would need hundreds of millions of grid states: refused
    with a message that names the way out, before any large allocation."""
    cfg = make_scenario("drift", n_tokens=100_000)
    with pytest.raises(ValueError, match="local-oracle"):
        make_agent("oracle", cfg, n_runs=1)
