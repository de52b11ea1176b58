"""``SpecStopRound-v0``: the round-level environment (choose the draft length k per round)."""

from __future__ import annotations

from ._single import SingleFace
from ._vector import VectorFace

_DOC = """
    ## Description
    The same system as ``SpecStop-v0`` (SPEC.md section 1), one decision per
    round: the agent chooses the draft length ``k`` in ``1..max_draft``, the edge
    drafts ``k`` tokens, sends them and the round completes. This is the level at
    which the bandit agents and the stationary oracle act.

    ## Action Space
    ``Discrete(max_draft)``: action ``a`` means ``k = a + 1``. Any other action raises ``ValueError``.

    ## Observation Space
    As ``SpecStop-v0`` (``6 + M + 2K`` floats); the position (``position_frac`` and the
    one-hot ``position_i``) and ``confidence`` are 0 (the decision is taken before drafting).

    ## Rewards
    As ``SpecStop-v0``, one step per round: ``(tokens * rho_ref - T(k)) / scale``
    (``reward_mode="token_credit"``, default; ``rho_ref`` the oracle's rate at the channel's
    mean rtt when the round is sent, ``scale`` the stationary ``rho*``), whose per-round
    maximiser is the oracle's k; or ``-T(k) / scale`` (``reward_mode="latency"``, the
    return is minus the episode's time). docs/training.md derives the choice.

    ## Starting State / Episode End / Info
    As ``SpecStop-v0`` (no ``action_mask``: every k is valid).

    ## Arguments
    ``gym.make("SpecStopRound-v0", scenario="llama-heavy-head", **overrides)``: as ``SpecStop-v0``
    (also ``render_mode``; ``"specstop_gym:SpecStopRound-v0"`` in fresh processes).

    ## Vectorized environment
    :class:`SpecStopRoundVectorEnv` through ``gym.make_vec(..., vectorization_mode="vector_entry_point")``.

    ## Version History
    * v0: initial version. Before release (issue 12): the default reward became
      ``token_credit`` with the local reference, the observation gained the rtt averages and
      the one-hot position (appended).

    ## Example
    >>> import gymnasium as gym, specstop_gym
    >>> env = gym.make("SpecStopRound-v0", scenario="llama-heavy-head")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)  # k = 2
    >>> info["round"]["k"]
    2
"""


class SpecStopRoundEnv(SingleFace):
    __doc__ = "Round-level speculation control: choose the draft length k of each round.\n" + _DOC
    token_level = False


class SpecStopRoundVectorEnv(VectorFace):
    __doc__ = "Native vector version of SpecStopRound-v0.\n" + _DOC
    token_level = False
