"""Agent names -> classes, and agent specs such as ``"static-k:k=4"`` -> instances.

Special names the evaluation runner handles itself (not online agents, so
:func:`make_agent` does not build them):

* ``best-fixed-k``: runs ``static-k`` for every ``k`` on the same random streams
  and keeps the best in hindsight (:func:`specstop_gym.oracle.best_fixed_k`);
* ``sb3:PATH``: a trained Stable-Baselines3 policy loaded from ``PATH``; :func:`make_agent`
  builds it (:class:`agents.sb3_agent.SB3Agent`), so the runner treats it like any agent.
"""

from __future__ import annotations

from typing import Any

from specstop_gym.cli import parse_value
from specstop_gym.core.config import ScenarioConfig

from .base import Agent
from .contextual_ucb import ContextualUCB
from .delay_aware_stop import DelayAwareStop
from .heuristic import HeuristicSchedule
from .naive_ucb import NaiveUCB
from .oracle_agent import LocalOracle, OracleAgent
from .specdec_pp import SpecDecPP
from .static_k import StaticK
from .ts_specstop import TSSpecStop
from .ucb_specstop import UCBSpecStop

__all__ = ["AGENTS", "RUNNER_NAMES", "agent_names", "make_agent", "parse_agent_spec", "register_agent"]

AGENTS: dict[str, type[Agent]] = {
    cls.name: cls
    for cls in (StaticK, HeuristicSchedule, SpecDecPP, NaiveUCB, UCBSpecStop, ContextualUCB, TSSpecStop,
                DelayAwareStop, OracleAgent, LocalOracle)
}
"""Every online agent by its ``name``."""

RUNNER_NAMES = ("best-fixed-k", "sb3:PATH")
"""Names the evaluation runner resolves itself (see the module docstring)."""


def agent_names() -> list[str]:
    """Names of the registered agents, in registration order."""
    return list(AGENTS)


def register_agent(cls: type[Agent]) -> type[Agent]:
    """Add an agent class under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ValueError(f"register_agent needs an Agent subclass, got {cls!r}")
    if cls.name in AGENTS and AGENTS[cls.name] is not cls:
        raise ValueError(f"an agent named {cls.name!r} is already registered ({AGENTS[cls.name].__qualname__})")
    AGENTS[cls.name] = cls
    return cls


def _valid_names() -> str:
    return (f"valid agents: {', '.join(AGENTS)}; the evaluation runner also accepts "
            f"{' and '.join(RUNNER_NAMES)}")


def parse_agent_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``(name, {key: value})``.

    Values are parsed by :func:`specstop_gym.cli.parse_value`: int, float, bool
    (``true``/``false``), None (``none``/``null``), else the string itself.
    ``"static-k:k=4,foo=0.5"`` gives ``("static-k", {"k": 4, "foo": 0.5})``. The name is not checked here (see
    :func:`make_agent`); a malformed spec raises ValueError.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"agent spec must be a non-empty string 'name[:key=value,...]', got {spec!r}")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"agent spec {spec!r} has no agent name")
    params: dict[str, Any] = {}
    if sep and rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key or not key.isidentifier():
                raise ValueError(f"agent spec {spec!r}: parameter {item.strip()!r} is not of the form key=value")
            if key in params:
                raise ValueError(f"agent spec {spec!r}: parameter {key!r} given twice")
            params[key] = parse_value(value)
    return name, params


def make_agent(spec_or_name: str, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
               **params: Any) -> Agent:
    """Build an agent from a name or spec (``"ucb-specstop:level_c=3"``) for ``scenario``.

    Keyword ``params`` are merged over the spec's (keywords win). Unknown names
    raise ValueError listing the valid ones; ``best-fixed-k`` raises ValueError too
    (the evaluation runner builds it); bad parameters raise the agent's ValueError
    naming the parameter. ``sb3:PATH`` (everything after ``sb3:`` is the path of a
    train.py run folder, its model.zip or a checkpoint) builds
    :class:`agents.sb3_agent.SB3Agent` (ValueError for a missing or unusable model).
    """
    if isinstance(spec_or_name, str) and spec_or_name.strip().startswith("sb3:"):
        return _make_sb3_agent(spec_or_name.strip(), scenario, n_runs, seed, params)
    name, spec_params = parse_agent_spec(spec_or_name)
    if name == "best-fixed-k":
        raise ValueError("best-fixed-k is not an online agent: the evaluation runner runs static-k for "
                         f"every k on the same draws and keeps the best in hindsight ({_valid_names()})")
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; {_valid_names()}")
    return AGENTS[name](scenario, n_runs=n_runs, seed=seed, **{**spec_params, **params})


def _make_sb3_agent(spec: str, scenario: ScenarioConfig, n_runs: int, seed: int | None,
                    params: dict[str, Any]) -> Agent:
    """``sb3:PATH`` -> :class:`agents.sb3_agent.SB3Agent` (imported lazily: torch and SB3 load only here)."""
    from .sb3_agent import SB3Agent

    path = spec[len("sb3:"):].strip()
    if not path:
        raise ValueError("sb3:PATH needs the path of a trained model (a train.py run folder, its model.zip "
                         "or a checkpoint)")
    unknown = sorted(set(params) - {"deterministic"})
    if unknown:
        raise ValueError(f"unknown parameter(s) for agent 'sb3': {', '.join(unknown)} (valid: deterministic)")
    try:
        return SB3Agent(path, scenario, n_runs=n_runs, seed=seed, **params)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
