"""Evaluation on common random numbers: the batched runner and the metrics of SPEC 5."""

from .metrics import add_regret, confidence_interval, reference_rho, summarize
from .runner import AgentRun, run_agent, run_best_fixed_k, seed_keys

__all__ = ["AgentRun", "add_regret", "confidence_interval", "reference_rho", "run_agent", "run_best_fixed_k",
           "seed_keys", "summarize"]
