"""Gymnasium faces over the core: token level (SpecStop-v0) and round level (SpecStopRound-v0)."""

from .round_env import SpecStopRoundEnv, SpecStopRoundVectorEnv
from .token_env import SpecStopEnv, SpecStopVectorEnv

__all__ = ["SpecStopEnv", "SpecStopRoundEnv", "SpecStopRoundVectorEnv", "SpecStopVectorEnv"]
