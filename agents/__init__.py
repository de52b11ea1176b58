"""Agents (policies) of specstop-gym: one protocol (:mod:`agents.base`), one file per agent,
a name registry (:mod:`agents.registry`). See docs/agents.md."""

from .base import Agent, RoundContext, RoundFeedback, TokenContext, validate_k
from .contextual_ucb import ContextualUCB
from .delay_aware_stop import DelayAwareStop
from .heuristic import HeuristicSchedule
from .naive_ucb import NaiveUCB
from .oracle_agent import LocalOracle, OracleAgent
from .registry import (
    AGENTS,
    RUNNER_NAMES,
    agent_names,
    make_agent,
    parse_agent_spec,
    register_agent,
)
from .specdec_pp import SpecDecPP
from .static_k import StaticK
from .ts_specstop import TSSpecStop
from .ucb_specstop import CensoredAcceptance, UCBSpecStop, batch_optimal_k

__all__ = [
    "AGENTS",
    "RUNNER_NAMES",
    "Agent",
    "CensoredAcceptance",
    "ContextualUCB",
    "DelayAwareStop",
    "HeuristicSchedule",
    "LocalOracle",
    "NaiveUCB",
    "OracleAgent",
    "RoundContext",
    "RoundFeedback",
    "SpecDecPP",
    "StaticK",
    "TSSpecStop",
    "TokenContext",
    "UCBSpecStop",
    "agent_names",
    "batch_optimal_k",
    "make_agent",
    "parse_agent_spec",
    "register_agent",
    "validate_k",
]
