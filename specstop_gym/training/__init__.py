"""Training RL agents with Stable-Baselines3."""
