"""``SpecStop-v0``: the token-level draft-or-stop environment (single and native vector)."""

from __future__ import annotations

from ._single import SingleFace
from ._vector import VectorFace

_DOC = """
    ## Description
    Edge-cloud speculative decoding (SPEC.md section 1). An edge device drafts
    tokens one at a time; after each drafted token the agent decides whether to
    draft another or to stop and send the draft to the cloud for verification,
    paying a network round trip. An episode is one request of ``n_tokens`` output
    tokens (``requests_per_episode`` requests back to back). The dynamics are the
    batched core :class:`specstop_gym.core.simulator.Simulator`.

    ## Action Space
    ``Discrete(2)``: ``0`` = draft another token, ``1`` = stop and send. The first
    token of a round is always drafted (the first decision is taken at position
    1). At position ``max_draft`` drafting is impossible: action 0 is then a
    forced stop (``info["forced_stop"] = True``). The valid actions ``[draft, stop]``
    are in ``info["action_mask"]`` and ``action_masks()``: ``gym.make`` returns the
    environment itself (no wrappers), so ``env.action_masks()`` works on it;
    ``env.get_wrapper_attr("action_masks")()`` works under any wrappers, and
    sb3-contrib's ``ActionMasker(env, "action_masks")`` (or ``lambda e:
    e.get_wrapper_attr("action_masks")()``) and ``MaskablePPO("MlpPolicy",
    "SpecStop-v0")`` find them. Any other action raises ``ValueError``.

    ## Observation Space
    ``Box(low=0, high=1 (rtt entries: inf), shape=(6 + M + 2K,), float32)``; ``K`` =
    ``max_draft``, ``M`` = number of channel states. Names in ``env.observation_fields``.

    | index | name | meaning |
    |---|---|---|
    | 0 | position_frac | tokens drafted in this round / K |
    | 1 | last_rtt_s | rtt of the last round, seconds (an initial probe before the first round) |
    | 2..2+M-1 | csi_s | one-hot channel state at the round start (all 0 when the scenario hides CSI) |
    | 2+M | confidence | draft confidence q_i of the latest drafted token (0 without a signal) |
    | 3+M..2+M+K | accept_est_i | running Beta(1,1) posterior mean of acceptance at position i (this episode) |
    | 3+M+K | tokens_left_frac | share of the request still to generate |
    | 4+M+K | rtt_ewma_fast_s | rtt averaged over wall-clock time, time constant 1 s (seconds) |
    | 5+M+K | rtt_ewma_slow_s | the same with time constant 30 s |
    | 6+M+K..5+M+2K | position_i | the draft position, one-hot |

    The rtt averages follow ``m += (1 - exp(-round_ms / tau)) (rtt - m)`` after each round,
    starting at the initial probe: on channels whose delay persists (drift, Markov, traces)
    they tell the current level from the per-round jitter. The one-hot position is what
    lets an MLP learn a decision that changes from one position to the next (with
    ``position_frac`` alone PPO took several times longer, docs/training.md).

    ## Rewards
    ``reward_mode="token_credit"`` (default): ``(tokens * rho_ref - step_ms) / scale``.
    Each step is charged its wall-clock time (a draft step ``draft_ms``, the stop step the
    rest of the round ``T(k) - (k-1)*draft_ms``) and the stop step is credited the tokens
    the round committed at the reference rate ``rho_ref`` (ms/token): ``rho*``, the
    oracle's least per-token latency (SPEC 4), at the channel's mean rtt when the round is
    sent (``reward_reference="local"``, default; on constant, iid and trace channels that is
    the long-run mean; ``"stationary"``: always the long-run mean; ``reference_ms_per_token``
    fixes it). ``scale`` = ``time_scale_ms``, by default the stationary ``rho*``, so the
    rewards count tokens (a round's reward is of order 1).

    Why: a round's expected reward ``rho* E[A+1] - E[T(k)]`` is at most 0, and 0 exactly for
    the oracle's draft length (Dinkelbach: draft token i iff ``rho* S_i > c``). So the
    optimal value is about 0 from every state and the discount cannot move the optimum:
    standard discounted RL (gamma = 0.99) learns the latency-optimal policy. Undiscounted,
    with the stationary reference, the return is ``(tokens * rho* - episode time) / scale``:
    for the fixed tokens of an episode, maximising it minimises the per-token latency
    exactly. ``reward_mode="latency"``: ``-step_ms / scale`` (the return is minus the
    episode's time); with any discount it favours postponing the stop (each step's charge
    is negative), and PPO learns never to stop. Derivation and measurements:
    docs/training.md.

    ## Starting State
    Time 0; the channel path and all acceptance draws are fixed by an episode key
    drawn from ``self.np_random`` (``reset(seed=...)``); the last rtt is an initial
    probe of the channel at time 0.

    ## Episode End
    Terminated when the last request is complete. Never truncated by the
    environment itself (a request of ``n`` tokens takes at most ``n`` rounds).

    ## Arguments
    ``gym.make("SpecStop-v0", scenario="qwen-geometric", **overrides)``

    | argument | default | meaning |
    |---|---|---|
    | scenario | "qwen-geometric" | preset name (``specstop_gym.scenario_names()``) or a ``ScenarioConfig`` |
    | **overrides | | any ``ScenarioConfig`` field, e.g. ``delay_ms=300``, ``max_draft=12``, ``alpha=0.7``, ``delay_trace="path.csv"``, ``channel="trace"`` |
    | render_mode | None | ``"rgb_array"``: a small bar chart of the state (position, delays, acceptance estimates; numpy only), ``"ansi"``: a text line; others warn and do not render |

    Unknown overrides and invalid values raise ``ConfigError`` (a ``ValueError``) naming the field.
    In a fresh process (``SubprocVecEnv``, Ray RLlib workers) use the id
    ``"specstop_gym:SpecStop-v0"``: Gymnasium imports the package before making it.

    ## Info
    Every step: ``channel_state``, ``time_ms``, ``tokens_left``, ``action_mask``.
    After a finished round: ``round`` = ``{k, accepted, tokens, round_ms, rtt_ms,
    channel_state}`` (state at sending). At the end: ``per_token_latency_ms``,
    ``episode_time_ms``, ``episode_tokens``.

    ## Vectorized environment
    ``gym.make_vec("SpecStop-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    gives :class:`SpecStopVectorEnv`: all N rows stepped in one batched numpy call
    over the same core; autoreset ``NextStep`` by default (``autoreset_mode="SameStep"``
    available); row i seeded with ``seed + i`` equals a single env seeded ``seed + i``.
    It is also what ``gym.make_vec("SpecStop-v0", num_envs=N)`` gives (the vector entry point
    is Gymnasium's default). Masks: ``envs.action_masks()`` (shape ``(N, 2)``; under vector
    wrappers ``envs.unwrapped.action_masks()``); ``render_mode="rgb_array"`` renders one frame
    per row.

    ## Version History
    * v0: initial version. Before release (issue 12): the default reward became
      ``token_credit`` with the local reference (was ``latency``), and the observation
      gained the rtt averages and the one-hot position (appended).

    ## Example
    >>> import gymnasium as gym, specstop_gym
    >>> env = gym.make("SpecStop-v0", scenario="qwen-geometric", delay_ms=300.0)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> sorted(info["round"])
    ['accepted', 'channel_state', 'k', 'round_ms', 'rtt_ms', 'tokens']
"""


class SpecStopEnv(SingleFace):
    __doc__ = "Token-level speculation control: draft another token or stop and send.\n" + _DOC
    token_level = True


class SpecStopVectorEnv(VectorFace):
    __doc__ = ("Native vector version of SpecStop-v0: N environments in one batched numpy step.\n"
               + _DOC)
    token_level = True
