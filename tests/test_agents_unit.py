"""Unit tests of the agents (agents/): protocol, rules on scripted feedback, convergence.

Agents are driven directly against the batched simulator (no Gymnasium layer):
``build_simulator(config, batch_size=n_runs)``, explicit episode keys, contexts
built from the simulator's fields, feedback from its ``RoundResult``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from agents import (
    AGENTS,
    Agent,
    ContextualUCB,
    HeuristicSchedule,
    LocalOracle,
    OracleAgent,
    RoundContext,
    RoundFeedback,
    SpecDecPP,
    StaticK,
    TokenContext,
    UCBSpecStop,
    agent_names,
    batch_optimal_k,
    make_agent,
    parse_agent_spec,
    validate_k,
)
from specstop_gym.oracle import optimal_draft_length, optimal_k_for_costs, solve_markov_dp
from specstop_gym.scenarios import build_acceptance, build_simulator, make_scenario, scenario_names

# ---------------------------------------------------------------------------
# driving agents against the simulator
# ---------------------------------------------------------------------------


@dataclass
class Trace:
    """What happened in a drive: arrays of shape (n_rounds, n_runs)."""

    k: np.ndarray
    start_state: np.ndarray
    tokens_left: np.ndarray
    true_mean_rtt_ms: np.ndarray
    time_ms: np.ndarray
    tokens: np.ndarray


def round_context(sim, cfg, rows: np.ndarray) -> RoundContext:
    csi = sim.csi[rows].copy() if cfg.csi_observable else np.full(len(rows), -1, np.int64)
    return RoundContext(
        rows=rows, last_rtt_ms=sim.last_rtt_ms[rows].copy(), csi=csi,
        tokens_left=sim.tokens_left[rows].copy(), time_ms=sim.t_ms[rows].copy(),
        true_state=sim.csi[rows].copy(),
        true_mean_rtt_ms=np.asarray(sim.channel.mean_rtt_ms(sim.rows, rows, sim.t_ms[rows], sim.csi[rows]),
                                    dtype=float), true_trace_offset_ms=sim.rows.offset_ms[rows].copy())


def feedback(res, cfg) -> RoundFeedback:
    csi = res.start_state if cfg.csi_observable else np.full(len(res.rows), -1, np.int64)
    return RoundFeedback(rows=res.rows, k=res.k, accepted=res.accepted, tokens=res.tokens,
                         round_ms=res.round_ms, rtt_ms=res.rtt_ms, csi=csi)


def drive(agent: Agent, cfg, n_runs: int, n_rounds: int, first_key: int = 1) -> Trace:
    """Round-level loop; finished episodes restart with fresh keys (the agent keeps learning)."""
    sim = build_simulator(cfg, batch_size=n_runs)
    rows = np.arange(n_runs)
    sim.reset_rows(rows, np.arange(n_runs, dtype=np.uint64) + np.uint64(first_key))
    next_key = first_key + n_runs
    out = {f: np.zeros((n_rounds, n_runs)) for f in Trace.__dataclass_fields__}
    for r in range(n_rounds):
        ctx = round_context(sim, cfg, rows)
        k = validate_k(agent, agent.choose_k(ctx))
        assert k.shape == (n_runs,)
        out["k"][r], out["start_state"][r], out["tokens_left"][r] = k, sim.csi, sim.tokens_left
        out["true_mean_rtt_ms"][r], out["time_ms"][r] = ctx.true_mean_rtt_ms, sim.t_ms
        res = sim.step_round(k)
        out["tokens"][r] = res.tokens
        agent.update(feedback(res, cfg))
        done = np.flatnonzero(sim.done)
        if done.size:
            sim.reset_rows(done, np.arange(next_key, next_key + done.size, dtype=np.uint64))
            next_key += done.size
    return Trace(**{f: (v.astype(np.int64) if f in ("k", "start_state", "tokens_left", "tokens") else v)
                    for f, v in out.items()})


def drive_tokens(agent: Agent, cfg, n_runs: int, n_rounds: int) -> np.ndarray:
    """Token-level loop: ask should_stop after every drafted token of the rows mid-round.

    Returns the draft lengths of each run's first ``n_rounds`` rounds, shape (n_rounds, n_runs).
    """
    sim = build_simulator(cfg, batch_size=n_runs)
    rows = np.arange(n_runs)
    sim.reset_rows(rows, np.arange(n_runs, dtype=np.uint64) + np.uint64(1))
    ks: list[list[int]] = [[] for _ in range(n_runs)]
    next_key = 1 + n_runs
    while min(len(x) for x in ks) < n_rounds:
        base = round_context(sim, cfg, rows)
        pos = sim.position.copy()
        conf = sim.q[rows, pos - 1] if sim.has_signal else np.full(n_runs, np.nan)
        ctx = TokenContext(**vars(base), position=pos, confidence=conf)
        stop = np.asarray(agent.should_stop(ctx))
        assert stop.shape == (n_runs,) and stop.dtype == bool
        _, res, _ = sim.step_token(stop.astype(np.int64))
        if res is not None:
            validate_k(agent, res.k)
            for r, k in zip(res.rows, res.k):
                ks[r].append(int(k))
            agent.update(feedback(res, cfg))
        done = np.flatnonzero(sim.done)
        if done.size:
            sim.reset_rows(done, np.arange(next_key, next_key + done.size, dtype=np.uint64))
            next_key += done.size
    return np.array([x[:n_rounds] for x in ks]).T


def scripted_feedback(rows, k, accepted, round_ms=200.0, rtt_ms=150.0, csi=-1) -> RoundFeedback:
    rows = np.asarray(rows)
    n = len(rows)
    k = np.broadcast_to(np.asarray(k, np.int64), (n,)).copy()
    a = np.broadcast_to(np.asarray(accepted, np.int64), (n,)).copy()
    return RoundFeedback(rows=rows, k=k, accepted=a, tokens=a + 1, round_ms=np.full(n, float(round_ms)),
                         rtt_ms=np.full(n, float(rtt_ms)), csi=np.full(n, csi, np.int64))


def blank_context(n: int, **fields) -> RoundContext:
    base = {"rows": np.arange(n), "last_rtt_ms": np.full(n, 150.0), "csi": np.full(n, -1, np.int64),
            "tokens_left": np.full(n, 100, np.int64), "time_ms": np.zeros(n),
            "true_state": np.zeros(n, np.int64), "true_mean_rtt_ms": np.full(n, 150.0)}
    base.update(fields)
    return RoundContext(**base)


# ---------------------------------------------------------------------------
# protocol on every preset
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", scenario_names())
def test_every_agent_valid_k_on_every_preset(scenario: str) -> None:
    cfg = make_scenario(scenario, n_tokens=24)
    for name in agent_names():
        agent = make_agent(name, cfg, n_runs=3, seed=5)
        tr = drive(agent, cfg, n_runs=3, n_rounds=40)
        assert tr.k.min() >= 1 and tr.k.max() <= cfg.max_draft, name
        assert isinstance(agent.describe(), dict) and agent.describe()["name"] == name


@pytest.mark.parametrize("scenario", ["qwen-latent-signal", "markov-csi"])
def test_every_agent_runs_at_token_level(scenario: str) -> None:
    cfg = make_scenario(scenario, n_tokens=24)
    for name in agent_names():
        ks = drive_tokens(make_agent(name, cfg, n_runs=2, seed=1), cfg, n_runs=2, n_rounds=25)
        assert ks.shape == (25, 2) and ks.min() >= 1 and ks.max() <= cfg.max_draft, name


def test_round_agents_draft_their_plan_at_token_level() -> None:
    """The base should_stop plans with choose_k at position 1 and stops there."""
    cfg = make_scenario("qwen-geometric", n_tokens=10_000)
    ks_round = drive(HeuristicSchedule(cfg, n_runs=3), cfg, 3, 60).k
    ks_token = drive_tokens(HeuristicSchedule(cfg, n_runs=3), cfg, 3, 60)
    np.testing.assert_array_equal(ks_round, ks_token)


def test_batched_and_serial_runs_agree() -> None:
    cfg = make_scenario("llama-heavy-head", n_tokens=100_000)
    for cls in (UCBSpecStop, HeuristicSchedule, SpecDecPP):
        batched = drive(cls(cfg, n_runs=3), cfg, 3, 150).k
        for j in range(3):
            alone = drive(cls(cfg, n_runs=1), cfg, 1, 150, first_key=1 + j).k[:, 0]
            np.testing.assert_array_equal(batched[:, j], alone, err_msg=cls.name)


def test_reset_forgets_everything() -> None:
    cfg = make_scenario("qwen-geometric", n_tokens=100_000)
    for name in agent_names():
        agent = make_agent(name, cfg, n_runs=2, seed=3)
        first = drive(agent, cfg, 2, 80).k
        agent.reset()
        np.testing.assert_array_equal(drive(agent, cfg, 2, 80).k, first, err_msg=name)


# ---------------------------------------------------------------------------
# static-k
# ---------------------------------------------------------------------------


def test_static_k_default_and_validation() -> None:
    cfg = make_scenario("qwen-geometric")
    assert (StaticK(cfg, n_runs=2).choose_k(blank_context(2)) == 4).all()
    assert StaticK(cfg.replace(max_draft=3)).k == 3
    assert (StaticK(cfg, k=7).choose_k(blank_context(1)) == 7).all()
    for bad in (0, 9, 2.5, True, "3"):
        with pytest.raises(ValueError, match="k must be"):
            StaticK(cfg, k=bad)


# specdec++, naive-ucb and heuristic (their rules, pinned cases and the comparison with the
# public code): tests/test_baselines.py


# ---------------------------------------------------------------------------
# ucb-specstop, contextual-ucb
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario,overrides", [("qwen-geometric", {"delay_ms": 300.0}),
                                                ("llama-heavy-head", {})])
def test_ucb_specstop_converges_to_oracle(scenario: str, overrides: dict) -> None:
    cfg = make_scenario(scenario, n_tokens=100_000, **overrides)
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    k_star, _ = optimal_draft_length(survival, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                                     verify_per_token_ms=cfg.verify_per_token_ms, delay_ms=cfg.delay_ms)
    n_runs, n_rounds = 4, 3000
    agent = UCBSpecStop(cfg, n_runs=n_runs, seed=0)
    tr = drive(agent, cfg, n_runs, n_rounds)
    tail = tr.k[int(0.8 * n_rounds):]
    assert (tail == k_star).mean() >= 0.9, np.bincount(tail.ravel())
    # per-position estimates converge to the true conditional acceptance where observed
    a_true = survival / np.concatenate([[1.0], survival[:-1]])
    n_obs = agent.acceptance.n
    a_hat = agent.acceptance.mean()
    well = n_obs >= 100
    assert well[:, :k_star].all()
    err = np.abs(a_hat - a_true[None, :])[well]
    tol = (4.0 * np.sqrt(a_true[None, :] * (1 - a_true[None, :]) / np.maximum(n_obs, 1)) + 0.01)[well]
    assert (err <= tol).all()
    # costs: least squares recovers c and verify_base exactly (deterministic compute time)
    c_hat, vb_hat = agent.cost_estimates(np.arange(n_runs))
    np.testing.assert_allclose(c_hat, cfg.marginal_cost_ms, rtol=1e-6)
    np.testing.assert_allclose(vb_hat, cfg.verify_base_ms, rtol=1e-6)


def test_ucb_specstop_first_round_uses_priors() -> None:
    cfg = make_scenario("qwen-geometric")
    agent = UCBSpecStop(cfg, n_runs=2)
    c_hat, vb = agent.cost_estimates(np.arange(2))
    np.testing.assert_allclose(c_hat, cfg.draft_ms + cfg.verify_per_token_ms)
    np.testing.assert_allclose(vb, cfg.verify_base_ms)
    # nothing observed: every position optimistic 1.0 -> draft the maximum when B > c
    assert (agent.choose_k(blank_context(2)) == cfg.max_draft).all()
    # one distinct k: c stays nominal, verify base from the data
    agent.update(scripted_feedback([0, 1], 3, 1, round_ms=150.0 + 40.0 + 3 * 20.11, rtt_ms=150.0))
    c_hat, vb = agent.cost_estimates(np.arange(2))
    np.testing.assert_allclose(c_hat, 20.11)
    np.testing.assert_allclose(vb, 40.0)
    for bad in ({"beta": -1.0}, {"beta": "x"}, {"change_threshold": 0.0}, {"bound": "x"}, {"level": "y"},
                {"discount": 0.0}, {"discount": 1.5}, {"level_c": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            UCBSpecStop(cfg, **bad)


def test_contextual_equals_ucb_specstop_without_csi() -> None:
    cfg = make_scenario("markov-csi", csi_observable=False, n_tokens=100_000)
    a = drive(UCBSpecStop(cfg, n_runs=3), cfg, 3, 400).k
    b = drive(ContextualUCB(cfg, n_runs=3), cfg, 3, 400).k
    np.testing.assert_array_equal(a, b)


def test_contextual_ucb_drafts_longer_in_the_bad_state() -> None:
    cfg = make_scenario("markov-csi", n_tokens=100_000)
    agent = ContextualUCB(cfg, n_runs=4, seed=0)
    tr = drive(agent, cfg, 4, 3000)
    tail_k, tail_s = tr.k[1000:], tr.start_state[1000:]
    bad = int(np.argmax(cfg.markov_rtt_mean_ms))
    assert (tail_s == bad).sum() > 50 and (tail_s != bad).sum() > 50
    assert tail_k[tail_s == bad].mean() > tail_k[tail_s != bad].mean() + 2.0
    # per-state rtt estimates are the state means
    est, known = agent.state_rtt_estimate(np.arange(4), np.full(4, bad))
    assert known.all()
    np.testing.assert_allclose(est, cfg.markov_rtt_mean_ms[bad], rtol=0.1)
    # an unseen state falls back to the global mean
    est, known = agent.state_rtt_estimate(np.arange(4), np.full(4, 5))
    assert not known.any()


# ---------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["qwen-geometric", "llama-heavy-head", "qwen-latent-signal"])
def test_oracle_stationary_k_star(scenario: str) -> None:
    for overrides in ({}, {"channel": "constant", "delay_ms": 400.0}):
        cfg = make_scenario(scenario, n_tokens=64, **overrides)
        survival = build_acceptance(cfg).survival(cfg.max_draft)
        k_star, _ = optimal_draft_length(survival, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                                         verify_per_token_ms=cfg.verify_per_token_ms, delay_ms=cfg.delay_ms)
        local = LocalOracle(cfg, n_runs=3)
        assert local.uses_ground_truth
        assert (drive(local, cfg, 3, 50).k == k_star).all()
        # the oracle: the finite-horizon DP over tokens left (one channel state), which is k* while
        # many tokens are left and differs near the end of a request (one token left: k = 1)
        sol = solve_markov_dp(survival, n_tokens=cfg.n_tokens, generator_per_ms=[[0.0]], rtt_mean_ms=cfg.delay_ms,
                              rtt_cv=0.0, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                              verify_per_token_ms=cfg.verify_per_token_ms)
        oracle = OracleAgent(cfg, n_runs=3)
        assert oracle.uses_ground_truth
        tr = drive(oracle, cfg, 3, 50)
        np.testing.assert_array_equal(tr.k, sol.k_table[tr.tokens_left, 0])
        assert (tr.k[tr.tokens_left > 3 * cfg.max_draft] == k_star).all()
        assert sol.k_table[1, 0] == 1


def test_oracle_follows_the_markov_dp() -> None:
    cfg = make_scenario("markov-csi", n_tokens=24)
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    sol = solve_markov_dp(survival, n_tokens=cfg.n_tokens, generator_per_ms=cfg.markov_generator_per_ms,
                          rtt_mean_ms=cfg.markov_rtt_mean_ms, rtt_cv=cfg.markov_rtt_cv, draft_ms=cfg.draft_ms,
                          verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms)
    tr = drive(OracleAgent(cfg, n_runs=6), cfg, 6, 300)
    expected = np.vectorize(sol.k)(tr.tokens_left, tr.start_state)
    np.testing.assert_array_equal(tr.k, expected)
    assert len(np.unique(tr.k)) > 1  # state- and horizon-dependent


def test_local_oracle_local_optimum_under_drift() -> None:
    cfg = make_scenario("drift", n_tokens=100_000)
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    tr = drive(LocalOracle(cfg, n_runs=2), cfg, 2, 1500)
    for r in range(0, 1500, 7):
        for j in range(2):
            k, _ = optimal_draft_length(survival, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                                        verify_per_token_ms=cfg.verify_per_token_ms,
                                        delay_ms=tr.true_mean_rtt_ms[r, j])
            assert tr.k[r, j] == k
    assert len(np.unique(tr.k)) == 2  # both delay levels were visited


def test_batch_optimal_k_matches_oracle() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        kmax = int(rng.integers(1, 14))
        n = int(rng.integers(1, 6))
        s = np.cumprod(rng.uniform(0.0, 1.0, size=(n, kmax)), axis=1)
        c = rng.uniform(0.1, 40.0, size=n)
        b = rng.uniform(0.0, 2000.0, size=n)
        got = batch_optimal_k(s, c, b)
        assert got.tolist() == [optimal_k_for_costs(s[i], c[i], b[i])[0] for i in range(n)]
    assert batch_optimal_k(np.array([0.5, 0.25]), 20.0, np.array([], float)).shape == (0,)


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("04", 4), ("-2", -2), ("1_000", 1000), ("1e-1", 0.1), ("[64, 64]", [64, 64]),
    ("true", True), ("False", False), ("none", None), ("NULL", None), ('"4"', "4"), ("tanh", "tanh"),
    ("lin_3e-4", "lin_3e-4"), ("inf", float("inf")),
])
def test_command_line_values_parse_the_same_for_specs_set_and_hyperparams(text: str, value) -> None:
    """One parser (specstop_gym.cli.parse_value) for agent specs, --set and --hyperparams."""
    from specstop_gym.cli import parse_override, parse_value
    from specstop_gym.training.hyperparams import parse_overrides

    got = parse_value(text)
    assert got == value and type(got) is type(value)
    if "," not in text:  # a spec separates its parameters with commas
        assert parse_agent_spec(f"x:a={text}")[1]["a"] == value
    assert parse_overrides([f"n_steps={text}"])["n_steps"] == value
    expected = tuple(value) if isinstance(value, list) else value
    assert parse_override(f"delay_ms={text}") == ("delay_ms", expected)
    assert math.isnan(parse_value("nan"))


def test_registry_names_and_specs() -> None:
    assert agent_names() == ["static-k", "heuristic", "specdec++", "naive-ucb", "ucb-specstop",
                             "contextual-ucb", "ts-specstop", "delay-aware-stop", "oracle", "local-oracle"]
    assert all(AGENTS[n].name == n for n in agent_names())
    assert parse_agent_spec("static-k:k=4,foo=0.5") == ("static-k", {"k": 4, "foo": 0.5})
    assert parse_agent_spec("ucb-specstop:beta=1e-1,rtt_halflife=none") == (
        "ucb-specstop", {"beta": 0.1, "rtt_halflife": None})
    assert parse_agent_spec("x:a=true,b=False,c=hello") == ("x", {"a": True, "b": False, "c": "hello"})
    assert parse_agent_spec("oracle") == ("oracle", {})
    for bad in ("", ":k=1", "static-k:k", "static-k:k=1,k=2"):
        with pytest.raises(ValueError):
            parse_agent_spec(bad)
    cfg = make_scenario("qwen-geometric")
    agent = make_agent("static-k:k=3", cfg, n_runs=2, seed=1)
    assert isinstance(agent, StaticK) and agent.k == 3 and agent.n_runs == 2
    assert make_agent("static-k:k=3", cfg, k=5).k == 5  # keywords win over the spec
    assert make_agent("naive-ucb", cfg, c=2.0).c == 2.0


def test_make_agent_errors() -> None:
    cfg = make_scenario("qwen-geometric")
    with pytest.raises(ValueError) as err:
        make_agent("nope", cfg)
    msg = str(err.value)
    for name in agent_names() + ["best-fixed-k", "sb3:PATH"]:
        assert name in msg
    with pytest.raises(ValueError, match="evaluation runner"):
        make_agent("best-fixed-k", cfg)
    # sb3:PATH builds a trained-policy agent; a missing file is named in the error
    with pytest.raises(ValueError, match="models/ppo.zip"):
        make_agent("sb3:models/ppo.zip", cfg)
    with pytest.raises(ValueError, match="foo"):
        make_agent("static-k:k=4,foo=0.5", cfg)
    with pytest.raises(ValueError, match="k must be"):
        make_agent("static-k:k=99", cfg)
    with pytest.raises(ValueError, match="n_runs"):
        make_agent("oracle", cfg, n_runs=0)
