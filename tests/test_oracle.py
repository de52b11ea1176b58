"""Tests for specstop_gym.oracle: brute force, closed forms and Monte Carlo."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from specstop_gym.oracle import (
    MarkovDPSolution,
    best_fixed_k,
    critical_delay,
    expected_request_time_fixed_k,
    optimal_draft_length,
    optimal_k_for_costs,
    per_token_latency,
    rho_curve,
    solve_markov_dp,
    stationary_distribution,
    threshold_k,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def random_profile(rng: np.random.Generator, kmax: int = 16) -> np.ndarray:
    """Random survival S_1..S_K from a_i ~ U[0, 1], K ~ U{1..kmax}."""
    k = int(rng.integers(1, kmax + 1))
    return np.cumprod(rng.uniform(0.0, 1.0, size=k))


def random_costs(rng: np.random.Generator) -> dict[str, float]:
    """Random draft/verify costs (ms) and a delay spanning 0..10_000 ms."""
    delay_kind = rng.integers(3)
    if delay_kind == 0:
        delay = float(rng.uniform(0.0, 50.0))
    elif delay_kind == 1:
        delay = float(rng.uniform(0.0, 10_000.0))
    else:
        delay = float(10.0 ** rng.uniform(-2.0, 4.0))
    return {
        "draft_ms": float(rng.uniform(0.0, 30.0)),
        "verify_base_ms": float(rng.uniform(0.0, 80.0)),
        "verify_per_token_ms": float(rng.uniform(0.0, 5.0)),
        "delay_ms": delay,
    }


def brute_force(survival: np.ndarray, costs: dict[str, float]) -> tuple[int, float]:
    """Plain python loop: smallest k minimising per_token_latency."""
    c = costs["draft_ms"] + costs["verify_per_token_ms"]
    b = costs["delay_ms"] + costs["verify_base_ms"]
    best_k, best_rho = 0, math.inf
    acc = 1.0
    for k in range(1, len(survival) + 1):
        acc += float(survival[k - 1])
        rho = (k * c + b) / acc
        if rho < best_rho:
            best_k, best_rho = k, rho
    return best_k, best_rho


# ---------------------------------------------------------------------------
# stationary oracle
# ---------------------------------------------------------------------------


def test_optimal_draft_length_matches_brute_force_and_threshold_form() -> None:
    rng = np.random.default_rng(20240601)
    for _ in range(600):
        s = random_profile(rng)
        costs = random_costs(rng)
        k_star, rho_star = optimal_draft_length(s, **costs)
        k_bf, rho_bf = brute_force(s, costs)
        assert k_star == k_bf
        assert rho_star == pytest.approx(rho_bf, rel=1e-12)
        # per_token_latency agrees with the loop
        assert per_token_latency(s, k_star, **costs) == pytest.approx(rho_bf, rel=1e-12)
        # threshold (Dinkelbach) form
        c = costs["draft_ms"] + costs["verify_per_token_ms"]
        if rho_star > 0:
            k_thr = max(1, int(np.sum(s > c / rho_star)))
            assert k_thr == k_star
        assert threshold_k(s, c, rho_star) == k_star


def test_rho_curve_and_cost_helpers() -> None:
    s = np.array([0.9, 0.72, 0.5])
    rho = rho_curve(s, 3.0, 50.0)
    expected = [(3.0 + 50.0) / 1.9, (6.0 + 50.0) / 2.62, (9.0 + 50.0) / 3.12]
    np.testing.assert_allclose(rho, expected, rtol=1e-14)
    k, r = optimal_k_for_costs(s, 3.0, 50.0)
    assert k == int(np.argmin(expected)) + 1
    assert r == pytest.approx(min(expected))
    # ties resolve to the smallest k: c = 0, B > 0, S_2 = S_3 = 0
    assert optimal_k_for_costs([0.5, 0.0, 0.0], 0.0, 10.0)[0] == 1
    # everything free: rho == 0 everywhere, k = 1
    assert optimal_k_for_costs([0.5, 0.4], 0.0, 0.0) == (1, 0.0)
    assert threshold_k([0.5, 0.4], 0.0, 0.0) == 1


def test_k_star_monotone_in_delay_and_finite() -> None:
    rng = np.random.default_rng(7)
    delays = np.concatenate([[0.0], np.logspace(-1, 6, 120)])
    for _ in range(100):
        s = random_profile(rng)
        costs = random_costs(rng)
        ks = []
        for d in delays:
            costs["delay_ms"] = float(d)
            ks.append(optimal_draft_length(s, **costs)[0])
        assert all(b >= a for a, b in zip(ks, ks[1:]))
        costs["delay_ms"] = 1e12
        k_big, rho_big = optimal_draft_length(s, **costs)
        assert 1 <= k_big <= len(s)
        assert math.isfinite(rho_big)


def test_critical_delay_closed_form_and_bisection() -> None:
    rng = np.random.default_rng(99)
    checked = 0
    while checked < 150:
        s = random_profile(rng)
        if len(s) < 2 or s[1] <= 1e-6:
            continue
        costs = random_costs(rng)
        del costs["delay_ms"]
        c = costs["draft_ms"] + costs["verify_per_token_ms"]
        d_c = critical_delay(s, **costs)
        assert d_c == pytest.approx(
            c * (1 + s[0] - s[1]) / s[1] - costs["verify_base_ms"], rel=1e-12, abs=1e-12
        )

        def k_at(d: float, s: np.ndarray = s, costs: dict[str, float] = costs) -> int:
            return optimal_draft_length(s, **costs, delay_ms=d)[0]

        if k_at(0.0) > 1:
            assert d_c <= 1e-9
        else:
            assert d_c >= 0.0
            hi = max(1.0, 2.0 * d_c)
            while k_at(hi) == 1:
                hi *= 2.0
            lo = 0.0
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                if k_at(mid) > 1:
                    hi = mid
                else:
                    lo = mid
                if hi - lo <= 1e-10 * max(1.0, hi):
                    break
            assert hi == pytest.approx(d_c, rel=1e-7, abs=1e-7)
            assert k_at(d_c) == 1
        checked += 1


def test_critical_delay_infinite_cases() -> None:
    kw = {"draft_ms": 5.0, "verify_base_ms": 10.0, "verify_per_token_ms": 1.0}
    assert critical_delay([0.8], **kw) == math.inf
    assert critical_delay([0.8, 0.0, 0.0], **kw) == math.inf
    for d in [0.0, 1e3, 1e9]:
        assert optimal_draft_length([0.8, 0.0, 0.0], **kw, delay_ms=d)[0] == 1


@pytest.mark.parametrize("alpha", [0.5, 0.7, 0.9])
def test_geometric_logarithmic_growth(alpha: float) -> None:
    s = alpha ** np.arange(1, 1501)
    delays = np.logspace(3, 7, 200)
    ks = np.array(
        [
            optimal_draft_length(
                s, draft_ms=2.0, verify_base_ms=10.0, verify_per_token_ms=0.5, delay_ms=float(d)
            )[0]
            for d in delays
        ]
    )
    assert ks.max() < len(s)  # not capped by K
    slope = np.polyfit(np.log(delays), ks, 1)[0]
    assert slope == pytest.approx(1.0 / math.log(1.0 / alpha), rel=0.10)


# ---------------------------------------------------------------------------
# Markov dynamic program
# ---------------------------------------------------------------------------


def test_dp_single_state_matches_stationary_rho() -> None:
    s = np.cumprod([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3])
    kw = {"draft_ms": 4.0, "verify_base_ms": 15.0, "verify_per_token_ms": 0.8}
    delay = 120.0
    n = 3000
    sol = solve_markov_dp(
        s, n_tokens=n, generator_per_ms=[[0.0]], rtt_mean_ms=[delay], rtt_cv=[0.7], **kw
    )
    assert isinstance(sol, MarkovDPSolution)
    k_star, rho_star = optimal_draft_length(s, **kw, delay_ms=delay)
    v = sol.value_ms[:, 0]
    assert v[n] / n == pytest.approx(rho_star, rel=5e-3)
    # the end of the request costs O(1) rounds, not O(n)
    assert abs(v[n] - n * rho_star) < 2 * (len(s) * 4.8 + 15.0 + delay)
    assert (v[n] - v[n - 200]) / 200 == pytest.approx(rho_star, rel=1e-6)
    assert sol.k(n, 0) == k_star
    assert sol.per_token_latency_ms() == pytest.approx(v[n] / n)
    assert sol.k_table[0, 0] == 0
    # fixed k in a stationary channel: V_k(n) ~ n * rho(k)
    for k in (1, 3, 10):
        vk = expected_request_time_fixed_k(
            s, k, n_tokens=n, generator_per_ms=[[0.0]], rtt_mean_ms=delay, rtt_cv=0.7, **kw
        )
        assert vk.shape == (1,)
        assert vk[0] / n == pytest.approx(per_token_latency(s, k, **kw, delay_ms=delay), rel=5e-3)
        assert vk[0] >= v[n] - 1e-9


def test_dp_zero_generator_two_states_independent() -> None:
    s = 0.8 ** np.arange(1, 13)
    kw = {"draft_ms": 3.0, "verify_base_ms": 10.0, "verify_per_token_ms": 1.0}
    n = 2000
    sol = solve_markov_dp(
        s, n_tokens=n, generator_per_ms=np.zeros((2, 2)), rtt_mean_ms=[10.0, 500.0],
        rtt_cv=[0.0, 0.0], **kw,
    )
    for state, delay in enumerate([10.0, 500.0]):
        k_star, rho_star = optimal_draft_length(s, **kw, delay_ms=delay)
        assert sol.value_ms[n, state] / n == pytest.approx(rho_star, rel=5e-3)
        assert sol.k(n, state) == k_star
    np.testing.assert_allclose(stationary_distribution(np.zeros((2, 2))), [0.5, 0.5])


def simulate_ctmc(
    rng: np.random.Generator, q: np.ndarray, state: int, duration: float
) -> int:
    """Exact CTMC path simulation over ``duration`` ms (exponential holding times)."""
    t = 0.0
    m = q.shape[0]
    while True:
        rate = -q[state, state]
        if rate <= 0.0:
            return state
        t += rng.exponential(1.0 / rate)
        if t > duration:
            return state
        u = rng.random() * rate
        acc = 0.0
        nxt = state
        for j in range(m):
            if j == state:
                continue
            acc += q[state, j]
            if u < acc:
                nxt = j
                break
        state = nxt


def simulate_request(
    rng: np.random.Generator,
    policy: Any,
    survival: np.ndarray,
    q: np.ndarray,
    state: int,
    n_tokens: int,
    rtt_mean: np.ndarray,
    rtt_cv: np.ndarray,
    bandwidth_kbps: np.ndarray,
    bytes_per_token: float,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
) -> float:
    """Independent plain-python simulator of the SPEC 4 Markov model; returns total ms."""
    a = np.empty(len(survival))
    prev = 1.0
    for i, si in enumerate(survival):
        a[i] = si / prev if prev > 0 else 0.0
        prev = si
    n_left = n_tokens
    total = 0.0
    while n_left > 0:
        k = policy(n_left, state)
        s1 = simulate_ctmc(rng, q, state, k * draft_ms)
        if rtt_cv[s1] == 0.0:
            rtt = float(rtt_mean[s1])
        else:
            sig2 = math.log(1.0 + rtt_cv[s1] ** 2)
            rtt = float(rng.lognormal(math.log(rtt_mean[s1]) - 0.5 * sig2, math.sqrt(sig2)))
        tx = k * bytes_per_token * 8.0 / bandwidth_kbps[s1]
        rest = rtt + verify_base_ms + k * verify_per_token_ms + tx
        total += k * draft_ms + rest
        accepted = 0
        while accepted < k and rng.random() < a[accepted]:
            accepted += 1
        n_left -= min(accepted + 1, n_left)
        state = simulate_ctmc(rng, q, s1, rest)
    return total


def test_dp_monte_carlo_matches_value() -> None:
    survival = np.cumprod([0.97, 0.93, 0.9, 0.7, 0.6, 0.55, 0.5, 0.5])
    q = np.array([[-1 / 150.0, 1 / 150.0], [1 / 90.0, -1 / 90.0]])
    params = {
        "rtt_mean": np.array([25.0, 220.0]),
        "rtt_cv": np.array([0.4, 1.0]),
        "bandwidth_kbps": np.array([4000.0, 300.0]),
        "bytes_per_token": 40.0,
        "draft_ms": 6.0,
        "verify_base_ms": 12.0,
        "verify_per_token_ms": 1.5,
    }
    n = 18
    sol = solve_markov_dp(
        survival, n_tokens=n, generator_per_ms=q, rtt_mean_ms=params["rtt_mean"],
        rtt_cv=params["rtt_cv"], draft_ms=6.0, verify_base_ms=12.0, verify_per_token_ms=1.5,
        bandwidth_kbps=params["bandwidth_kbps"], bytes_per_token=40.0,
    )
    assert len(set(sol.k_table[1:].ravel().tolist())) > 1  # a non-trivial policy
    rng = np.random.default_rng(12345)
    n_req = 4000
    for state in range(2):
        times = np.array(
            [
                simulate_request(rng, sol.k, survival, q, state, n, **params)
                for _ in range(n_req)
            ]
        )
        se = times.std(ddof=1) / math.sqrt(n_req)
        assert abs(times.mean() - sol.value_ms[n, state]) < 4.0 * se


def test_dp_beats_best_fixed_k_in_modulated_channel() -> None:
    survival = 0.8 ** np.arange(1, 11)
    q = np.array([[-1 / 5000.0, 1 / 5000.0], [1 / 5000.0, -1 / 5000.0]])
    channel = {
        "generator_per_ms": q,
        "rtt_mean_ms": [20.0, 400.0],
        "rtt_cv": [0.3, 0.3],
        "draft_ms": 5.0,
        "verify_base_ms": 20.0,
        "verify_per_token_ms": 1.0,
    }
    n = 80
    sol = solve_markov_dp(survival, n_tokens=n, **channel)
    fixed = np.array(
        [
            expected_request_time_fixed_k(survival, k, n_tokens=n, **channel)
            for k in range(1, len(survival) + 1)
        ]
    )  # (K, M)
    dp = sol.value_ms[n]
    assert (dp <= fixed.min(axis=0) + 1e-9).all()
    pi = stationary_distribution(q)
    best_fixed_avg = (fixed @ pi).min()
    assert dp @ pi < 0.98 * best_fixed_avg  # strict improvement from CSI
    assert sol.per_token_latency_ms() == pytest.approx(dp @ pi / n)
    # the bad (high-delay) state drafts at least as long as the good one
    assert (sol.k_table[1:, 1] >= sol.k_table[1:, 0]).all()
    assert (sol.k_table[n // 2 :, 1] > sol.k_table[n // 2 :, 0]).all()


def test_stationary_distribution() -> None:
    q = np.array([[-0.2, 0.2], [0.05, -0.05]])
    pi = stationary_distribution(q)
    np.testing.assert_allclose(pi, [0.2, 0.8], atol=1e-12)
    np.testing.assert_allclose(pi @ q, 0.0, atol=1e-12)
    assert stationary_distribution([[0.0]]).tolist() == [1.0]


def test_solution_is_frozen_and_k_validates() -> None:
    sol = solve_markov_dp(
        [0.8, 0.6], n_tokens=5, generator_per_ms=[[0.0]], rtt_mean_ms=50.0, rtt_cv=0.0,
        draft_ms=1.0, verify_base_ms=1.0, verify_per_token_ms=0.0,
    )
    with pytest.raises(ValueError):
        sol.k_table[1, 0] = 2
    with pytest.raises(ValueError, match="n_left"):
        sol.k(0, 0)
    with pytest.raises(ValueError, match="n_left"):
        sol.k(6, 0)
    with pytest.raises(ValueError, match="state"):
        sol.k(1, 1)
    with pytest.raises(ValueError, match="initial_distribution"):
        sol.per_token_latency_ms([0.5, 0.5])
    assert sol.value_ms.shape == (6, 1) and sol.k_table.dtype.kind == "i"


# ---------------------------------------------------------------------------
# best fixed k in hindsight
# ---------------------------------------------------------------------------


def test_best_fixed_k_tiny_example() -> None:
    assert best_fixed_k([100.0, 90.0, 120.0], [2, 3, 3]) == (2, 30.0)
    assert best_fixed_k([60.0, 90.0], [2, 3]) == (1, 30.0)  # tie -> smaller k
    with pytest.raises(ValueError, match="per_k_total_tokens"):
        best_fixed_k([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="per_k_total_tokens"):
        best_fixed_k([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="per_k_total_time_ms"):
        best_fixed_k([], [])
    with pytest.raises(ValueError, match="per_k_total_time_ms"):
        best_fixed_k([np.nan], [1])


# ---------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------

GOOD = {"draft_ms": 5.0, "verify_base_ms": 10.0, "verify_per_token_ms": 1.0, "delay_ms": 50.0}


@pytest.mark.parametrize(
    "survival",
    [[], [[0.5, 0.4]], [0.5, np.nan], [1.2, 0.5], [0.5, -0.1], [0.4, 0.5], "abc"],
)
def test_bad_survival(survival: Any) -> None:
    with pytest.raises(ValueError, match="survival"):
        optimal_draft_length(survival, **GOOD)
    with pytest.raises(ValueError, match="survival"):
        per_token_latency(survival, 1, **GOOD)
    kw = {k: v for k, v in GOOD.items() if k != "delay_ms"}
    with pytest.raises(ValueError, match="survival"):
        critical_delay(survival, **kw)
    with pytest.raises(ValueError, match="survival"):
        rho_curve(survival, 1.0, 1.0)


def test_survival_tolerance() -> None:
    # increases within 1e-12 are tolerated
    k, _ = optimal_draft_length([0.5, 0.5 + 1e-13, 0.2], **GOOD)
    assert 1 <= k <= 3


@pytest.mark.parametrize("name", list(GOOD))
@pytest.mark.parametrize("bad", [-1.0, np.nan, math.inf, "x", [1.0]])
def test_bad_times(name: str, bad: Any) -> None:
    args = dict(GOOD)
    args[name] = bad
    with pytest.raises(ValueError, match=name):
        optimal_draft_length([0.9, 0.8], **args)
    with pytest.raises(ValueError, match=name):
        per_token_latency([0.9, 0.8], 1, **args)
    if name != "delay_ms":
        del args["delay_ms"]
        with pytest.raises(ValueError, match=name):
            critical_delay([0.9, 0.8], **args)


@pytest.mark.parametrize("k", [0, 3, -1, 1.5, 2.0, True, "1", None])
def test_bad_k(k: Any) -> None:
    with pytest.raises(ValueError, match="k"):
        per_token_latency([0.9, 0.8], k, **GOOD)


def test_k_accepts_numpy_integer() -> None:
    assert per_token_latency([0.9, 0.8], np.int64(2), **GOOD) == pytest.approx(
        (2 * 6.0 + 60.0) / 2.7
    )


def test_bad_cost_helper_args() -> None:
    with pytest.raises(ValueError, match="marginal_cost_ms"):
        rho_curve([0.5], -1.0, 1.0)
    with pytest.raises(ValueError, match="fixed_cost_ms"):
        optimal_k_for_costs([0.5], 1.0, np.nan)
    with pytest.raises(ValueError, match="lam"):
        threshold_k([0.5], 1.0, -2.0)


DP_GOOD: dict[str, Any] = {
    "n_tokens": 10,
    "generator_per_ms": [[-0.01, 0.01], [0.02, -0.02]],
    "rtt_mean_ms": [20.0, 200.0],
    "rtt_cv": [0.5, 0.5],
    "draft_ms": 5.0,
    "verify_base_ms": 10.0,
    "verify_per_token_ms": 1.0,
    "bandwidth_kbps": [1000.0, 100.0],
    "bytes_per_token": 20.0,
    "quadrature_points": 16,
}


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("n_tokens", 0),
        ("n_tokens", 2.5),
        ("generator_per_ms", [[-0.01, 0.01]]),
        ("generator_per_ms", [[0.01, -0.01], [0.02, -0.02]]),
        ("generator_per_ms", [[-0.01, 0.02], [0.02, -0.02]]),
        ("generator_per_ms", [[np.nan, 0.0], [0.0, 0.0]]),
        ("rtt_mean_ms", [20.0, 200.0, 5.0]),
        ("rtt_mean_ms", [20.0, -1.0]),
        ("rtt_mean_ms", [0.0, 20.0]),
        ("rtt_cv", [0.5]),
        ("rtt_cv", [0.5, np.nan]),
        ("rtt_cv", [0.5, -0.5]),
        ("bandwidth_kbps", [1000.0]),
        ("bandwidth_kbps", [1000.0, 0.0]),
        ("bytes_per_token", -1.0),
        ("draft_ms", -1.0),
        ("verify_base_ms", np.nan),
        ("verify_per_token_ms", -0.1),
        ("quadrature_points", 0),
    ],
)
def test_bad_dp_inputs(name: str, bad: Any) -> None:
    args = dict(DP_GOOD)
    args[name] = bad
    with pytest.raises(ValueError, match=name):
        solve_markov_dp([0.9, 0.8], **args)
    with pytest.raises(ValueError, match=name):
        expected_request_time_fixed_k([0.9, 0.8], 1, **args)


def test_bad_dp_survival_and_k() -> None:
    with pytest.raises(ValueError, match="survival"):
        solve_markov_dp([0.5, 0.9], **DP_GOOD)
    with pytest.raises(ValueError, match="k"):
        expected_request_time_fixed_k([0.9, 0.8], 3, **DP_GOOD)
    with pytest.raises(ValueError, match="generator_per_ms"):
        stationary_distribution([[1.0, -1.0], [0.0, 0.0]])
