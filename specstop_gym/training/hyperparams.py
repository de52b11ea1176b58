"""Every training default of train.py in one place: algorithms and hyperparameters per (algorithm, level).

Like rl-baselines3-zoo's ``hyperparams/*.yml`` (the project also ships one for the zoo itself:
``specstop_gym/training/zoo_hyperparams.yml``), the tables below are the only place the numbers
live; ``train.py --hyperparams key=value`` overrides single entries and ``config.json`` of every run
records the resolved values. docs/training.md explains the choices.

Reward
------
train.py trains on the environment's registered reward, unchanged (``--set reward_mode=...``
changes it explicitly): ``token_credit`` with the local reference rate, under which standard
discounted RL learns the latency-optimal policy (the derivation is in docs/training.md and the
environments' docstrings). Until issue 12, train.py switched the reward per (algorithm, level)
without saying so; it no longer changes it.

Discount
--------
* **PPO family, round level**: ``gamma = 1``, ``gae_lambda = 0.98``: an episode is a request of
  a fixed number of tokens, so the undiscounted return is exactly ``tokens * rho_ref - time``.
* **A2C, round level**: ``gamma = 0.99``: its 8-step rollouts bootstrap from the value function
  after a few rounds.
* **DQN**: ``gamma = 0.999`` (bootstrapped Q targets are unstable at ``gamma = 1``).
* **token level**: ``gamma = 0.999``: ``gamma^k`` stays close to 1 over a round (a round's
  credit arrives at its stop step). SB3's own default (0.99) also works with the registered
  reward (docs/training.md, "Standard RL with the registered defaults").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..cli import parse_value

ALGORITHMS = ("PPO", "A2C", "DQN", "MaskablePPO", "RecurrentPPO")
"""Algorithm names accepted by train.py (case-insensitive on the command line)."""

LEVELS = ("round", "token")
"""Decision levels: ``round`` (SpecStopRound-v0, choose k) and ``token`` (SpecStop-v0, draft or stop)."""

ENV_IDS = MappingProxyType({"round": "SpecStopRound-v0", "token": "SpecStop-v0"})
"""Environment id of each level."""

class HyperparamError(ValueError):
    """An unknown hyperparameter, a value of the wrong type, or an unknown algorithm."""


@dataclass(frozen=True)
class AlgorithmInfo:
    """What train.py and the SB3 agent need to know about one algorithm."""

    name: str
    module: str
    """Module of the class (imported lazily)."""
    policy: str
    """Policy name passed to the constructor."""
    on_policy: bool
    recurrent: bool = False
    """Keeps an LSTM state per environment (``predict(obs, state, episode_start)``)."""
    masked: bool = False
    """Uses action masks (``predict(obs, action_masks=...)``, ``env_method("action_masks")``)."""
    action_spaces: tuple[str, ...] = ("Discrete", "MultiDiscrete", "MultiBinary", "Box")
    """Action space classes (gymnasium.spaces) the algorithm supports."""

    def load_class(self) -> type:
        """The algorithm class (imports stable_baselines3 / sb3_contrib)."""
        import importlib

        return getattr(importlib.import_module(self.module), self.name)


ALGORITHM_INFO: Mapping[str, AlgorithmInfo] = MappingProxyType({
    "PPO": AlgorithmInfo("PPO", "stable_baselines3", "MlpPolicy", on_policy=True),
    "A2C": AlgorithmInfo("A2C", "stable_baselines3", "MlpPolicy", on_policy=True),
    "DQN": AlgorithmInfo("DQN", "stable_baselines3", "MlpPolicy", on_policy=False, action_spaces=("Discrete",)),
    "MaskablePPO": AlgorithmInfo("MaskablePPO", "sb3_contrib", "MlpPolicy", on_policy=True, masked=True,
                                 action_spaces=("Discrete", "MultiDiscrete", "MultiBinary")),
    "RecurrentPPO": AlgorithmInfo("RecurrentPPO", "sb3_contrib", "MlpLstmPolicy", on_policy=True, recurrent=True),
})


def canonical_algorithm(name: str) -> str:
    """``"ppo"`` -> ``"PPO"``; unknown names raise HyperparamError listing the valid ones."""
    for algo in ALGORITHMS:
        if str(name).strip().lower() == algo.lower():
            return algo
    from ..cli import did_you_mean

    raise HyperparamError(f"unknown algorithm {name!r}{did_you_mean(str(name), ALGORITHMS, cutoff=0.75)}; valid "
                          f"algorithms: {', '.join(ALGORITHMS)}")


# --------------------------------------------------------------------------------------------
# The defaults. Network: two tanh layers of 64 (SB3's default activation for on-policy
# algorithms); the observation has 4 + M + K entries, the optimal policies are simple
# (a threshold on the acceptance estimates and the delay), so small networks suffice.
# Rollout sizes assume train.py's default 16 environments (n_steps * 16 samples per update).
# --------------------------------------------------------------------------------------------
_PPO_ROUND: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 128,          # 128 rounds x 16 envs = 2048 samples per update
    "batch_size": 256,
    "n_epochs": 5,
    "gamma": 1.0,            # undiscounted: the exact objective (module docstring)
    "gae_lambda": 0.98,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "net_arch": [64, 64],
}
_PPO_TOKEN: dict[str, Any] = {
    **_PPO_ROUND,
    "n_steps": 256,          # ~2-4 token steps per round: a longer rollout for as many rounds
    "batch_size": 512,
    "gamma": 0.999,          # the credit of a round arrives at its stop step
    "gae_lambda": 0.95,
}
_A2C_ROUND: dict[str, Any] = {
    "learning_rate": 7e-4,
    "n_steps": 8,
    "gamma": 0.99,           # bootstraps after a few rounds
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "net_arch": [64, 64],
}
_A2C_TOKEN: dict[str, Any] = {**_A2C_ROUND, "n_steps": 16, "gamma": 0.999, "gae_lambda": 0.95}
_DQN_ROUND: dict[str, Any] = {
    "learning_rate": 1e-4,
    "buffer_size": 100_000,  # also bounds the replay buffer saved with checkpoints (~10 MB)
    "learning_starts": 1_000,
    "batch_size": 128,
    "gamma": 0.999,          # bootstrapped targets: gamma = 1 is unstable for Q-learning
    "train_freq": 4,
    "gradient_steps": 1,
    "target_update_interval": 1_000,
    "exploration_fraction": 0.2,
    "exploration_final_eps": 0.02,
    "net_arch": [64, 64],
}
_DQN_TOKEN: dict[str, Any] = dict(_DQN_ROUND)
_RPPO_ROUND: dict[str, Any] = {
    **_PPO_ROUND,
    "batch_size": 128,       # RecurrentPPO's minibatches are sequences of the rollout
    "net_arch": [64],
    "lstm_hidden_size": 32,
}
_RPPO_TOKEN: dict[str, Any] = {**_RPPO_ROUND, "n_steps": 256, "batch_size": 256, "gamma": 0.999,
                                "gae_lambda": 0.95}

DEFAULT_HYPERPARAMS: Mapping[tuple[str, str], Mapping[str, Any]] = MappingProxyType({
    ("PPO", "round"): MappingProxyType(_PPO_ROUND),
    ("PPO", "token"): MappingProxyType(_PPO_TOKEN),
    ("MaskablePPO", "round"): MappingProxyType(_PPO_ROUND),
    ("MaskablePPO", "token"): MappingProxyType(_PPO_TOKEN),
    ("A2C", "round"): MappingProxyType(_A2C_ROUND),
    ("A2C", "token"): MappingProxyType(_A2C_TOKEN),
    ("DQN", "round"): MappingProxyType(_DQN_ROUND),
    ("DQN", "token"): MappingProxyType(_DQN_TOKEN),
    ("RecurrentPPO", "round"): MappingProxyType(_RPPO_ROUND),
    ("RecurrentPPO", "token"): MappingProxyType(_RPPO_TOKEN),
})
"""Hyperparameters per (algorithm, level); keys are constructor arguments of the algorithm or
policy shortcuts (:data:`POLICY_SHORTCUTS`)."""

POLICY_SHORTCUTS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "net_arch": ALGORITHMS,
    "activation_fn": ALGORITHMS,
    "ortho_init": ("PPO", "A2C", "MaskablePPO", "RecurrentPPO"),
    "lstm_hidden_size": ("RecurrentPPO",),
    "n_lstm_layers": ("RecurrentPPO",),
    "shared_lstm": ("RecurrentPPO",),
    "enable_critic_lstm": ("RecurrentPPO",),
})
"""Keys that go into ``policy_kwargs`` (per algorithm that accepts them)."""

ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu")
"""Names accepted by ``activation_fn`` (torch.nn classes)."""

MANAGED = frozenset({"self", "policy", "env", "seed", "device", "tensorboard_log", "verbose",
                     "_init_setup_model"})
"""Constructor arguments train.py sets itself (not overridable with --hyperparams)."""


# --------------------------------------------------------------------------------------------
def valid_keys(algo: str) -> list[str]:
    """Hyperparameter names accepted for ``algo``: its constructor arguments, ``policy_kwargs``
    and the policy shortcuts."""
    info = ALGORITHM_INFO[canonical_algorithm(algo)]
    params = inspect.signature(info.load_class().__init__).parameters
    keys = [k for k in params if k not in MANAGED]
    keys += [k for k, algos in POLICY_SHORTCUTS.items() if info.name in algos]
    return sorted(set(keys))


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["n_steps=64", "net_arch=[32,32]"]`` -> ``{"n_steps": 64, "net_arch": [32, 32]}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if not eq or not key:
            raise HyperparamError(f"--hyperparams expects key=value, got {item!r}")
        out[key] = parse_value(text)
    return out


def _check_type(algo: str, key: str, value: Any, default: Any) -> None:
    """Values must have the type of the default (ints where an int is expected, ...)."""
    if default is None or value is None:
        return
    if key == "learning_rate" and isinstance(value, str) and value.startswith("lin_"):
        try:
            float(value[4:])
            return
        except ValueError:
            pass
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple, dict))
    else:
        return
    if not ok:
        raise HyperparamError(f"hyperparameter {key}={value!r} for {algo}: expected a value like {default!r}")


def resolve_hyperparams(algo: str, level: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults of (algo, level) with ``overrides`` applied and checked.

    Unknown keys raise HyperparamError naming the key and listing the valid ones; values of the
    wrong type (``n_steps=0.5``) raise too. The result is plain (JSON-serialisable) and feeds
    :func:`algorithm_kwargs`.
    """
    algo = canonical_algorithm(algo)
    if level not in LEVELS:
        raise HyperparamError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")
    info = ALGORITHM_INFO[algo]
    params = inspect.signature(info.load_class().__init__).parameters
    valid = valid_keys(algo)
    out = dict(DEFAULT_HYPERPARAMS[(algo, level)])
    for key, value in (overrides or {}).items():
        if key in MANAGED:
            raise HyperparamError(f"hyperparameter {key!r} is set by train.py itself "
                                  f"(use the --{key.replace('_', '-')} flag where there is one)")
        if key not in valid:
            raise HyperparamError(f"unknown hyperparameter {key!r} for {algo}; valid: {', '.join(valid)}")
        default = out.get(key)
        if default is None and key in params and params[key].default is not inspect.Parameter.empty:
            default = params[key].default
        _check_type(algo, key, value, default)
        if key == "activation_fn" and value not in ACTIVATIONS:
            raise HyperparamError(f"activation_fn={value!r}; valid: {', '.join(ACTIVATIONS)}")
        if key == "policy_kwargs" and not isinstance(value, dict):
            raise HyperparamError(f"policy_kwargs must be a dict literal, got {value!r}")
        out[key] = value
    return out


def algorithm_kwargs(algo: str, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keyword arguments from resolved hyperparameters: shortcuts moved into
    ``policy_kwargs``, activation names turned into torch classes, ``lin_X`` learning rates into
    linear schedules."""
    from torch import nn

    algo = canonical_algorithm(algo)
    kwargs: dict[str, Any] = {}
    policy_kwargs: dict[str, Any] = dict(hyperparams.get("policy_kwargs") or {})
    for key, value in hyperparams.items():
        if key == "policy_kwargs":
            continue
        if key in POLICY_SHORTCUTS:
            policy_kwargs[key] = value
        else:
            kwargs[key] = value
    act = policy_kwargs.get("activation_fn")
    if isinstance(act, str):
        names = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU,
                 "silu": nn.SiLU}
        policy_kwargs["activation_fn"] = names[act]
    if isinstance(policy_kwargs.get("net_arch"), tuple):
        policy_kwargs["net_arch"] = list(policy_kwargs["net_arch"])
    lr = kwargs.get("learning_rate")
    if isinstance(lr, str) and lr.startswith("lin_"):
        kwargs["learning_rate"] = linear_schedule(float(lr[4:]))
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def linear_schedule(initial: float) -> Any:
    """A learning rate decreasing linearly from ``initial`` to 0 over training (rl-zoo's ``lin_``)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def check_algorithm_spaces(algo: str, observation_space: Any, action_space: Any, *,
                           has_action_masks: bool = False) -> None:
    """Refuse an algorithm that cannot act in the given spaces (HyperparamError naming both).

    DQN needs a ``Discrete`` action space; MaskablePPO a discrete one and an environment with
    ``action_masks()``; every algorithm here uses an MLP, so the observation must be a flat ``Box``.
    """
    algo = canonical_algorithm(algo)
    info = ALGORITHM_INFO[algo]
    space = type(action_space).__name__
    if space not in info.action_spaces:
        raise HyperparamError(f"{algo} does not support the action space {action_space} ({space}); it needs "
                              f"{' or '.join(info.action_spaces)}")
    if info.masked and not has_action_masks:
        raise HyperparamError(f"{algo} needs an environment with action_masks(); this one has none")
    obs = type(observation_space).__name__
    shape = getattr(observation_space, "shape", None)
    if obs != "Box" or shape is None or len(shape) != 1:
        raise HyperparamError(f"{algo} with an MLP policy needs a flat Box observation space, got {observation_space}")


__all__ = [
    "ACTIVATIONS",
    "ALGORITHMS",
    "ALGORITHM_INFO",
    "DEFAULT_HYPERPARAMS",
    "ENV_IDS",
    "LEVELS",
    "MANAGED",
    "POLICY_SHORTCUTS",
    "AlgorithmInfo",
    "HyperparamError",
    "algorithm_kwargs",
    "canonical_algorithm",
    "check_algorithm_spaces",
    "linear_schedule",
    "parse_overrides",
    "parse_value",
    "resolve_hyperparams",
    "valid_keys",
]
