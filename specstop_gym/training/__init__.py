"""Training RL agents with Stable-Baselines3 (``train.py``) and RL Baselines3 Zoo.

``zoo_conf_file(algo)`` is the path of the shipped RL Baselines3 Zoo hyperparameter file of an
algorithm (``specstop_gym/training/zoo/<algo>.yml``), for ``python -m rl_zoo3.train ... --conf-file``
from any folder: ``--conf-file "$(python -m specstop_gym.training ppo)"``.
"""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
"""Folder of the shipped RL Baselines3 Zoo hyperparameter files (one per algorithm)."""


def zoo_conf_file(algo: str = "ppo") -> Path:
    """The shipped zoo hyperparameter file of ``algo`` (ValueError naming the available ones)."""
    path = ZOO_DIR / f"{str(algo).lower()}.yml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in ZOO_DIR.glob("*.yml")))
        raise ValueError(f"no RL Baselines3 Zoo hyperparameters for {algo!r}; shipped: {have}")
    return path
