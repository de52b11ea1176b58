"""The path oracle per request (specstop_gym.path_request and the per-request mode of path_oracle).

* one request whose end is valued by a continuation g, and the first of two requests optimised
  for its own objective, equal brute-force enumeration of every deterministic policy;
* the per-request policy's expected episode time, from the forward check, equals an independent
  policy evaluation of the same policy, and is at least the whole-episode DP's value;
* the shared DP on the path's loop equals the per-run DP from the same start (trace, jittered
  periodic drift, drift without a period; both continuations);
* on a drift episode the per-request policy is within the bound of docs/model.md of the exact DP;
* the oracle agent: deterministic (threads, repeated runs), one request is the episode DP,
  bad parameters are refused, a run seen mid-request without its start is refused.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent
from specstop_gym.path_oracle import Continuation, DelayPath, _jitter_nodes, _survival_arrays, solve_path_dp
from specstop_gym.path_request import RequestPlanner, solve_request_from, solve_request_shared

DRAFT, VB, VP = 7.0, 5.0, 0.5  # a draft time that is not a multiple of the grid


def _model(survival, path, n_tokens, n_requests, grid_ms, hi, jitter_nodes, g=None, per_request=False,
           end_term=False):
    """The discretised per-request model written out independently of the DP: states (p, i) with
    i in 0..hi; action k costs k c + vb + m(i h + k draft); the landing time goes to the two
    neighbouring grid points with the linear weights; a level beyond the window is read at its edge;
    the start of the next request is valued g (per-request mode, at the clamped point), the end of
    the last g (end_term, at the unclamped point) or 0. Returns the successor function."""
    h = grid_ms
    c = DRAFT + VP
    e, w = _jitter_nodes(path.jitter_cv, jitter_nodes)
    S = np.concatenate([[1.0], survival, [0.0]])
    K = len(survival)
    L = n_tokens * n_requests

    def succ(p, i, k):
        m = float(path.mean_rtt_ms(i * h + k * DRAFT))
        cost = k * c + VB + m
        n = n_tokens - p % n_tokens
        out = []  # (target level, grid point or None, weight, fixed value)
        for ej, wj in zip(e, w):
            u = (i * h + k * c + VB + m * ej) / h
            i0 = int(np.floor(u))
            fr = u - i0
            for a in range(k + 1):
                pa = S[a] - S[a + 1] if a < k else S[k]
                pt = p + min(a + 1, n)
                for v, wt in ((i0, 1.0 - fr), (i0 + 1, fr)):
                    if wt * pa * wj <= 0:
                        continue
                    vc = min(max(v, 0), hi)
                    if pt >= L:
                        out.append((None, None, wj * pa * wt, g(v) if end_term else 0.0))
                    elif per_request and pt % n_tokens == 0:
                        out.append((None, None, wj * pa * wt, g(vc)))
                    else:
                        out.append((pt, vc, wj * pa * wt, 0.0))
        return cost, out

    return succ, K, L


def _reachable(succ, K, start=(0, 0)):
    states, todo = {start}, [start]
    while todo:
        p, i = todo.pop()
        for k in range(1, K + 1):
            for pt, it, _, _ in succ(p, i, k)[1]:
                if pt is not None and (pt, it) not in states:
                    states.add((pt, it))
                    todo.append((pt, it))
    return sorted(states, reverse=True)  # higher levels first: transitions only go up


def _value(order, actions, table):
    v = {}
    for s, k in zip(order, actions):
        cost, out = table[(s, k)]
        v[s] = cost + sum(wt * (v[(pt, it)] if pt is not None else fixed) for pt, it, wt, fixed in out)
    return v


def _brute_min(succ, K):
    order = _reachable(succ, K)
    table = {(s, k): succ(*s, k) for s in order for k in range(1, K + 1)}
    best = min(_value(order, ks, table)[(0, 0)] for ks in itertools.product(range(1, K + 1), repeat=len(order)))
    return best, len(order)


TRACE = DelayPath("trace", [0.0, 30.0, 60.0], [40.0, 10.0, 80.0], duration_ms=90.0, offset_ms=17.0)
DRIFT = DelayPath("drift", [0.0, 40.0], [20.0, 70.0], period_ms=80.0, jitter_cv=0.3)


def _cont(kind, path, survival):
    _, S_cum, _ = _survival_arrays(survival)
    return Continuation(kind, path, S_cum, DRAFT + VP, VB)


@pytest.mark.parametrize("survival, path, n_tokens, n_requests, hi, nodes, end_term", [
    ([0.6, 0.3], TRACE, 3, 1, 7, 1, True),    # one request, its end valued by g
    ([0.7, 0.4], TRACE, 3, 2, 5, 1, False),   # the first of two requests, for its own objective
    ([0.8, 0.5, 0.2], DRIFT, 2, 1, 6, 3, True),
])
def test_per_request_dp_equals_brute_force(survival, path, n_tokens, n_requests, hi, nodes, end_term) -> None:
    L = n_tokens * n_requests
    cont = _cont("token-clock", path, survival)
    g_grid = lambda v: float(cont.at(path.offset_ms + v * 10.0))  # noqa: E731
    assert np.ptp([g_grid(v) for v in range(hi + 1)]) > 1.0  # g is not a constant here
    sol = solve_path_dp(survival, path, n_tokens=n_tokens, n_requests=n_requests, draft_ms=DRAFT, verify_base_ms=VB,
                        verify_per_token_ms=VP, grid_ms=10.0, jitter_nodes=nodes, continuation=cont,
                        ends_episode=not end_term, windows=(np.zeros(L, np.int64), np.full(L, hi, np.int64)))
    succ, K, _ = _model(np.array(survival), path, n_tokens, n_requests, 10.0, hi, nodes, g=g_grid,
                        per_request=True, end_term=end_term)
    brute, n_states = _brute_min(succ, K)
    assert n_states >= 5
    assert sol.value_ms == pytest.approx(brute, rel=1e-12)


def test_per_request_policy_value_by_policy_evaluation() -> None:
    """Two requests of two tokens, per request (g = token clock): the forward check's expected episode
    time equals the episode time of the same grid policy evaluated backwards over the reachable
    states, and is at least the whole-episode DP's value (which is the brute-force minimum)."""
    survival, path, N, R = [0.7, 0.4], TRACE, 2, 2
    L, hi = N * R, 200  # windows that hold every reachable time: nothing is clamped
    win = (np.zeros(L, np.int64), np.full(L, hi, np.int64))
    kw = dict(n_tokens=N, n_requests=R, draft_ms=DRAFT, verify_base_ms=VB, verify_per_token_ms=VP, grid_ms=10.0,
              jitter_nodes=1, windows=win)
    per = solve_path_dp(survival, path, continuation="token-clock", **kw)
    whole = solve_path_dp(survival, path, **kw)
    assert per.leak == 0.0 and per.overflow == 0.0
    succ, K, _ = _model(np.array(survival), path, N, R, 10.0, hi, 1)
    order = _reachable(succ, K)
    assert max(i for _, i in order) < hi
    actions = [int(per.k(p, i * 10.0)) for p, i in order]  # the grid policy (exact-time rule at grid points)
    table = {(s, k): succ(*s, k) for s, k in zip(order, actions)}
    evaluated = _value(order, actions, table)[(0, 0)]
    assert per.expected_time_ms == pytest.approx(evaluated, rel=1e-10)
    assert evaluated >= whole.value_ms * (1.0 - 1e-12)
    assert whole.expected_time_ms == pytest.approx(whole.value_ms, rel=1e-10)


@pytest.mark.parametrize("path", [
    DelayPath("trace", np.arange(0.0, 2000.0, 25.0), np.random.default_rng(1).uniform(5.0, 120.0, 80),
              duration_ms=2000.0),
    DelayPath("drift", [0.0, 300.0], [20.0, 150.0], period_ms=600.0, jitter_cv=0.3),
    DelayPath("drift", [0.0, 300.0], [20.0, 150.0], jitter_cv=0.3),  # no period: constant from 300 ms on
])
@pytest.mark.parametrize("continuation", ["token-clock", "completion"])
def test_shared_dp_equals_the_dp_from_the_start(path, continuation) -> None:
    """The DP on the path's loop is the per-run DP from any start on the loop's grid (values kept in
    float32: agreement to their precision)."""
    survival = [0.8, 0.6, 0.4]
    kw = dict(n_tokens=12, draft_ms=DRAFT, verify_base_ms=VB, verify_per_token_ms=VP, grid_ms=10.0)
    shared = solve_request_shared(survival, path, continuation=continuation, **kw)
    for start in (0.0, 250.0, 1990.0, 5000.0):
        last = continuation == "completion"
        own = solve_request_from(survival, path, start, last=last, continuation=continuation, **kw)
        s = float(shared.path_time(start))
        assert shared.value(0, s) == pytest.approx(own.value_ms, rel=1e-6, abs=1e-3)
        q = np.arange(1, 12, 3)  # reachable states (the middle of their windows; level 0 is only t = 0)
        t = (own.lo[q] + own.hi[q]) / 2 * own.grid_ms
        np.testing.assert_allclose([shared.value(int(a), float(shared.path_time(start + b))) for a, b in zip(q, t)],
                                   [own.value(int(a), float(b)) for a, b in zip(q, t)], rtol=1e-6, atol=1e-3)


def test_per_request_is_within_the_bound_on_drift() -> None:
    """drift (40 <-> 400 ms every 20 s), 3 requests of 64 tokens: the per-request policy's exact
    expected episode time is at least the whole-episode DP's value, and within 0.05 % of it (the
    bound measured on the presets is at most 0.02 %, docs/model.md)."""
    cfg = make_scenario("drift", n_tokens=64, requests_per_episode=3)
    from specstop_gym.path_oracle import path_from_channel
    from specstop_gym.scenarios import build_acceptance, build_channel

    s = build_acceptance(cfg).survival(cfg.max_draft)
    kw = dict(n_tokens=cfg.n_tokens, n_requests=3, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
              verify_per_token_ms=cfg.verify_per_token_ms)
    path = path_from_channel(build_channel(cfg))
    whole = solve_path_dp(s, path, **kw)
    for g in ("token-clock", "completion"):
        per = solve_path_dp(s, path, continuation=g, **kw)
        assert per.leak < 1e-6 and whole.leak < 1e-6
        gap = (per.expected_time_ms - whole.value_ms) / whole.value_ms
        assert -1e-9 <= gap <= 5e-4, (g, gap)


# --------------------------------------------------------------------------- the agent
def _columns(spec, cfg, seeds):
    run = run_agent(make_agent(spec, cfg, n_runs=len(seeds)), cfg, seeds)
    return run.columns["k"].copy(), run.per_token_latency_ms


def test_oracle_per_request_is_deterministic() -> None:
    """The same draws and decisions whatever the threads, and again in a second run (cached DPs)."""
    cfg = make_scenario("trace-starlink", n_tokens=64, requests_per_episode=3)
    seeds = [0, 1, 2, 3]
    a = _columns("oracle:threads=1", cfg, seeds)
    b = _columns("oracle:threads=2", cfg, seeds)
    c = _columns("oracle:threads=2,shared=false", cfg, seeds)
    for x in (b, c):
        np.testing.assert_array_equal(a[0], x[0])
        np.testing.assert_array_equal(a[1], x[1])
    d = _columns("oracle:shared=true", cfg, seeds)
    e = _columns("oracle:shared=true", cfg, seeds)
    np.testing.assert_array_equal(d[0], e[0])


def test_one_request_is_the_episode_dp() -> None:
    """With one request per episode the per-request DP is the whole-episode DP: the same run."""
    cfg = make_scenario("trace-cellular", n_tokens=96)
    seeds = [0, 1, 2]
    a = _columns("oracle", cfg, seeds)
    b = _columns("oracle:scope=episode", cfg, seeds)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("params, field", [({"scope": "run"}, "scope"), ({"continuation": "zero"}, "continuation"),
                                           ({"shared": "yes"}, "shared")])
def test_bad_oracle_parameters_are_refused(params, field) -> None:
    with pytest.raises(ValueError, match=field):
        make_agent("oracle", make_scenario("drift"), n_runs=1, **params)


def test_planner_needs_every_request_start() -> None:
    planner = RequestPlanner([0.6, 0.3], TRACE, n_tokens=4, n_requests=2, n_runs=1, draft_ms=DRAFT,
                             verify_base_ms=VB, verify_per_token_ms=VP, shared=False)
    with pytest.raises(ValueError, match="not seen starting"):
        planner.k([0], [2], [30.0], [0.0])
    k0 = planner.k([0], [0], [0.0], [0.0])
    assert k0.shape == (1,) and 1 <= k0[0] <= 2
    assert planner.k([0], [1], [40.0], [0.0]).shape == (1,)


def test_results_record_the_oracle_without_its_solve_timings() -> None:
    """summary.json must be the same on every run and backend: the oracle's description keeps its
    solve times (benchmarks read them), the recorded one does not."""
    from specstop_gym.evaluation.runner import TIMING_KEYS

    def keys(d):
        if isinstance(d, dict):
            for k, v in d.items():
                yield k
                yield from keys(v)
        elif isinstance(d, list):
            for v in d:
                yield from keys(v)

    for preset in ("drift", "trace-nr5g"):
        sc = make_scenario(preset, requests_per_episode=2, n_tokens=32)
        agent = make_agent("oracle", sc, n_runs=2)
        run = run_agent(agent, sc, [0, 1])
        assert TIMING_KEYS & set(keys(agent.describe()))  # the agent still reports them
        assert not TIMING_KEYS & set(keys(run.description))
        assert run.description["per_request"]["continuation"] == agent.describe()["per_request"]["continuation"]
