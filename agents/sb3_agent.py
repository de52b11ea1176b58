"""A trained Stable-Baselines3 policy as an agent of the common protocol (``sb3:PATH``).

``SB3Agent(path, scenario, n_runs, seed)`` loads a model written by ``train.py`` (a run folder, its
``model.zip`` or one of its checkpoints) and answers ``choose_k`` / ``should_stop`` from the
environment's observation rows that the evaluation runner puts in every context
(``ctx.observation``), so ``evaluate.py --agents sb3:runs/<run>/model.zip`` compares it with every
other agent on the same common random numbers.

* **Algorithm**: from the model's own metadata (``specstop_meta``, saved by train.py inside the
  zip), else the run folder's ``config.json``, else detected from the policy class stored in the
  zip (PPO, A2C, DQN, MaskablePPO, RecurrentPPO).
* **Spaces**: the model's observation and action spaces must be the scenario's (a clear
  ``ValueError`` names the mismatch, e.g. a model trained with ``max_draft`` 8 evaluated with 12).
* **Observation normalisation**: when the run used ``--normalize`` (the model's metadata or the
  run's config.json says so), the ``VecNormalize`` statistics (``vecnormalize.pkl`` next to
  ``model.zip``, ``rl_model_vecnormalize_<N>_steps.pkl`` next to a checkpoint) are loaded and
  applied; a statistics file beside a model trained without ``--normalize`` (or without a
  record) is never opened.
* **Trust**: the statistics are a pickle (SB3's format): loading one runs code from the file.
  ``model.zip`` too holds cloudpickled objects (the policy class, the spaces, the schedules) that
  SB3 unpickles on load; the schedules, not needed to predict, are replaced instead, the rest is
  not. **Only load files you trust.** Before anything is unpickled: the zip's ``data`` entry is
  read as plain JSON (a file that is not an SB3 model is refused), and when the run folder's
  config.json records the sha256 of ``model.zip`` / ``vecnormalize.pkl`` (train.py writes it),
  the files must match it. That catches a model replaced or damaged after training; it does not
  authenticate anything (whoever can write the folder can rewrite config.json too).
* **Levels**: a round-level model answers ``choose_k`` with ``predict(obs) + 1``; at the token
  level it plans ``k`` at the first token of a round (from the round-level view of the
  observation: ``position_frac`` and ``confidence`` set to 0) and stops there. A token-level model
  answers ``should_stop`` with ``predict(obs) == 1`` (with the action masks for MaskablePPO); at
  the round level, on scenarios without a confidence signal (within a round only
  ``position_frac`` changes), ``choose_k`` replays its decisions for positions 1, 2, ... and
  returns the first stop, which is exactly what it would do token by token.
* **RecurrentPPO** keeps an LSTM state per run (row) and the ``episode_start`` flag of each row's
  first decision; ``reset()`` clears them.
* ``deterministic=True`` (default) takes the most probable action. ``deterministic=False`` samples
  (PPO family) with torch's generator forked and seeded from the agent's ``rng`` (reproducible, no
  effect on the global generator); DQN is always greedy.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, TokenContext

__all__ = ["LoadedPolicy", "SB3Agent", "ScenarioMismatchWarning", "detect_algorithm", "load_policy",
           "scenario_spaces"]


class ScenarioMismatchWarning(UserWarning):
    """A trained model is evaluated on another scenario (or other settings) than it was trained on."""

ALGORITHMS = ("PPO", "A2C", "DQN", "MaskablePPO", "RecurrentPPO")
_CHECKPOINT = re.compile(r"^(?P<prefix>.*)_(?P<steps>\d+)_steps\.zip$")
_NOT_SB3 = "not a Stable-Baselines3 model file"


@dataclass
class LoadedPolicy:
    """A model and what is needed to feed it: algorithm, level, normalisation, metadata."""

    model: Any
    algorithm: str
    level: str
    path: Path | None = None
    normalizer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ loading
def _resolve_model_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "model.zip").is_file():
            raise FileNotFoundError(f"no model.zip in the folder {str(p)!r} (is it a train.py run folder?)")
        return p / "model.zip"
    if not p.exists():
        if p.suffix != ".zip" and Path(str(p) + ".zip").is_file():
            return Path(str(p) + ".zip")
        raise FileNotFoundError(f"no Stable-Baselines3 model at {str(p)!r}: the file does not exist")
    return p


def _read_data(path: Path) -> dict[str, Any]:
    """The ``data`` JSON of an SB3 zip (no unpickling); ValueError if it is not an SB3 model."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "data" not in names or "policy.pth" not in names:
                raise ValueError(f"{str(path)!r} is {_NOT_SB3} (a zip without SB3's 'data'/'policy.pth' entries)")
            data = json.loads(zf.read("data").decode("utf-8"))
    except zipfile.BadZipFile as e:
        raise ValueError(f"{str(path)!r} is {_NOT_SB3} (not a valid zip archive: {e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is {_NOT_SB3} (its 'data' entry is not SB3's JSON: {e})") from None
    except OSError as e:
        raise ValueError(f"{str(path)!r} could not be read: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} is {_NOT_SB3} (its 'data' entry is not a JSON object)")
    return data


def detect_algorithm(data: dict[str, Any]) -> str | None:
    """The algorithm of a model from its ``data`` JSON: train.py's metadata, else the policy class."""
    meta = data.get("specstop_meta")
    if isinstance(meta, dict) and meta.get("algorithm") in ALGORITHMS:
        return str(meta["algorithm"])
    pc = data.get("policy_class")
    module = pc.get("__module__", "") if isinstance(pc, dict) else ""
    if "recurrent" in module:
        return "RecurrentPPO"
    if "maskable" in module:
        return "MaskablePPO"
    if "dqn" in module:
        return "DQN"
    if module.startswith("stable_baselines3"):
        # ActorCriticPolicy: PPO stores its clipping range, A2C does not (prediction is the same)
        return "PPO" if "clip_range" in data else "A2C"
    return None


def _run_config(model_path: Path) -> dict[str, Any]:
    """config.json of the run folder holding ``model_path`` (the folder itself or its parent)."""
    for folder in (model_path.parent, model_path.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                if cfg.stat().st_size > 16 << 20:
                    return {}
                data = json.loads(cfg.read_text())
            except (OSError, ValueError, RecursionError):
                return {}
            return data if isinstance(data, dict) and "algorithm" in data else {}
    return {}


def _check_recorded_sha256(path: Path, run_cfg: dict[str, Any]) -> None:
    """When ``path`` is a file whose sha256 its run's config.json records (model.zip,
    vecnormalize.pkl of the run folder), refuse it unless it matches (module docstring)."""
    record = run_cfg.get("sha256") if isinstance(run_cfg.get("sha256"), dict) else {}
    want = record.get(path.name)
    if not want or not (path.parent / "config.json").is_file():
        return
    from specstop_gym.traces.manifest import sha256_file

    have = sha256_file(path)
    if have != want:
        raise ValueError(f"{str(path)!r} does not match the sha256 recorded in its run's config.json "
                         f"({want[:12]}..., the file has {have[:12]}...): it changed after training; "
                         "refusing to load it")


def _normalizer_path(model_path: Path) -> Path:
    m = _CHECKPOINT.match(model_path.name)
    if m:
        return model_path.with_name(f"{m.group('prefix')}_vecnormalize_{m.group('steps')}_steps.pkl")
    return model_path.with_name("vecnormalize.pkl")


def _load_normalizer(path: Path, obs_shape: tuple[int, ...]) -> Any:
    """VecNormalize statistics (SB3's pickle: only load trusted files)."""
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        with open(path, "rb") as f:
            norm = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{str(path)!r} is not a VecNormalize statistics file: {e}") from None
    if not isinstance(norm, VecNormalize):
        raise ValueError(f"{str(path)!r} is not a VecNormalize statistics file (holds {type(norm).__name__})")
    if norm.norm_obs and tuple(np.shape(norm.obs_rms.mean)) != tuple(obs_shape):
        raise ValueError(f"{str(path)!r}: normalisation statistics of shape {np.shape(norm.obs_rms.mean)} do not "
                         f"fit the model's observations {tuple(obs_shape)}")
    norm.training = False
    return norm


def load_policy(path: str | Path, device: str = "cpu") -> LoadedPolicy:
    """Load a model written by train.py (or any SB3 model of the five algorithms).

    Raises FileNotFoundError for a missing file, ValueError for a file that is not an SB3 model or
    that cannot be loaded, naming the file.
    """
    model_path = _resolve_model_path(path)
    data = _read_data(model_path)
    meta = data.get("specstop_meta") if isinstance(data.get("specstop_meta"), dict) else {}
    run_cfg = _run_config(model_path)
    algo = detect_algorithm(data) or run_cfg.get("algorithm")
    if algo not in ALGORITHMS:
        raise ValueError(f"{str(model_path)!r}: cannot tell which algorithm wrote this model "
                         f"(expected one of {', '.join(ALGORITHMS)})")
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    _check_recorded_sha256(model_path, run_cfg)
    cls = ALGORITHM_INFO[algo].load_class()
    # schedules are cloudpickled functions: not needed to predict, replaced rather than unpickled
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0,
              "clip_range_vf": None, "exploration_schedule": lambda _: 0.0}
    try:
        with _global_generators_preserved():  # SB3's load re-seeds random/numpy/torch globally
            model = cls.load(str(model_path), device=device, custom_objects=custom)
    except Exception as e:  # noqa: BLE001 - SB3 raises many kinds of errors for broken files
        raise ValueError(f"{str(model_path)!r} could not be loaded as a {algo} model ({_NOT_SB3}, or a "
                         f"damaged one): {type(e).__name__}: {e}") from None
    level = meta.get("level") or run_cfg.get("level")
    train_cfg = run_cfg.get("train") if isinstance(run_cfg.get("train"), dict) else {}
    norm_flag = meta.get("normalize", train_cfg.get("normalize"))
    npath = _normalizer_path(model_path)
    normalizer = None
    if norm_flag is True:  # only a run recorded as normalised gets its statistics unpickled
        if not npath.is_file():
            raise FileNotFoundError(f"{str(model_path)!r} was trained with --normalize but its statistics "
                                    f"{str(npath)!r} are missing")
        _check_recorded_sha256(npath, run_cfg)
        normalizer = _load_normalizer(npath, model.observation_space.shape)
    return LoadedPolicy(model=model, algorithm=algo, level=str(level) if level else "", path=model_path,
                        normalizer=normalizer, meta=dict(meta))


@contextlib.contextmanager
def _global_generators_preserved() -> Iterator[None]:
    """Put Python's, numpy's and torch's global generator states back afterwards."""
    import random

    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def scenario_spaces(scenario: ScenarioConfig, level: str) -> tuple[Any, Any, list[str]]:
    """(observation space, action space, observation field names) of the scenario's env at ``level``."""
    import gymnasium as gym

    from specstop_gym.envs._face import observation_fields, observation_space
    from specstop_gym.scenarios import build_simulator

    sim = build_simulator(scenario, batch_size=1)
    n = 2 if level == "token" else scenario.max_draft
    return observation_space(sim), gym.spaces.Discrete(n), observation_fields(sim)


def _describe_space(space: Any) -> str:
    shape = getattr(space, "shape", None)
    if type(space).__name__ == "Box" and shape is not None:
        return f"{shape[0] if len(shape) == 1 else shape} observation floats"
    return str(space)


# ------------------------------------------------------------------------------------ the agent
class SB3Agent(Agent):
    """A trained SB3 policy (see the module docstring)."""

    name: ClassVar[str] = "sb3"

    def __init__(self, path: str | Path, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 deterministic: bool = True) -> None:
        loaded = load_policy(path)
        self._setup(loaded, scenario, n_runs, seed, deterministic)

    @classmethod
    def from_model(cls, model: Any, scenario: ScenarioConfig, n_runs: int = 1, *, algorithm: str, level: str,
                   normalizer: Any = None, seed: int | None = 0, deterministic: bool = True,
                   meta: dict[str, Any] | None = None) -> SB3Agent:
        """Wrap a model in memory (the evaluation callback during training); ``normalizer`` is the
        training ``VecNormalize`` (its statistics are read, not updated)."""
        agent = cls.__new__(cls)
        agent._setup(LoadedPolicy(model=model, algorithm=algorithm, level=level, normalizer=normalizer,
                                  meta=dict(meta or {})), scenario, n_runs, seed, deterministic)
        return agent

    def _setup(self, loaded: LoadedPolicy, scenario: ScenarioConfig, n_runs: int, seed: int | None,
               deterministic: bool) -> None:
        super().__init__(scenario, n_runs=n_runs, seed=seed)
        self.policy = loaded
        self.model = loaded.model
        self.algorithm = loaded.algorithm
        self.deterministic = bool(deterministic)
        _obs_space, act_space, fields = scenario_spaces(scenario, "round")
        level = loaded.level or self._infer_level(act_space)
        if level not in ("round", "token"):
            raise ValueError(f"unknown decision level {level!r} in the model's metadata")
        self.level = level
        self._check_spaces(scenario)
        self._warn_other_scenario(scenario)
        self._obs_fields = fields
        self._conf_idx = fields.index("confidence")
        self._hot = fields.index("position_1")  # the one-hot draft position: position_1..position_K
        self._recurrent = self.algorithm == "RecurrentPPO"
        self._masked = self.algorithm == "MaskablePPO"
        self.reset()

    def _infer_level(self, round_space: Any) -> str:
        n = getattr(self.model.action_space, "n", None)
        if n == 2 and round_space.n != 2:
            return "token"
        if n == round_space.n and n != 2:
            return "round"
        where = f" {str(self.policy.path)!r}" if self.policy.path else ""
        raise ValueError(f"cannot tell the decision level of the model{where} (action space "
                         f"{self.model.action_space}, scenario max_draft {self.max_draft}); use a model "
                         "written by train.py (it records the level)")

    def _warn_other_scenario(self, scenario: ScenarioConfig) -> None:
        """A ``ScenarioMismatchWarning`` when the model was trained on another scenario (by name) or
        with other settings (the fields that differ, from the config train.py stores in the zip;
        ``requests_per_episode``, ``name``, ``description`` and ``sources`` are not compared). The spaces fit
        (checked before), so the model runs; whether it transfers is the user's question."""
        meta = self.policy.meta
        where = f"{str(self.policy.path)!r}" if self.policy.path else "the model"
        trained_name = meta.get("scenario")
        if trained_name and trained_name != scenario.name:
            warnings.warn(f"{where} was trained on scenario {trained_name!r} and is evaluated on {scenario.name!r}",
                          ScenarioMismatchWarning, stacklevel=3)
            return
        trained_cfg = meta.get("scenario_config")
        if not isinstance(trained_cfg, dict):
            return
        now = json.loads(json.dumps(scenario.to_dict()))  # as stored: tuples become lists
        skip = {"name", "description", "sources", "requests_per_episode"}
        diff = [k for k in sorted(set(trained_cfg) | set(now))
                if k not in skip and trained_cfg.get(k) != now.get(k)]
        if diff:
            shown = ", ".join(f"{k} {trained_cfg.get(k)!r} -> {now.get(k)!r}" for k in diff[:6])
            more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
            warnings.warn(f"{where} was trained on scenario {trained_name or scenario.name!r} with other settings "
                          f"than it is evaluated on: {shown}{more}", ScenarioMismatchWarning, stacklevel=3)

    def _check_spaces(self, scenario: ScenarioConfig) -> None:
        obs_space, act_space, fields = scenario_spaces(scenario, self.level)
        m_obs, m_act = self.model.observation_space, self.model.action_space
        same_obs = (type(m_obs).__name__ == "Box" and m_obs.shape == obs_space.shape)
        same_act = type(m_act).__name__ == "Discrete" and int(m_act.n) == int(act_space.n)
        trained_fields = self.policy.meta.get("observation_fields")
        if same_obs and trained_fields and list(trained_fields) != list(fields):
            same_obs = False
        if same_obs and same_act:
            return
        meta = self.policy.meta
        trained = []
        if "max_draft" in meta:
            trained.append(f"max_draft {meta['max_draft']}")
        if "n_states" in meta:
            trained.append(f"{meta['n_states']} channel state(s)")
        trained.append(f"action space {m_act}")
        trained.append(_describe_space(m_obs))
        n_states = len([f for f in fields if f.startswith("csi_")])
        now = [f"max_draft {scenario.max_draft}", f"{n_states} channel state(s)", f"action space {act_space}",
               _describe_space(obs_space)]
        where = f"{str(self.policy.path)!r}" if self.policy.path else "the model"
        trained_on = f" on {meta['scenario']!r}" if meta.get("scenario") else ""
        raise ValueError(f"{where} does not fit scenario {scenario.name!r} at the {self.level} level: trained"
                         f"{trained_on} with {', '.join(trained)}; evaluated with {', '.join(now)}")

    # ------------------------------------------------------------------------- protocol
    def reset(self) -> None:
        super().reset()
        if getattr(self, "_recurrent", False):
            n_layers, _, hidden = self.model.policy.lstm_hidden_state_shape
            self._h = np.zeros((n_layers, self.n_runs, hidden), np.float32)
            self._c = np.zeros((n_layers, self.n_runs, hidden), np.float32)
        self._episode_start = np.ones(self.n_runs, bool)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        obs = self._observation(ctx)
        if self.level == "round":
            masks = np.ones((len(ctx.rows), self.max_draft), bool) if self._masked else None
            return self._predict(obs, ctx.rows, masks) + 1
        if self.scenario.confidence_sigma is not None:
            raise ValueError("a token-level model on a scenario with a confidence signal can only be evaluated at "
                             "the token level (evaluate.py --level token): its decisions depend on the "
                             "confidence of each drafted token")
        # replay the token decisions of a round: only the position changes within a round
        k = np.full(len(ctx.rows), self.max_draft, np.int64)
        pending = np.arange(len(ctx.rows))
        for pos in range(1, self.max_draft + 1):
            if not len(pending):
                break
            o = obs[pending].copy()
            o[:, 0] = pos / self.max_draft
            o[:, self._conf_idx] = 0.0
            o[:, self._hot:self._hot + self.max_draft] = 0.0
            o[:, self._hot + pos - 1] = 1.0
            masks = None
            if self._masked:
                masks = np.ones((len(pending), 2), bool)
                masks[:, 0] = pos < self.max_draft
            stop = (self._predict(o, ctx.rows[pending], masks) == 1) | (pos >= self.max_draft)
            k[pending[stop]] = pos
            pending = pending[~stop]
        return k

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        if self.level == "round":
            first = np.asarray(ctx.position) == 1
            if first.any():
                obs = self._observation(ctx)[first].copy()
                obs[:, 0] = 0.0  # the round-level view: decided before drafting
                obs[:, self._conf_idx] = 0.0
                obs[:, self._hot:self._hot + self.max_draft] = 0.0
                masks = np.ones((int(first.sum()), self.max_draft), bool) if self._masked else None
                self._planned[ctx.rows[first]] = self._predict(obs, ctx.rows[first], masks) + 1
            return np.asarray(ctx.position) >= self._planned[ctx.rows]
        obs = self._observation(ctx)
        masks = None
        if self._masked:
            masks = np.ones((len(ctx.rows), 2), bool)
            masks[:, 0] = np.asarray(ctx.position) < self.max_draft
        return self._predict(obs, ctx.rows, masks) == 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.policy.path) if self.policy.path else None,
                "algorithm": self.algorithm, "level": self.level, "deterministic": self.deterministic,
                "num_timesteps": int(getattr(self.model, "num_timesteps", 0)),
                "normalize": self.policy.normalizer is not None}

    # ------------------------------------------------------------------------- internals
    def _observation(self, ctx: RoundContext) -> np.ndarray:
        if ctx.observation is None:
            raise ValueError("SB3Agent needs ctx.observation (the environment's observation rows); the "
                             "evaluation runner provides it")
        obs = np.asarray(ctx.observation, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != len(self._obs_fields):
            raise ValueError(f"observation rows of shape {obs.shape} do not fit the model "
                             f"({len(self._obs_fields)} entries per row)")
        return obs

    def _predict(self, obs: np.ndarray, rows: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        if self.policy.normalizer is not None:
            obs = self.policy.normalizer.normalize_obs(obs).astype(np.float32)
        deterministic = self.deterministic or self.algorithm == "DQN"
        if deterministic:
            return self._call(obs, rows, masks, True)
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.rng.integers(2**62)))
            return self._call(obs, rows, masks, False)

    def _call(self, obs: np.ndarray, rows: np.ndarray, masks: np.ndarray | None, deterministic: bool) -> np.ndarray:
        if self._recurrent:
            state = (self._h[:, rows], self._c[:, rows])
            actions, (h, c) = self.model.predict(obs, state=state, episode_start=self._episode_start[rows],
                                                 deterministic=deterministic)
            self._h[:, rows], self._c[:, rows] = h, c
            self._episode_start[rows] = False
        elif self._masked:
            actions, _ = self.model.predict(obs, action_masks=masks, deterministic=deterministic)
        else:
            actions, _ = self.model.predict(obs, deterministic=deterministic)
        return np.asarray(actions, dtype=np.int64).reshape(len(rows))
