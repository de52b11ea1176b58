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
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ACCEPTANCE_KINDS = ("geometric", "profile", "latent", "trace")
CHANNEL_KINDS = ("constant", "iid", "markov", "drift", "trace")
DELAY_DISTRIBUTIONS = ("lognormal", "gamma")
DRIFT_MODES = ("step", "linear")
REWARD_MODES = ("token_credit", "latency")
REWARD_REFERENCES = ("local", "stationary")
LOCAL_REFERENCE_CHANNELS = ("markov", "drift")
"""Channels whose mean rtt persists in wall-clock time, where ``reward_reference="local"`` credits
tokens at the local rate; on the others the local reference is the stationary one."""
TRACE_GAP_POLICIES = ("hold", "skip", "refuse")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


# ------------------------------------------------------------------------------------- bounds
@dataclass(frozen=True)
class Bound:
    """The accepted range of a numeric field: ``lo <= value <= hi`` (``lo`` excluded when
    ``lo_open``), in ``unit``, with the reason for the limits (docs/robustness.md)."""

    lo: float
    hi: float
    unit: str
    why: str
    lo_open: bool = False

    def text(self) -> str:
        """``"0 <= x <= 600000 ms"``-style description."""
        lo = f"{_num(self.lo)} < " if self.lo_open else f"{_num(self.lo)} <= "
        unit = f" {self.unit}" if self.unit else ""
        return f"{lo}x <= {_num(self.hi)}{unit}"


def _num(x: float) -> str:
    """Integers in full below 10^10, else the shortest ``%g`` form."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e10 else f"{x:g}"


MAX_DELAY_MS = 600_000.0
"""Largest round-trip delay anywhere (fields, traces, sweeps): 10 minutes."""
MAX_DRAFT = 256
"""Largest draft length K of a scenario."""
MAX_STATES = 32
"""Most channel states (Markov channels, trace state labels)."""
MAX_CV = 10.0
"""Largest coefficient of variation of a lognormal rtt."""
GAMMA_CV_RANGE = (0.01, 3.0)
"""Coefficients of variation a gamma rtt accepts (shape 1/cv^2 in [0.11, 1e4])."""
MAX_DRIFT_POINTS = 10_000
"""Most breakpoints of a drift schedule."""
MAX_TEXT = 2_000
"""Longest free-text field (description, one source), characters."""
MAX_PATH = 4_096
"""Longest file path, characters."""
MAX_BATCH_ROWS = 1 << 20
"""Most rows of one batched simulator (seeds of an evaluation, environments of a vector env)."""

_DELAY = Bound(0.0, MAX_DELAY_MS, "ms", "a round trip beyond 10 minutes is an outage, not a delay; keeps every "
               "round time finite")
_LOGIT_SD = Bound(0.0, 20.0, "", "logit-scale noise: beyond 20 the sigmoid is 0 or 1 in float64 anyway")
_KBPS = Bound(1.0, 1e9, "kbit/s", "1 kbit/s (a degraded satellite link) to 1 Tbit/s; keeps transmission "
              "times finite")
BOUNDS: dict[str, Bound] = {
    "draft_ms": Bound(0.0, 10_000.0, "ms", "edge drafters run at 5-100 ms/token; 10 s leaves two orders of "
                      "magnitude"),
    "verify_base_ms": Bound(0.0, 60_000.0, "ms", "a verification pass of one minute is far beyond any served "
                            "model"),
    "verify_per_token_ms": Bound(0.0, 10_000.0, "ms", "as draft_ms"),
    "bytes_per_token": Bound(0.0, 1e7, "bytes", "even full-vocabulary fp32 logits are < 1 MB per token"),
    "bandwidth_kbps": _KBPS,
    "max_draft": Bound(1, MAX_DRAFT, "tokens", "published drafters speculate at most a few dozen tokens; "
                       "per-position arrays stay small"),
    "n_tokens": Bound(1, 2**31 - 1, "tokens", "real outputs stay below ~128k tokens; larger values stand for an "
                      "unbounded request (the stationary regime), up to the int32 range"),
    "requests_per_episode": Bound(1, 100_000, "requests", "a long serving session; with n_tokens it bounds "
                                  "what one episode may ask for"),
    "alpha": Bound(0.0, 1.0, "", "a probability"),
    "profile": Bound(0.0, 1.0, "", f"probabilities, at most {MAX_DRAFT} of them"),
    "latent_tau": _LOGIT_SD,
    "latent_eps_sigma": _LOGIT_SD,
    "confidence_sigma": _LOGIT_SD,
    "alt_profile": Bound(0.0, 1.0, "", f"probabilities, at most {MAX_DRAFT} of them"),
    "acceptance_switch_ms": Bound(0.0, 1e10, "ms", "a regime longer than 0 ms, at most ~4 months "
                                  "(as drift times)", lo_open=True),
    "delay_ms": _DELAY,
    "delay_cv": Bound(0.0, MAX_CV, "", "lognormal sd sqrt(log1p(cv^2)) stays small enough for finite "
                      f"draws; gamma needs {GAMMA_CV_RANGE[0]} <= cv <= {GAMMA_CV_RANGE[1]} (accurate "
                      "quantile)"),
    "markov_generator_per_ms": Bound(0.0, 0.1, "1/ms", "off-diagonal rates: a state lasts 10 ms or more on "
                                     f"average (each simulated transition costs time); at most {MAX_STATES} "
                                     "states"),
    "markov_rtt_mean_ms": _DELAY,
    "markov_rtt_cv": Bound(0.0, MAX_CV, "", "as delay_cv (lognormal)"),
    "markov_bandwidth_kbps": _KBPS,
    "drift_schedule": Bound(0.0, 1e10, "ms", f"breakpoint times up to ~4 months (mean rtts as delay_ms); "
                            f"at most {MAX_DRIFT_POINTS} breakpoints"),
    "drift_period_ms": Bound(0.0, 1e10, "ms", "as the breakpoint times", lo_open=True),
    "drift_cv": Bound(0.0, MAX_CV, "", "as delay_cv (lognormal)"),
    "delay_trace_gap_factor": Bound(1.0, 1e6, "median intervals", "a gap is longer than this many median "
                                    "sampling intervals of the trace: more than one, finite", lo_open=True),
    "jitter_slot_ms": Bound(0.01, 60_000.0, "ms", "keeps the jitter's wall-clock index (time / slot) far "
                            "inside 64 bits; a slot of a minute is already coarser than any channel's jitter"),
    "time_scale_ms": Bound(1e-3, 1e9, "ms", "reward = -step_ms / time_scale_ms stays finite and away from "
                           "float64 underflow"),
    "reference_ms_per_token": Bound(0.0, 1e7, "ms", "a rate no round time exceeds"),
}
"""The accepted range of every numeric ScenarioConfig field (tuple fields: of each entry).
Text fields: ``name`` 1-100 characters of ``A-Z a-z 0-9 . _ + -`` not starting with ``.`` (it
names output folders); ``description`` and each of at most 64 ``sources`` up to
:data:`MAX_TEXT` characters; trace paths up to :data:`MAX_PATH`."""

_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}")


def _number(name: str, value: Any, bound: Bound | None = None) -> float:
    """A finite float within ``bound`` (the field's entry of :data:`BOUNDS` by default)."""
    bound = bound or BOUNDS[name.split("[")[0].split(".")[0]]
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)) and not value.strip():
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number, got {_short(value)}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number ({bound.text()}), got {_short(value)}")
    if v < bound.lo or (bound.lo_open and v == bound.lo) or v > bound.hi:
        raise ConfigError(f"{name} must be in the range {bound.text()} ({bound.why}), got {_short(value)}")
    return v


def _finite_nonneg(name: str, value: Any) -> float:
    return _number(name, value)


def _probability(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a probability in [0, 1], got {_short(value)}") from None
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ConfigError(f"{name} must be a probability in [0, 1], got {_short(value)}")
    return v


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    bound = BOUNDS[name]
    ok = (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(float(value)) and float(value) == int(value))
    if not ok or int(value) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {_short(value)}")
    if int(value) > bound.hi:
        raise ConfigError(f"{name} must be an integer in {int(bound.lo)}..{int(bound.hi)} ({bound.why}), "
                          f"got {_short(value)}")
    return int(value)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {_short(value)}")
    return str(value)


def _sequence(name: str, value: Any, max_len: int) -> tuple[Any, ...]:
    """A list/tuple (or 1-D array) of at most ``max_len`` entries, as a tuple."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a sequence, got {_short(value)}")
    if len(value) > max_len:
        raise ConfigError(f"{name} has {len(value)} entries; at most {max_len} are allowed")
    return tuple(value)


def _text(name: str, value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {_short(value)}")
    if len(value) > max_len or "\x00" in value:
        raise ConfigError(f"{name} must be a string of at most {max_len} characters without NUL bytes")
    return value


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (huge inputs stay out of error messages)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "...(cut)"


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
    acceptance_switch_ms: float | None = None
    """``geometric``/``profile`` only: every this many ms of episode time the acceptance switches between
    the profile (alpha) and ``alt_profile`` (starting with the profile); None: no switch."""
    alt_profile: tuple[float, ...] | None = None
    """Conditional acceptance a_1, a_2, ... of the alternative regime (with ``acceptance_switch_ms``);
    extended with its last value like ``profile``."""

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
    delay_trace_gaps: str = "hold"
    """Measurement gaps of the delay trace: hold (the last sample is held across them), skip (removed
    from the replay timeline) or refuse (an error); see specstop_gym.traces.gaps."""
    delay_trace_gap_factor: float = 10.0
    """A gap is an interval longer than this many median sampling intervals of the delay trace (> 1)."""
    csi_observable: bool = False
    """Whether the agent observes the channel state (CSI)."""
    jitter_slot_ms: float = 1.0
    """Resolution of the wall-clock index of rtt jitter (common random numbers), ms."""

    # --- reward (docs/training.md, "The reward") ---
    reward_mode: str = "token_credit"
    """token_credit: reward = (tokens * reference - step_ms) / time_scale: committed tokens are
    credited at the reference rate (ms/token), the step's time is charged; latency: reward =
    -step_ms / time_scale (the return is minus the episode's time)."""
    reward_reference: str = "local"
    """Reference rate of token_credit. stationary: rho*, the least per-token latency of a fixed draft
    length at the channel's long-run mean rtt (SPEC 4); local: rho* at the channel's mean rtt when
    the round is sent (drift: the schedule's level; markov: the state's mean rtt and bandwidth),
    which equals the stationary one on constant, iid and trace channels."""
    reference_ms_per_token: float | None = None
    """A fixed reference rate for token_credit, ms/token (None: set by reward_reference)."""
    time_scale_ms: float | None = None
    """Reward scale, ms per unit of reward (None: the stationary rho*, so rewards count tokens)."""

    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Free-form metadata (not used by the simulator)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"name must be 1-100 characters of A-Z a-z 0-9 . _ + - not starting with '.' "
                              f"(it names output folders), got {_short(self.name)}")
        _text("description", self.description, MAX_TEXT)
        set_(self, "sources", tuple(_text(f"sources[{i}]", s, MAX_TEXT)
                                    for i, s in enumerate(_sequence("sources", self.sources, 64))))
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra must be a dict, got {_short(self.extra)}")
        for name in ("draft_ms", "verify_base_ms", "verify_per_token_ms", "bytes_per_token",
                     "delay_ms", "delay_cv", "latent_tau", "latent_eps_sigma", "drift_cv",
                     "jitter_slot_ms"):
            set_(self, name, _number(name, getattr(self, name)))
        if self.draft_ms + self.verify_per_token_ms <= 0:
            raise ConfigError("draft_ms + verify_per_token_ms must be > 0 (a drafted token must cost time)")
        for name in ("bandwidth_kbps", "reference_ms_per_token", "time_scale_ms", "confidence_sigma",
                     "drift_period_ms"):
            if getattr(self, name) is not None:
                set_(self, name, _number(name, getattr(self, name)))
        for name in ("max_draft", "n_tokens", "requests_per_episode"):
            set_(self, name, _positive_int(name, getattr(self, name)))
        _choice("acceptance", self.acceptance, ACCEPTANCE_KINDS)
        _choice("channel", self.channel, CHANNEL_KINDS)
        _choice("delay_distribution", self.delay_distribution, DELAY_DISTRIBUTIONS)
        _choice("drift_mode", self.drift_mode, DRIFT_MODES)
        _choice("reward_mode", self.reward_mode, REWARD_MODES)
        _choice("delay_trace_gaps", self.delay_trace_gaps, TRACE_GAP_POLICIES)
        set_(self, "delay_trace_gap_factor", _number("delay_trace_gap_factor", self.delay_trace_gap_factor))
        _choice("reward_reference", self.reward_reference, REWARD_REFERENCES)
        set_(self, "alpha", _probability("alpha", self.alpha))
        if self.profile is not None:
            if isinstance(self.profile, (str, bytes)) or not isinstance(self.profile, (list, tuple, np.ndarray)):
                raise ConfigError(f"profile must be a non-empty sequence of probabilities, got {_short(self.profile)}")
            prof = _sequence("profile", self.profile, MAX_DRAFT)
            if not prof:
                raise ConfigError(f"profile must be a non-empty sequence of probabilities, got {_short(self.profile)}")
            set_(self, "profile", tuple(_probability(f"profile[{i}]", a) for i, a in enumerate(prof)))
        if self.acceptance in ("profile", "latent") and self.profile is None:
            raise ConfigError(f"acceptance={self.acceptance!r} needs profile (a_1, a_2, ...)")
        for name in ("acceptance_trace", "delay_trace"):
            if getattr(self, name) is not None:
                _text(name, getattr(self, name), MAX_PATH)
        if self.acceptance == "trace" and not self.acceptance_trace:
            raise ConfigError("acceptance='trace' needs acceptance_trace (path to a .jsonl acceptance trace)")
        if self.alt_profile is not None:
            if isinstance(self.alt_profile, (str, bytes)) or not isinstance(self.alt_profile, (list, tuple, np.ndarray)):
                raise ConfigError(f"alt_profile must be a non-empty sequence of probabilities, got "
                                  f"{_short(self.alt_profile)}")
            alt = _sequence("alt_profile", self.alt_profile, MAX_DRAFT)
            if not alt:
                raise ConfigError(f"alt_profile must be a non-empty sequence of probabilities, got "
                                  f"{_short(self.alt_profile)}")
            set_(self, "alt_profile", tuple(_probability(f"alt_profile[{i}]", a) for i, a in enumerate(alt)))
        if self.acceptance_switch_ms is not None:
            set_(self, "acceptance_switch_ms", _number("acceptance_switch_ms", self.acceptance_switch_ms))
            if self.acceptance not in ("geometric", "profile"):
                raise ConfigError("acceptance_switch_ms needs acceptance='geometric' or 'profile', "
                                  f"got {self.acceptance!r}")
            if self.alt_profile is None:
                raise ConfigError("acceptance_switch_ms needs alt_profile (the other regime's a_1, a_2, ...)")
        for name in ("csi_observable", "delay_trace_offset"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be true or false, got {_short(getattr(self, name))}")
            set_(self, name, bool(getattr(self, name)))
        if self.delay_distribution == "gamma" and self.channel == "iid":
            lo, hi = GAMMA_CV_RANGE
            if not lo <= self.delay_cv <= hi:
                raise ConfigError(f"delay_cv must be in [{lo}, {hi}] for a gamma delay distribution (its "
                                  f"quantile is exact there), got {self.delay_cv!r}")
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
            rows = tuple(tuple(float(x) for x in _sequence("markov_generator_per_ms", row, MAX_STATES))
                         for row in _sequence("markov_generator_per_ms", q, MAX_STATES))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"markov_generator_per_ms must be a square matrix of numbers (at most {MAX_STATES} "
                              f"states), got {_short(q)}") from None
        m = len(rows)
        if m < 1 or any(len(r) != m for r in rows):
            raise ConfigError(f"markov_generator_per_ms must be a square matrix, got {_short(q)}")
        rate = BOUNDS["markov_generator_per_ms"]
        for i, r in enumerate(rows):
            for j, x in enumerate(r):
                if not math.isfinite(x) or (i != j and x < 0):
                    raise ConfigError(f"markov_generator_per_ms[{i}][{j}] must be a finite rate >= 0, got {x!r}")
            if abs(sum(r)) > 1e-9 * max(1.0, max(abs(x) for x in r)):
                raise ConfigError(f"markov_generator_per_ms row {i} must sum to 0, sums to {sum(r)!r}")
            for j, x in enumerate(r):
                if i != j and x > rate.hi:
                    raise ConfigError(f"markov_generator_per_ms[{i}][{j}] must be in the range {rate.text()} "
                                      f"({rate.why}), got {x!r}")
        set_(self, "markov_generator_per_ms", rows)
        means = tuple(_number(f"markov_rtt_mean_ms[{i}]", v)
                      for i, v in enumerate(_sequence("markov_rtt_mean_ms", self.markov_rtt_mean_ms, MAX_STATES)))
        if len(means) != m:
            raise ConfigError(f"markov_rtt_mean_ms must have one value per state ({m}), got {len(means)}")
        set_(self, "markov_rtt_mean_ms", means)
        cvs = self.markov_rtt_cv if self.markov_rtt_cv is not None else (0.0,) * m
        cvs = tuple(_number(f"markov_rtt_cv[{i}]", v) for i, v in enumerate(_sequence("markov_rtt_cv", cvs, MAX_STATES)))
        if len(cvs) != m:
            raise ConfigError(f"markov_rtt_cv must have one value per state ({m}), got {len(cvs)}")
        set_(self, "markov_rtt_cv", cvs)
        if self.markov_bandwidth_kbps is not None:
            raw = _sequence("markov_bandwidth_kbps", self.markov_bandwidth_kbps, MAX_STATES)
            if len(raw) != m:
                raise ConfigError(f"markov_bandwidth_kbps must have one value > 0 per state ({m})")
            bw = tuple(_number(f"markov_bandwidth_kbps[{i}]", v) for i, v in enumerate(raw))
            set_(self, "markov_bandwidth_kbps", bw)

    def _validate_drift(self) -> None:
        sched = self.drift_schedule
        if sched is None or (isinstance(sched, (list, tuple)) and not sched):
            raise ConfigError("channel='drift' needs drift_schedule ((t_ms, mean_rtt_ms), ...)")
        try:
            pts = tuple((float(t), float(d)) for t, d in _sequence("drift_schedule", sched, MAX_DRIFT_POINTS))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"drift_schedule must be (t_ms, mean_rtt_ms) pairs, got {_short(sched)}") from None
        for i, (t, d) in enumerate(pts):
            _number(f"drift_schedule[{i}].t_ms", t)
            if _number(f"drift_schedule[{i}].mean_rtt_ms", d, _DELAY) == 0 and self.drift_cv > 0:
                raise ConfigError(f"drift_schedule[{i}].mean_rtt_ms must be > 0 with jitter")
            if i and t < pts[i - 1][0]:
                raise ConfigError(f"drift_schedule[{i}].t_ms goes backwards ({t} < {pts[i - 1][0]})")
        if pts[0][0] != 0.0:
            raise ConfigError("drift_schedule must start at t_ms = 0")
        object.__setattr__(self, "drift_schedule", pts)
        if self.drift_period_ms is not None and self.drift_period_ms <= pts[-1][0]:
            raise ConfigError("drift_period_ms must be larger than the last drift_schedule time")

    # ----------------------------------------------------------------- helpers
    @property
    def n_states(self) -> int:
        """Number of channel states (1 unless the channel is Markov or the trace has states)."""
        if self.channel == "markov":
            assert self.markov_generator_per_ms is not None
            return len(self.markov_generator_per_ms)
        return 1

    @property
    def local_reward_reference(self) -> bool:
        """Whether the reward credits each round's tokens at the local rate (token_credit with
        reward_reference="local" on a drift or Markov channel, no fixed reference_ms_per_token)."""
        return (self.reward_mode == "token_credit" and self.reward_reference == "local"
                and self.reference_ms_per_token is None and self.channel in LOCAL_REFERENCE_CHANNELS)

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


def bounds_markdown() -> str:
    """The table of :data:`BOUNDS` in docs/robustness.md (a test checks that it is current)."""
    lines = ["| field | accepted range | unit | why |", "|---|---|---|---|"]
    for name, b in BOUNDS.items():
        lo = "(" if b.lo_open else "["
        lines.append(f"| `{name}` | {lo}{_num(b.lo)}, {_num(b.hi)}] | {b.unit or '-'} | {b.why} |")
    return "\n".join(lines) + "\n"
