"""The baselines as their public code does them: specdec++, naive-ucb (BanditSpec UCBSpec), heuristic.

Pinned cases are computed by hand in the comments; user-level tests build agents from spec
strings with ``make_agent`` and run them through the evaluation runner; the heuristic is
checked against the installed transformers' own ``update_candidate_strategy``.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest

from agents import (
    HeuristicSchedule,
    NaiveUCB,
    RoundContext,
    RoundFeedback,
    SpecDecPP,
    TokenContext,
    make_agent,
)
from specstop_gym.evaluation.runner import run_agent
from specstop_gym.scenarios import make_scenario


def blank_context(n: int, tokens_left: int = 100) -> RoundContext:
    return RoundContext(rows=np.arange(n), last_rtt_ms=np.full(n, 150.0), csi=np.full(n, -1, np.int64),
                        tokens_left=np.full(n, tokens_left, np.int64), time_ms=np.zeros(n),
                        true_state=np.zeros(n, np.int64), true_mean_rtt_ms=np.full(n, 150.0))


def scripted_feedback(rows, k, accepted, tokens=None, round_ms=200.0) -> RoundFeedback:
    rows = np.asarray(rows)
    n = len(rows)
    k = np.broadcast_to(np.asarray(k, np.int64), (n,)).copy()
    a = np.broadcast_to(np.asarray(accepted, np.int64), (n,)).copy()
    tok = a + 1 if tokens is None else np.broadcast_to(np.asarray(tokens, np.int64), (n,)).copy()
    return RoundFeedback(rows=rows, k=k, accepted=a, tokens=tok, round_ms=np.full(n, float(round_ms)),
                         rtt_ms=np.full(n, 100.0), csi=np.full(n, -1, np.int64))


def stop_positions(agent, conf: np.ndarray) -> np.ndarray:
    """Feed per-row confidence sequences (n, K) position by position; return where each row stopped."""
    n, kmax = conf.shape
    stopped = np.zeros(n, np.int64)
    for p in range(1, kmax + 1):
        live = np.flatnonzero(stopped == 0)
        if live.size == 0:
            break
        base = blank_context(live.size)
        base.rows = live
        ctx = TokenContext(**vars(base), position=np.full(live.size, p, np.int64), confidence=conf[live, p - 1])
        stop = agent.should_stop(ctx)
        stopped[live[stop]] = p
    return stopped


def request_starts(run, n_tokens: int) -> np.ndarray:
    """Mask of the records (sorted by seed, round) that are the first round of a request."""
    seed, tokens = run.columns["seed"], run.columns["tokens"]
    starts = np.zeros(len(seed), bool)
    for s in np.unique(seed):
        idx = np.flatnonzero(seed == s)
        before = np.concatenate([[0], np.cumsum(tokens[idx])[:-1]])
        starts[idx] = before % n_tokens == 0
    return starts


# ---------------------------------------------------------------------------
# specdec++
# ---------------------------------------------------------------------------

# Pinned by hand. q = (0.9, 0.8, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9), max_draft 8, bound [2, 20] -> [2, 8].
# After drafting token i the public code holds P_i = prod_{j<i} q_j:
#   i      1     2     3      4      5       6        7         8
#   P_i    1     0.9   0.72   0.36   0.324   0.2916   0.26244   0.236196
#   1-P_i  0     0.1   0.28   0.64   0.676   0.7084   0.73756   0.763804
# threshold -> first i >= 2 with 1 - P_i > threshold (8 if none):
#   0.0 -> 2,  0.2 -> 3,  0.3 -> 4,  0.65 -> 5,  0.7 -> 6,  0.75 -> 8,  0.8 -> 8 (clamp).
# (The former rule P_i = prod_{j=2..i} q_j gives 1 - P = 0, 0.2, 0.6, ... and stopped at 3 for 0.3.)
PINNED_Q = (0.9, 0.8, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9)
PINNED_STOPS = {0.0: 2, 0.2: 3, 0.3: 4, 0.65: 5, 0.7: 6, 0.75: 8, 0.8: 8}


@pytest.mark.parametrize("threshold, expected", sorted(PINNED_STOPS.items()))
def test_specdecpp_pinned_hand_computed_stops(threshold: float, expected: int) -> None:
    cfg = make_scenario("qwen-latent-signal", max_draft=8)
    agent = make_agent(f"specdec++:threshold={threshold}", cfg)
    assert stop_positions(agent, np.array([PINNED_Q])).tolist() == [expected]


def test_specdecpp_heavy_head_drafts_three_where_the_shifted_product_drafted_two() -> None:
    # q = llama-heavy-head's profile (0.70, 0.28, 0.28, ...):
    #   threshold 0.7:  1 - P_2 = 0.30, 1 - P_3 = 1 - 0.196 = 0.804 > 0.7 -> 3
    #   threshold 0.85: 1 - P_4 = 1 - 0.05488 = 0.945 > 0.85 -> 4
    # (prod_{j=2..i}: 1 - P_2 = 0.72 > 0.7 -> 2.)
    cfg = make_scenario("qwen-latent-signal", max_draft=8)
    q = np.array([[0.70] + [0.28] * 7])
    assert stop_positions(make_agent("specdec++", cfg), q).tolist() == [3]
    assert stop_positions(make_agent("specdec++:threshold=0.85", cfg), q).tolist() == [4]


def test_specdecpp_rule_on_random_confidences() -> None:
    cfg = make_scenario("qwen-latent-signal", max_draft=8)
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, size=(200, 8))
    for threshold, lo, hi in ((0.4, 2, 8), (0.6, 3, 6), (0.2, 1, 8)):
        agent = SpecDecPP(cfg, n_runs=200, threshold=threshold, min_len=lo, max_len=hi)
        got = stop_positions(agent, conf)
        for r in range(200):
            want = hi
            for i in range(lo, hi + 1):
                if 1.0 - np.prod(conf[r, : i - 1]) > threshold:
                    want = i
                    break
            assert got[r] == want, (threshold, r)


def test_specdecpp_clamp() -> None:
    cfg = make_scenario("qwen-latent-signal", max_draft=8)
    low = np.full((1, 8), 0.05)
    assert stop_positions(SpecDecPP(cfg, threshold=0.3, min_len=3), low).tolist() == [3]
    # min_len 1: 1 - P_1 = 0 never exceeds a threshold; 1 - P_2 = 0.95 -> 2
    assert stop_positions(SpecDecPP(cfg, threshold=0.3, min_len=1), low).tolist() == [2]
    high = np.full((1, 8), 0.999)
    assert stop_positions(SpecDecPP(cfg, threshold=0.3, max_len=5), high).tolist() == [5]
    assert stop_positions(SpecDecPP(cfg, threshold=0.3, min_len=12, max_len=20), low).tolist() == [8]
    for kw, pname in (({"threshold": 1.5}, "threshold"), ({"min_len": 0}, "min_len"),
                      ({"min_len": 4, "max_len": 3}, "max_len")):
        with pytest.raises(ValueError, match=pname):
            SpecDecPP(cfg, **kw)


def test_specdecpp_without_signal_uses_learned_profile() -> None:
    cfg = make_scenario("qwen-geometric", max_draft=8)
    agent = SpecDecPP(cfg, n_runs=1, threshold=0.7)
    # censored outcomes (k=6, A=2) x 30 and (k=6, A=6) x 10:
    #   n = 40 40 40 10 10 10 0 0, acc = 40 40 10 10 10 10 0 0, a_hat = (acc + 1) / (n + 2)
    #   = 41/42 41/42 11/42 11/12 11/12 11/12 1/2 1/2
    # P_4 = (41/42)^2 * 11/42 = 18491/74088 = 0.24958 -> 1 - P_4 = 0.7504 > 0.7; P_3 -> 0.047: k = 4
    for _ in range(30):
        agent.update(scripted_feedback([0], 6, 2))
    for _ in range(10):
        agent.update(scripted_feedback([0], 6, 6))
    np.testing.assert_allclose(agent.acceptance.mean(np.array([0]))[0],
                               [41 / 42, 41 / 42, 11 / 42, 11 / 12, 11 / 12, 11 / 12, 0.5, 0.5])
    assert agent.choose_k(blank_context(1))[0] == 4
    # the token rule with NaN confidences stops at the same place
    assert stop_positions(agent, np.full((1, 8), np.nan)).tolist() == [4]


def test_specdecpp_through_the_runner_on_llama_heavy_head() -> None:
    """No signal: once the learned profile is near (0.70, 0.28, ...), every draft has 3 tokens."""
    sc = make_scenario("llama-heavy-head", channel="constant", delay_ms=100.0, n_tokens=256,
                       requests_per_episode=2)
    for level in ("token", "round"):
        run = run_agent(make_agent("specdec++", sc, n_runs=2), sc, [0, 1], level=level)
        late = run.columns["round"] >= 20
        assert late.sum() > 300
        assert (run.columns["k"][late] == 3).all(), (level, np.bincount(run.columns["k"][late]))


# ---------------------------------------------------------------------------
# naive-ucb (BanditSpec UCBSpec)
# ---------------------------------------------------------------------------


def test_naive_ucb_pinned_warm_up_and_index() -> None:
    cfg = make_scenario("qwen-geometric", max_draft=8)
    # warm-up t < 2K: k = (t - 1) mod K + 1. K = 3: t = 1..5 -> 1 2 3 1 2; rewards (tokens/s):
    #   k=1: 20, 10 (mu 15); k=2: 30, 20 (mu 25); k=3: 10 (mu 10); x_max = 30
    # t = 6:
    #   bonus "total" (any c): the same for all arms -> argmax mu -> k = 2
    #   "per-arm", c = 6, raw: 15 + sqrt(6 ln 6 / 2) = 15 + 2.318, 25 + 2.318, 10 + sqrt(6 ln 6) = 13.279 -> 2
    #   "per-arm", c = 6, normalised: 0.5 + 2.318, 0.833 + 2.318 = 3.152, 0.333 + 3.279 = 3.612 -> 3
    script = ((1, 2), (2, 3), (3, 1), (1, 1), (2, 2))  # (k, tokens) at 100 ms per round
    for spec, k6 in (("naive-ucb:n_arms=3", 2), ("naive-ucb:n_arms=3,c=0", 2),
                     ("naive-ucb:n_arms=3,bonus=per-arm", 2),
                     ("naive-ucb:n_arms=3,bonus=per-arm,normalise=true", 3)):
        agent = make_agent(spec, cfg)
        for k, tokens in script:
            assert agent.choose_k(blank_context(1))[0] == k, spec
            agent.update(scripted_feedback([0], k, tokens - 1, tokens=tokens, round_ms=100.0))
        assert agent.choose_k(blank_context(1))[0] == k6, spec
    agent = make_agent("naive-ucb:n_arms=3,bonus=per-arm,normalise=true", cfg)
    for k, tokens in script:
        agent.update(scripted_feedback([0], k, tokens - 1, tokens=tokens, round_ms=100.0))
    b2, b1 = np.sqrt(6 * np.log(6) / 2), np.sqrt(6 * np.log(6))
    np.testing.assert_allclose(agent.index(np.array([0]))[0], [0.5 + b2, 25 / 30 + b2, 1 / 3 + b1])


def test_naive_ucb_default_is_four_arms_round_robin_then_greedy_ties_to_shortest() -> None:
    cfg = make_scenario("qwen-geometric", max_draft=8)
    agent = make_agent("naive-ucb", cfg)
    assert (agent.arms, agent.c, agent.bonus, agent.per_request) == (4, 6.0, "total", True)
    ks = []
    for _ in range(7):
        ks.append(int(agent.choose_k(blank_context(1))[0]))
        agent.update(scripted_feedback([0], ks[-1], 0, tokens=1, round_ms=100.0))  # every arm: 10 tok/s
    assert ks == [1, 2, 3, 4, 1, 2, 3]
    assert agent.choose_k(blank_context(1))[0] == 1  # all means equal: the first maximum
    assert make_agent("naive-ucb:n_arms=none", cfg).arms == 8
    assert make_agent("naive-ucb:n_arms=12", cfg).arms == 8


def test_naive_ucb_exploration_constant_is_inert_with_the_total_bonus() -> None:
    sc = make_scenario("qwen-geometric", n_tokens=128, requests_per_episode=2)
    runs = [run_agent(make_agent(f"naive-ucb:c={c}", sc, n_runs=3), sc, [0, 1, 2]) for c in (0, 6, 100)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.columns["k"], runs[0].columns["k"])
    per_arm = run_agent(make_agent("naive-ucb:bonus=per-arm,c=100", sc, n_runs=3), sc, [0, 1, 2])
    assert len(per_arm.columns["k"]) != len(runs[0].columns["k"]) or \
        not np.array_equal(per_arm.columns["k"], runs[0].columns["k"])


@pytest.mark.parametrize("per_request", [True, False])
def test_naive_ucb_restarts_at_each_request(per_request: bool) -> None:
    n_tokens = 40
    sc = make_scenario("qwen-geometric", channel="constant", delay_ms=200.0, n_tokens=n_tokens,
                       requests_per_episode=3)
    run = run_agent(make_agent(f"naive-ucb:per_request={str(per_request).lower()}", sc, n_runs=2), sc, [0, 1])
    k, seed = run.columns["k"], run.columns["seed"]
    starts = np.flatnonzero(request_starts(run, n_tokens))
    assert len(starts) == 6  # 3 requests x 2 seeds
    warm = [1, 2, 3, 4, 1, 2, 3]
    for i, s in enumerate(starts):
        first_request = i == 0 or seed[s] != seed[starts[i - 1]]
        seq = k[s:s + 7].tolist()
        assert (seq == warm) == (per_request or first_request), (i, seq)
    assert k.max() <= 4


def test_naive_ucb_validation() -> None:
    cfg = make_scenario("qwen-geometric")
    for kw, pname in (({"c": -1.0}, "c must"), ({"n_arms": 0}, "n_arms"), ({"bonus": "sqrt"}, "bonus"),
                      ({"per_request": "yes"}, "per_request"), ({"normalise": 1}, "normalise")):
        with pytest.raises(ValueError, match=pname):
            NaiveUCB(cfg, **kw)


# ---------------------------------------------------------------------------
# heuristic (transformers' "heuristic" schedule)
# ---------------------------------------------------------------------------


def test_heuristic_pinned_schedule() -> None:
    cfg = make_scenario("qwen-geometric", max_draft=8)
    agent = make_agent("heuristic:num_assistant_tokens=9", cfg)
    # state n -> draft k = min(n, 8) -> outcome -> next n (+2 if all k accepted, else max(1, n - 1)):
    #   9 -> 8 full -> 11 -> 8 miss -> 10 -> 8 miss -> 9 -> 8 miss -> 8 -> 8 miss -> 7 -> 7 full -> 9
    #   -> 8 miss -> 8, then misses: 8 7 6 5 4 3 2 1 1 (floor 1)
    # (a state capped at 8 would have drafted 7 in the third round)
    script = [(8, True), (8, False), (8, False), (8, False), (8, False), (7, True), (8, False),
              (8, False), (7, False), (6, False), (5, False), (4, False), (3, False), (2, False), (1, False),
              (1, False)]
    for k_expected, full in script:
        k = agent.choose_k(blank_context(1))
        assert k[0] == k_expected
        agent.update(scripted_feedback([0], k, k if full else k - 1))
    assert agent.n[0] == 1
    # default: transformers' num_assistant_tokens = 20, so the first drafts are capped at max_draft
    assert make_agent("heuristic", cfg).choose_k(blank_context(1))[0] == 8
    # the draft leaves room for the target's own token: min(n, max_draft, tokens_left - 1), at least 1
    assert make_agent("heuristic", cfg).choose_k(blank_context(1, tokens_left=3))[0] == 2
    assert make_agent("heuristic", cfg).choose_k(blank_context(1, tokens_left=1))[0] == 1
    with pytest.raises(ValueError, match="num_assistant_tokens"):
        HeuristicSchedule(cfg, num_assistant_tokens=0)


def test_heuristic_through_the_runner_follows_its_rule() -> None:
    n_tokens = 64
    sc = make_scenario("llama-heavy-head", n_tokens=n_tokens, requests_per_episode=3)
    run = run_agent(make_agent("heuristic:num_assistant_tokens=3", sc, n_runs=2), sc, [0, 1])
    k, a, tok, seed = (run.columns[c] for c in ("k", "accepted", "tokens", "seed"))
    for s in (0, 1):
        idx = np.flatnonzero(seed == s)
        n, left = 3, n_tokens
        for i in idx:
            assert k[i] == max(1, min(n, sc.max_draft, left - 1))
            n = n + 2 if a[i] == k[i] else max(1, n - 1)  # persists across requests
            left -= tok[i]
            if left == 0:
                left = n_tokens


def test_heuristic_matches_installed_transformers() -> None:
    """Differential check against transformers' own update_candidate_strategy and draft-length cap."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import GenerationConfig
    from transformers.generation.candidate_generator import AssistedCandidateGenerator

    default = inspect.signature(HeuristicSchedule.__init__).parameters["num_assistant_tokens"].default
    assert GenerationConfig._get_default_generation_params()["num_assistant_tokens"] == default
    cfg = make_scenario("qwen-geometric", max_draft=8)
    agent = make_agent("heuristic", cfg)
    hf = SimpleNamespace(num_assistant_tokens=default, main_model_min_length=0,
                         assistant_generation_config=SimpleNamespace(num_assistant_tokens_schedule="heuristic",
                                                                     assistant_confidence_threshold=None))
    rng = np.random.default_rng(0)
    full_runs = 0
    for _ in range(300):
        left = int(rng.integers(1, 40))
        k = int(agent.choose_k(blank_context(1, tokens_left=left))[0])
        # transformers: cur_len tokens so far, max_length = cur_len + left
        hf.main_model_max_length = 100 + left
        _, max_new = AssistedCandidateGenerator._calculate_new_tokens(hf, torch.zeros(1, 100, dtype=torch.long))
        assert k == max(1, min(max_new, cfg.max_draft))
        accepted = k if rng.random() < 0.6 else int(rng.integers(0, k))
        full_runs += accepted == k
        AssistedCandidateGenerator.update_candidate_strategy(hf, None, torch.zeros(1, k + 1, 1), accepted)
        agent.update(scripted_feedback([0], k, accepted))
        assert agent.n[0] == hf.num_assistant_tokens
    assert 100 < full_runs < 250 and agent.n[0] > cfg.max_draft  # both branches and the uncapped state
