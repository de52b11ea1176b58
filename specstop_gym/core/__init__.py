"""The simulation core: numpy state, numba kernels, batch axis first; imports neither gymnasium nor torch."""

from .acceptance import (AcceptanceProcess, LatentDifficultyAcceptance, ProfileAcceptance, TraceAcceptance,
                         geometric, kaplan_meier_hazards)
from .channel import Channel, DriftChannel, IIDChannel, MarkovChannel, TraceChannel, stationary_distribution
from .config import ConfigError, ScenarioConfig, field_names
from .simulator import RoundResult, Simulator

__all__ = ["AcceptanceProcess", "Channel", "ConfigError", "DriftChannel", "IIDChannel", "LatentDifficultyAcceptance",
           "MarkovChannel", "ProfileAcceptance", "RoundResult", "ScenarioConfig", "Simulator", "TraceAcceptance",
           "TraceChannel", "field_names", "geometric", "kaplan_meier_hazards", "stationary_distribution"]
