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
    forced stop (``info["forced_stop"] = True``). ``info["action_mask"]`` and
    ``action_masks()`` give the valid actions ``[draft, stop]``. Any other action
    raises ``ValueError``.

    ## Observation Space
    ``Box(low=0, high=1 (rtt: inf), shape=(4 + M + K,), float32)``; ``K`` =
    ``max_draft``, ``M`` = number of channel states. Names in ``env.observation_fields``.

    | index | name | meaning |
    |---|---|---|
    | 0 | position_frac | tokens drafted in this round / K |
    | 1 | last_rtt_s | rtt of the last round, seconds (an initial probe before the first round) |
    | 2..2+M-1 | csi_s | one-hot channel state at the round start (all 0 when the scenario hides CSI) |
    | 2+M | confidence | draft confidence q_i of the latest drafted token (0 without a signal) |
    | 3+M..2+M+K | accept_est_i | running Beta(1,1) posterior mean of acceptance at position i (this episode) |
    | 3+M+K | tokens_left_frac | share of the request still to generate |

    ## Rewards
    ``reward_mode="latency"`` (default): ``-step_ms / time_scale_ms``; a draft step
    takes ``draft_ms``, the stop step the rest of the round ``T(k) - (k-1)*draft_ms``,
    so the return is minus the episode's latency in units of ``time_scale_ms``
    (default 1000: seconds). ``reward_mode="token_credit"``:
    ``(tokens * reference_ms_per_token - step_ms) / time_scale_ms``, crediting
    committed tokens at the reference rate (default: the stationary oracle's
    ``rho*``), so that a policy as good as the reference earns 0 on average.

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
    | render_mode | None | ``"ansi"`` for a text line per state |

    Unknown overrides and invalid values raise ``ConfigError`` (a ``ValueError``) naming the field.

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

    ## Version History
    * v0: initial version.

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
