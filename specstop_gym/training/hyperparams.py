"""Every training default in one place: algorithms, hyperparameters per (algorithm, level), and the
reward settings train.py applies to the scenario.

Like rl-baselines3-zoo's ``hyperparams/*.yml``, the tables below are the only place the numbers
live; ``train.py --hyperparams key=value`` overrides single entries and ``config.json`` of every run
records the resolved values. docs/training.md explains the choices.

Reward and discount (``TRAINING_SCENARIO_DEFAULTS``, ``gamma``)
---------------------------------------------------------------
An episode serves a fixed number of tokens, so ``-episode time`` (``reward_mode="latency"``) and
``tokens * rho_ref - episode time`` (``"token_credit"``, ``rho_ref`` = the stationary ``rho*`` at
the long-run mean delay) differ by a constant: undiscounted, both are maximised by the policy of
least per-token latency. They differ in what a learner sees before its value function is right,
and under discounting:

* ``latency`` charges a round's time in its own step and pays its extra tokens only later (fewer
  rounds left): until the value function carries that, and for any ``gamma < 1``, short rounds
  look better;
* ``token_credit`` pays the round's tokens in the same step: one round's expected reward
  ``rho* E[A+1] - E[T(k)]`` is maximised by the oracle's threshold rule (SPEC 4, Dinkelbach), the
  right answer on stationary channels; on channels whose state persists (Markov, drift)
  ``rho_ref`` is not the local rate and it pulls towards one k for all states.

What we measured (docs/training.md) and therefore use, per (algorithm, level):

* **PPO family, round level**: ``token_credit``, ``gamma = 1`` (exact objective), ``gae_lambda =
  0.98``: k* on the stationary preset for training seeds 0, 1 and 2. ``latency`` with the same
  settings collapsed to k = 1 for seed 1 (+12.7%), but learned the CSI-dependent policy on
  markov-csi (``--set reward_mode=latency``; docs/training.md), where token_credit stayed on one k.
* **A2C, round level**: ``token_credit``, ``gamma = 0.99``: its 8-step rollouts bootstrap from
  the value function after a few rounds; with ``latency`` and ``gamma = 1`` it stayed at k = 1.
* **DQN, round level**: ``latency``, ``gamma = 0.999`` (bootstrapped Q targets are unstable at
  ``gamma = 1``); ended 1.7% above the oracle on the stationary preset, token_credit with
  ``gamma = 0.99`` oscillated more.
* **every algorithm, token level**: ``token_credit``, ``gamma = 0.999``. With ``latency`` the stop
  step carries the whole round trip and PPO learned never to stop (k = max_draft, +17%).
  ``gamma^k`` must stay close to 1 over a round: the credit arrives at its last step.

``time_scale_ms = 100`` puts per-round rewards near 1 in magnitude.
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

_LATENCY = MappingProxyType({"reward_mode": "latency", "time_scale_ms": 100.0})
_CREDIT = MappingProxyType({"reward_mode": "token_credit", "time_scale_ms": 100.0})
TRAINING_SCENARIO_DEFAULTS: Mapping[tuple[str, str], Mapping[str, Any]] = MappingProxyType({
    **{(algo, level): _CREDIT for algo in ALGORITHMS for level in LEVELS},
    ("DQN", "round"): _LATENCY,
})
"""Scenario fields (the training reward) train.py sets per (algorithm, level) unless ``--set``
overrides them; they change the reward only, never the dynamics, the spaces or the evaluation."""


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
    raise HyperparamError(f"unknown algorithm {name!r}; valid algorithms: {', '.join(ALGORITHMS)}")


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
    "gamma": 0.999,          # token_credit; the credit of a round arrives at its stop step
    "gae_lambda": 0.95,
}
_A2C_ROUND: dict[str, Any] = {
    "learning_rate": 7e-4,
    "n_steps": 8,
    "gamma": 0.99,           # with token_credit (TRAINING_SCENARIO_DEFAULTS): one-round Dinkelbach form
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
    "gamma": 0.999,          # with latency; bootstrapped targets: gamma = 1 is unstable for Q-learning
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
    "TRAINING_SCENARIO_DEFAULTS",
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
