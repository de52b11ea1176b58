"""specstop-gym: delay-adaptive speculation control for edge-cloud speculative decoding.

Importing the package registers the environments with Gymnasium:

* ``SpecStop-v0``: token level, draft another token or stop (``envs.token_env``);
* ``SpecStopRound-v0``: round level, choose the draft length (``envs.round_env``).

The same registration runs through the ``gymnasium.envs`` entry-point group, so
``gym.make("specstop_gym:SpecStop-v0")`` works without importing the package first.
"""

from __future__ import annotations

__version__ = "0.1.0"

ENV_IDS = ("SpecStop-v0", "SpecStopRound-v0")


def register_envs() -> None:
    """Register both environment ids (idempotent)."""
    from gymnasium.envs.registration import register, registry

    entries = {
        "SpecStop-v0": ("specstop_gym.envs.token_env:SpecStopEnv", "specstop_gym.envs.token_env:SpecStopVectorEnv"),
        "SpecStopRound-v0": ("specstop_gym.envs.round_env:SpecStopRoundEnv",
                             "specstop_gym.envs.round_env:SpecStopRoundVectorEnv"),
    }
    for env_id, (entry, vector_entry) in entries.items():
        if env_id not in registry:
            # no OrderEnforcing / PassiveEnvChecker layers: the environments refuse step() before
            # reset() themselves and pass the full checkers (tests), and gym.make then returns the
            # environment itself, so env.action_masks() and sb3-contrib's ActionMasker(env,
            # "action_masks") reach it (Gymnasium 1.x wrappers do not forward attributes).
            register(id=env_id, entry_point=entry, vector_entry_point=vector_entry, order_enforce=False,
                     disable_env_checker=True)


register_envs()

from .core.config import ConfigError, ScenarioConfig  # noqa: E402


def __getattr__(name: str):  # PEP 562: the scenarios module is imported on first use, so that
    # ``python -m specstop_gym.scenarios`` (the older form of ``python -m specstop_gym scenarios``)
    # runs without runpy's "found in sys.modules ... prior to execution" RuntimeWarning
    if name in ("make_scenario", "scenario_names"):
        from . import scenarios

        return getattr(scenarios, name)
    raise AttributeError(f"module 'specstop_gym' has no attribute {name!r}")

__all__ = ["ENV_IDS", "ConfigError", "ScenarioConfig", "make_scenario", "register_envs", "scenario_names"]
