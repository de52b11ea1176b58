"""Typed, validated, immutable configuration of a simulated scenario.

One flat frozen dataclass, :class:`ScenarioConfig`, holds every parameter of the
model of SPEC.md (latency, request, acceptance, channel, confidence signal,
reward). Flat so that every field can be overridden the same way from
``gym.make(id, scenario=..., **overrides)``, from ``make_scenario`` and from the
command line (``--set field=value``). Validation happens in ``__post_init__``;
errors are :class:`ConfigError` (a ``ValueError``) naming the field.

Units: all times in milliseconds (``_ms``), bandwidth in kbit/s (``_kbps``),
payload in bytes per drafted token.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

ACCEPTANCE_KINDS = ("geometric", "profile", "latent", "trace")
CHANNEL_KINDS = ("constant", "iid", "markov", "drift", "trace")
DELAY_DISTRIBUTIONS = ("lognormal", "gamma")
DRIFT_MODES = ("step", "linear")
REWARD_MODES = ("latency", "token_credit")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _finite_nonneg(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v) or math.isinf(v) or v < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _probability(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return v


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class ScenarioConfig:
    """Every parameter of a simulated scenario (see docs/model.md and SPEC.md).

    Latency (SPEC 1): ``T(k) = k*draft_ms + rtt + verify_base_ms + k*verify_per_token_ms
    + k*bytes_per_token*8/bandwidth_kbps``.
    """

    name: str = "custom"
    """Scenario name (presets set it; free text otherwise)."""
    description: str = ""
    """One-line description, shown in docs and results."""
    sources: tuple[str, ...] = ()
    """Where the numbers come from (see docs/scenarios.md)."""

    # --- latency model (SPEC 1) ---
    draft_ms: float = 20.0
    """Edge draft time per token, ms."""
    verify_base_ms: float = 16.0
    """Cloud verification fixed cost per round, ms."""
    verify_per_token_ms: float = 0.11
    """Cloud verification cost per drafted token, ms."""
    bytes_per_token: float = 0.0
    """Uplink payload per drafted token, bytes (0: no transmission time)."""
    bandwidth_kbps: float | None = None
    """Uplink bandwidth, kbit/s, for non-Markov channels (None: no transmission time)."""

    # --- request ---
    max_draft: int = 8
    """Largest draft length K (tokens)."""
    n_tokens: int = 256
    """Output tokens per request."""
    requests_per_episode: int = 1
    """Requests per episode, served back to back in continuous wall-clock time."""

    # --- acceptance (SPEC 2) ---
    acceptance: str = "geometric"
    """One of geometric, profile, latent, trace."""
    alpha: float = 0.5
    """Per-token acceptance for ``geometric``."""
    profile: tuple[float, ...] | None = None
    """Conditional acceptance a_1, a_2, ... for ``profile`` and ``latent`` (base); a profile
    shorter than max_draft is extended with its last value."""
    latent_tau: float = 0.5
    """Std of the per-round difficulty z (logit scale) for ``latent``."""
    latent_eps_sigma: float = 0.0
    """Std of the per-token logit noise for ``latent``."""
    acceptance_trace: str | None = None
    """Acceptance trace (.jsonl) replayed by ``trace`` acceptance."""
    confidence_sigma: float | None = None
    """Std of the confidence signal's logit noise; None: the scenario has no signal."""

    # --- channel (SPEC 3) ---
    channel: str = "iid"
    """One of constant, iid, markov, drift, trace."""
    delay_ms: float = 150.0
    """rtt for ``constant``; mean rtt for ``iid``."""
    delay_cv: float = 0.2
    """Coefficient of variation of the rtt for ``iid``."""
    delay_distribution: str = "lognormal"
    """lognormal or gamma, for ``iid``."""
    markov_generator_per_ms: tuple[tuple[float, ...], ...] | None = None
    """Continuous-time generator Q (rates per ms; rows sum to 0) for ``markov``."""
    markov_rtt_mean_ms: tuple[float, ...] | None = None
    """Per-state mean rtt, ms, for ``markov``."""
    markov_rtt_cv: tuple[float, ...] | None = None
    """Per-state rtt coefficient of variation (lognormal) for ``markov``."""
    markov_bandwidth_kbps: tuple[float, ...] | None = None
    """Per-state uplink bandwidth, kbit/s, for ``markov`` (None: no transmission time)."""
    drift_schedule: tuple[tuple[float, float], ...] | None = None
    """(t_ms, mean_rtt_ms) breakpoints for ``drift``; the schedule loops with period drift_period_ms."""
    drift_mode: str = "step"
    """step (hold each level) or linear (ramps between breakpoints) for ``drift``."""
    drift_period_ms: float | None = None
    """Loop period of the drift schedule, ms (None: hold the last level forever)."""
    drift_cv: float = 0.1
    """Lognormal jitter (coefficient of variation) around the drift mean."""
    delay_trace: str | None = None
    """Delay trace (CSV t_ms,rtt_ms) replayed by ``trace``, looped, from a seeded offset."""
    delay_trace_offset: bool = True
    """Start each episode at a seeded random offset into the delay trace (else at 0)."""
    csi_observable: bool = False
    """Whether the agent observes the channel state (CSI)."""
    jitter_slot_ms: float = 1.0
    """Resolution of the wall-clock index of rtt jitter (common random numbers), ms."""

    # --- reward ---
    reward_mode: str = "latency"
    """latency: reward = -step_ms/time_scale_ms; token_credit: (tokens*reference_ms - step_ms)/time_scale_ms."""
    time_scale_ms: float = 1000.0
    """Reward scale: one unit of reward per time_scale_ms."""
    reference_ms_per_token: float | None = None
    """Reference rate for token_credit (None: the stationary oracle rho* at the mean delay)."""

    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Free-form metadata (not used by the simulator)."""

    def __post_init__(self) -> None:  # noqa: C901 - one check per field, kept flat on purpose
        set_ = object.__setattr__
        for name in ("draft_ms", "verify_base_ms", "verify_per_token_ms", "bytes_per_token",
                     "delay_ms", "delay_cv", "latent_tau", "latent_eps_sigma", "drift_cv"):
            set_(self, name, _finite_nonneg(name, getattr(self, name)))
        if self.draft_ms + self.verify_per_token_ms <= 0:
            raise ConfigError("draft_ms + verify_per_token_ms must be > 0 (a drafted token must cost time)")
        for name in ("time_scale_ms", "jitter_slot_ms"):
            v = _finite_nonneg(name, getattr(self, name))
            if v == 0:
                raise ConfigError(f"{name} must be > 0, got {v!r}")
            set_(self, name, v)
        if self.bandwidth_kbps is not None:
            v = _finite_nonneg("bandwidth_kbps", self.bandwidth_kbps)
            if v == 0:
                raise ConfigError("bandwidth_kbps must be > 0 (or None for no transmission time)")
            set_(self, "bandwidth_kbps", v)
        if self.reference_ms_per_token is not None:
            set_(self, "reference_ms_per_token", _finite_nonneg("reference_ms_per_token", self.reference_ms_per_token))
        set_(self, "max_draft", _positive_int("max_draft", self.max_draft))
        set_(self, "n_tokens", _positive_int("n_tokens", self.n_tokens))
        set_(self, "requests_per_episode", _positive_int("requests_per_episode", self.requests_per_episode))
        _choice("acceptance", self.acceptance, ACCEPTANCE_KINDS)
        _choice("channel", self.channel, CHANNEL_KINDS)
        _choice("delay_distribution", self.delay_distribution, DELAY_DISTRIBUTIONS)
        _choice("drift_mode", self.drift_mode, DRIFT_MODES)
        _choice("reward_mode", self.reward_mode, REWARD_MODES)
        set_(self, "alpha", _probability("alpha", self.alpha))
        if self.profile is not None:
            prof = tuple(self.profile) if not isinstance(self.profile, (str, bytes)) else None
            if not prof:
                raise ConfigError(f"profile must be a non-empty sequence of probabilities, got {self.profile!r}")
            set_(self, "profile", tuple(_probability(f"profile[{i}]", a) for i, a in enumerate(prof)))
        if self.acceptance in ("profile", "latent") and self.profile is None:
            raise ConfigError(f"acceptance={self.acceptance!r} needs profile (a_1, a_2, ...)")
        if self.acceptance == "trace" and not self.acceptance_trace:
            raise ConfigError("acceptance='trace' needs acceptance_trace (path to a .jsonl acceptance trace)")
        if self.confidence_sigma is not None:
            set_(self, "confidence_sigma", _finite_nonneg("confidence_sigma", self.confidence_sigma))
        if not isinstance(self.csi_observable, bool):
            raise ConfigError(f"csi_observable must be true or false, got {self.csi_observable!r}")
        if self.delay_distribution == "gamma" and self.channel == "iid" and self.delay_cv == 0:
            raise ConfigError("delay_cv must be > 0 for a gamma delay distribution")
        if self.channel == "markov":
            self._validate_markov()
        if self.channel == "drift":
            self._validate_drift()
        if self.channel == "trace" and not self.delay_trace:
            raise ConfigError("channel='trace' needs delay_trace (path to a t_ms,rtt_ms CSV)")

    def _validate_markov(self) -> None:
        set_ = object.__setattr__
        q = self.markov_generator_per_ms
        if q is None or self.markov_rtt_mean_ms is None:
            raise ConfigError("channel='markov' needs markov_generator_per_ms and markov_rtt_mean_ms")
        try:
            rows = tuple(tuple(float(x) for x in row) for row in q)
        except (TypeError, ValueError):
            raise ConfigError(f"markov_generator_per_ms must be a square matrix of numbers, got {q!r}") from None
        m = len(rows)
        if m < 1 or any(len(r) != m for r in rows):
            raise ConfigError(f"markov_generator_per_ms must be a square matrix, got {q!r}")
        for i, r in enumerate(rows):
            for j, x in enumerate(r):
                if not math.isfinite(x) or (i != j and x < 0):
                    raise ConfigError(f"markov_generator_per_ms[{i}][{j}] must be a finite rate >= 0, got {x!r}")
            if abs(sum(r)) > 1e-9 * max(1.0, max(abs(x) for x in r)):
                raise ConfigError(f"markov_generator_per_ms row {i} must sum to 0, sums to {sum(r)!r}")
        set_(self, "markov_generator_per_ms", rows)
        means = tuple(_finite_nonneg(f"markov_rtt_mean_ms[{i}]", v) for i, v in enumerate(self.markov_rtt_mean_ms))
        if len(means) != m:
            raise ConfigError(f"markov_rtt_mean_ms must have one value per state ({m}), got {len(means)}")
        set_(self, "markov_rtt_mean_ms", means)
        cvs = self.markov_rtt_cv if self.markov_rtt_cv is not None else (0.0,) * m
        cvs = tuple(_finite_nonneg(f"markov_rtt_cv[{i}]", v) for i, v in enumerate(cvs))
        if len(cvs) != m:
            raise ConfigError(f"markov_rtt_cv must have one value per state ({m}), got {len(cvs)}")
        set_(self, "markov_rtt_cv", cvs)
        if self.markov_bandwidth_kbps is not None:
            bw = tuple(_finite_nonneg(f"markov_bandwidth_kbps[{i}]", v) for i, v in enumerate(self.markov_bandwidth_kbps))
            if len(bw) != m or any(b == 0 for b in bw):
                raise ConfigError(f"markov_bandwidth_kbps must have one value > 0 per state ({m})")
            set_(self, "markov_bandwidth_kbps", bw)

    def _validate_drift(self) -> None:
        sched = self.drift_schedule
        if not sched:
            raise ConfigError("channel='drift' needs drift_schedule ((t_ms, mean_rtt_ms), ...)")
        try:
            pts = tuple((float(t), float(d)) for t, d in sched)
        except (TypeError, ValueError):
            raise ConfigError(f"drift_schedule must be (t_ms, mean_rtt_ms) pairs, got {sched!r}") from None
        for i, (t, d) in enumerate(pts):
            _finite_nonneg(f"drift_schedule[{i}].t_ms", t)
            if _finite_nonneg(f"drift_schedule[{i}].mean_rtt_ms", d) == 0 and self.drift_cv > 0:
                raise ConfigError(f"drift_schedule[{i}].mean_rtt_ms must be > 0 with jitter")
            if i and t < pts[i - 1][0]:
                raise ConfigError(f"drift_schedule[{i}].t_ms goes backwards ({t} < {pts[i - 1][0]})")
        if pts[0][0] != 0.0:
            raise ConfigError("drift_schedule must start at t_ms = 0")
        object.__setattr__(self, "drift_schedule", pts)
        if self.drift_period_ms is not None:
            p = _finite_nonneg("drift_period_ms", self.drift_period_ms)
            if p <= pts[-1][0]:
                raise ConfigError("drift_period_ms must be larger than the last drift_schedule time")
            object.__setattr__(self, "drift_period_ms", p)

    # ----------------------------------------------------------------- helpers
    @property
    def n_states(self) -> int:
        """Number of channel states (1 unless the channel is Markov or the trace has states)."""
        if self.channel == "markov":
            assert self.markov_generator_per_ms is not None
            return len(self.markov_generator_per_ms)
        return 1

    @property
    def marginal_cost_ms(self) -> float:
        """c: time of one more drafted token, ms (draft + verify per token + tx at bandwidth_kbps)."""
        tx = 0.0
        if self.bandwidth_kbps is not None:
            tx = self.bytes_per_token * 8.0 / self.bandwidth_kbps
        return self.draft_ms + self.verify_per_token_ms + tx

    def replace(self, **overrides: Any) -> "ScenarioConfig":
        """A copy with fields overridden; unknown fields raise ConfigError listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ConfigError(
                f"unknown scenario parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid - {'extra'}))}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict of all fields."""
        d = dataclasses.asdict(self)
        return d


def field_names() -> list[str]:
    """Names of all overridable ScenarioConfig fields."""
    return [f.name for f in dataclasses.fields(ScenarioConfig) if f.name != "extra"]
