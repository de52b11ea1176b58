"""A plain PPO training loop over ``gym.make_vec`` (the shape of CleanRL's single-file ``ppo.py``).

Written for the test suite and ``benchmarks/bench_rl_defaults.py`` to check that an RL library
the project does not control learns the right policy from the registered defaults alone: no
project code is used but ``gym.make_vec`` and the environment's id. The pieces are the usual ones:

* a separate actor and critic, two tanh layers of 64, orthogonal initialisation (gain sqrt 2;
  0.01 for the policy head, 1 for the value head);
* rollouts of ``num_steps`` steps from ``num_envs`` environments of ``gym.make_vec`` (the native
  vector environment, Gymnasium's default ``NextStep`` autoreset: the step after an episode's end
  only resets, so it is left out of the loss and cuts the bootstrap);
* generalised advantage estimation (``gamma``, ``gae_lambda``), per-minibatch advantage
  normalisation, the clipped surrogate objective, a clipped value loss, an entropy bonus, global
  gradient clipping, Adam with a linearly annealed learning rate.

The defaults are CleanRL's (``ppo.py``: 4 environments x 128 steps, lr 2.5e-4, 4 minibatches,
4 epochs, clip 0.2, entropy 0.01, gamma 0.99, lambda 0.95). Seeded: torch's global generator is
seeded from ``seed`` (actions are sampled from it, as in CleanRL) and the environments with
``seed + i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical


@dataclass
class PPOConfig:
    env_id: str = "SpecStop-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    total_timesteps: int = 300_000
    num_envs: int = 4
    num_steps: int = 128
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    seed: int = 0


def _layer(n_in: int, n_out: int, gain: float = float(np.sqrt(2))) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(_layer(obs_dim, 64), nn.Tanh(), _layer(64, 64), nn.Tanh(), _layer(64, 1, 1.0))
        self.actor = nn.Sequential(_layer(obs_dim, 64), nn.Tanh(), _layer(64, 64), nn.Tanh(),
                                   _layer(64, n_actions, 0.01))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        dist = Categorical(logits=self.actor(obs))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.value(obs)

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions (the most likely ones) for observation rows."""
        return self.actor(torch.as_tensor(np.asarray(obs, np.float32))).argmax(-1).numpy()


def train(cfg: PPOConfig, callback: Any = None, wrap: Any = None) -> ActorCritic:
    """Train and return the actor-critic; ``callback(steps, agent, mean return of the last 20
    episodes)`` after each update, if given; ``wrap(envs)``: a vector wrapper to apply (ablations)."""
    torch.manual_seed(cfg.seed)
    envs = gym.make_vec(cfg.env_id, num_envs=cfg.num_envs, **cfg.env_kwargs)
    if wrap is not None:
        envs = wrap(envs)
    n_obs = int(np.prod(envs.single_observation_space.shape))
    agent = ActorCritic(n_obs, int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    n, t_len = cfg.num_envs, cfg.num_steps
    batch = n * t_len
    minibatch = batch // cfg.num_minibatches
    updates = max(1, cfg.total_timesteps // batch)

    obs_buf = torch.zeros((t_len, n, n_obs))
    act_buf = torch.zeros((t_len, n), dtype=torch.long)
    logp_buf = torch.zeros((t_len, n))
    rew_buf = torch.zeros((t_len, n))
    val_buf = torch.zeros((t_len, n))
    end_buf = torch.zeros((t_len, n))  # the step ended its episode (no bootstrap past it)
    skip_buf = torch.zeros((t_len, n))  # an autoreset step: its action is ignored, it is not learnt from

    obs, _ = envs.reset(seed=cfg.seed)
    next_obs = torch.as_tensor(obs, dtype=torch.float32)
    resetting = np.zeros(n, bool)
    ep_return = np.zeros(n)
    finished: list[float] = []
    for update in range(updates):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - update / updates)
        for t in range(t_len):
            obs_buf[t] = next_obs
            skip_buf[t] = torch.as_tensor(resetting, dtype=torch.float32)
            with torch.no_grad():
                action, logp, _, value = agent.act(next_obs)
            act_buf[t], logp_buf[t], val_buf[t] = action, logp, value
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            ended = np.logical_or(terminated, truncated) & ~resetting
            rew_buf[t] = torch.as_tensor(np.where(resetting, 0.0, reward), dtype=torch.float32)
            end_buf[t] = torch.as_tensor(ended, dtype=torch.float32)
            ep_return += np.where(resetting, 0.0, reward)
            for i in np.flatnonzero(ended):
                finished.append(float(ep_return[i]))
                ep_return[i] = 0.0
            resetting = ended
            next_obs = torch.as_tensor(obs, dtype=torch.float32)
        # GAE; an autoreset step is a boundary: the step before it ended an episode (end_buf)
        with torch.no_grad():
            next_value = agent.value(next_obs)
            adv = torch.zeros((t_len, n))
            last = torch.zeros(n)
            for t in reversed(range(t_len)):
                nv = next_value if t == t_len - 1 else val_buf[t + 1]
                live = 1.0 - end_buf[t]
                delta = rew_buf[t] + cfg.gamma * nv * live - val_buf[t]
                last = delta + cfg.gamma * cfg.gae_lambda * live * last
                last = last * (1.0 - skip_buf[t])
                adv[t] = last
            ret = adv + val_buf
        keep = (skip_buf.reshape(-1) == 0).nonzero().squeeze(-1)
        b_obs, b_act = obs_buf.reshape(-1, n_obs)[keep], act_buf.reshape(-1)[keep]
        b_logp, b_adv = logp_buf.reshape(-1)[keep], adv.reshape(-1)[keep]
        b_ret, b_val = ret.reshape(-1)[keep], val_buf.reshape(-1)[keep]
        size = len(keep)
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(size)
            for start in range(0, size, minibatch):
                mb = perm[start:start + minibatch]
                _, logp, entropy, value = agent.act(b_obs[mb], b_act[mb])
                ratio = (logp - b_logp[mb]).exp()
                a = b_adv[mb]
                a = (a - a.mean()) / (a.std() + 1e-8) if len(mb) > 1 else a
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                v_clipped = b_val[mb] + (value - b_val[mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((value - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
        if callback is not None:
            callback((update + 1) * batch, agent, float(np.mean(finished[-20:])) if finished else float("nan"))
    envs.close()
    return agent
