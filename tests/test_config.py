"""Scenario configuration: validation that names the field, immutability, the presets.

``ScenarioConfig`` is the one typed, validated, immutable record of a scenario; every
bad value must raise :class:`ConfigError` (a ``ValueError``) whose message names the
offending field, whether it comes from ``ScenarioConfig(...)``, ``make_scenario``,
``replace`` or ``gym.make``.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym import oracle
from specstop_gym.core.config import ConfigError, ScenarioConfig, field_names
from specstop_gym.scenarios import (PRESETS, build_acceptance, build_simulator, make_scenario, scenario_names,
                                    stationary_reference)

NAN, INF = float("nan"), float("inf")
TIMES = ["delay_ms", "draft_ms", "verify_base_ms", "verify_per_token_ms", "bytes_per_token", "delay_cv",
         "latent_tau", "latent_eps_sigma", "drift_cv", "time_scale_ms", "jitter_slot_ms"]


def raises_naming(field: str, **overrides):
    """Both ways of building a config reject the overrides with an error naming ``field``."""
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make_scenario("qwen-geometric", **overrides)
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ScenarioConfig(**{**dataclasses.asdict(make_scenario("qwen-geometric")), **overrides})


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("field", TIMES)
@pytest.mark.parametrize("value", [-1.0, NAN, INF, "abc", None])
def test_negative_nan_infinite_or_non_numeric_times_name_the_field(field: str, value) -> None:
    if field == "time_scale_ms" and value is None:  # None: the stationary rho* (issue 12's default)
        assert make_scenario("qwen-geometric", time_scale_ms=None).time_scale_ms is None
        return
    raises_naming(field, **{field: value})


@pytest.mark.parametrize("field", ["time_scale_ms", "jitter_slot_ms", "bandwidth_kbps"])
def test_scales_must_be_positive(field: str) -> None:
    raises_naming(field, **{field: 0.0})


@pytest.mark.parametrize("field,value", [("bandwidth_kbps", -5.0), ("bandwidth_kbps", NAN),
                                         ("reference_ms_per_token", -1.0), ("confidence_sigma", NAN),
                                         ("confidence_sigma", -0.5)])
def test_optional_numbers_are_checked_when_given(field: str, value) -> None:
    raises_naming(field, **{field: value})


def test_a_drafted_token_must_cost_time() -> None:
    raises_naming("draft_ms", draft_ms=0.0, verify_per_token_ms=0.0)


@pytest.mark.parametrize("value", [-0.1, 1.5, NAN, "high"])
def test_alpha_is_a_probability(value) -> None:
    raises_naming("alpha", alpha=value)


@pytest.mark.parametrize("profile,field", [((0.7, 1.2), "profile[1]"), ((-0.1,), "profile[0]"),
                                           ((0.5, NAN, 0.3), "profile[1]"), ((), "profile"), ("0.5", "profile")])
def test_profile_entries_are_probabilities(profile, field: str) -> None:
    raises_naming(field, acceptance="profile", profile=profile)


def test_profile_and_latent_acceptance_need_a_profile() -> None:
    raises_naming("profile", acceptance="profile", profile=None)
    raises_naming("profile", acceptance="latent", profile=None)


@pytest.mark.parametrize("field", ["max_draft", "n_tokens", "requests_per_episode"])
@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True, None])
def test_counts_are_integers_of_at_least_one(field: str, value) -> None:
    raises_naming(field, **{field: value})


def test_integral_floats_are_accepted_as_counts() -> None:
    cfg = make_scenario("qwen-geometric", max_draft=6.0)
    assert cfg.max_draft == 6 and isinstance(cfg.max_draft, int)


@pytest.mark.parametrize("field,value", [("channel", "wifi"), ("acceptance", "poisson"),
                                         ("delay_distribution", "weibull"), ("drift_mode", "cubic"),
                                         ("reward_mode", "tokens")])
def test_choices_name_the_field_and_the_options(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        make_scenario("qwen-geometric", **{field: value})
    assert repr(value) in str(err.value)


def test_gamma_delays_need_a_positive_cv_and_csi_flag_is_boolean() -> None:
    raises_naming("delay_cv", delay_distribution="gamma", delay_cv=0.0)
    raises_naming("csi_observable", csi_observable="yes")


# ------------------------------------------------------------------ names
def test_unknown_scenario_names_it_and_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="no-such-preset") as err:
        make_scenario("no-such-preset")
    for name in scenario_names():
        assert name in str(err.value)
    with pytest.raises(ValueError, match="no-such-preset"):
        gym.make("SpecStop-v0", scenario="no-such-preset")


def test_unknown_override_names_it_and_lists_the_fields() -> None:
    with pytest.raises(ConfigError, match="delay_msec") as err:
        make_scenario("qwen-geometric", delay_msec=100.0)
    assert "delay_ms" in str(err.value)
    with pytest.raises(ConfigError, match="foo, zap"):
        ScenarioConfig().replace(zap=1, foo=2)
    with pytest.raises(ValueError, match="delay_msec"):
        gym.make("SpecStopRound-v0", delay_msec=100.0)
    assert "extra" not in field_names() and "delay_ms" in field_names()


# ------------------------------------------------------------------ channels
MARKOV_OK = dict(channel="markov", markov_generator_per_ms=((-0.01, 0.01), (0.02, -0.02)),
                 markov_rtt_mean_ms=(30.0, 300.0), markov_rtt_cv=(0.2, 0.3))


@pytest.mark.parametrize("change,field", [
    (dict(markov_generator_per_ms=((-0.01, 0.02), (0.02, -0.02))), "row 0 must sum to 0"),
    (dict(markov_generator_per_ms=((0.01, -0.01), (0.02, -0.02))), r"markov_generator_per_ms\[0\]\[1\]"),
    (dict(markov_generator_per_ms=((-0.01, 0.01, 0.0), (0.02, -0.02, 0.0))), "square matrix"),
    (dict(markov_generator_per_ms=((-0.01, NAN), (0.02, -0.02))), r"markov_generator_per_ms\[0\]\[1\]"),
    (dict(markov_generator_per_ms=None), "markov_generator_per_ms"),
    (dict(markov_generator_per_ms="fast"), "markov_generator_per_ms"),
    (dict(markov_rtt_mean_ms=(30.0,)), "markov_rtt_mean_ms must have one value per state"),
    (dict(markov_rtt_mean_ms=(30.0, -1.0)), r"markov_rtt_mean_ms\[1\]"),
    (dict(markov_rtt_cv=(0.2, 0.3, 0.4)), "markov_rtt_cv must have one value per state"),
    (dict(markov_bandwidth_kbps=(1000.0, 0.0)), "markov_bandwidth_kbps"),
])
def test_bad_markov_channel_definitions_name_the_problem(change: dict, field: str) -> None:
    make_scenario("qwen-geometric", **MARKOV_OK)  # the base is valid
    with pytest.raises(ConfigError, match=field):
        make_scenario("qwen-geometric", **{**MARKOV_OK, **change})


DRIFT_OK = dict(channel="drift", drift_schedule=((0.0, 40.0), (1000.0, 400.0)), drift_period_ms=2000.0)


@pytest.mark.parametrize("change,field", [
    (dict(drift_schedule=((0.0, 40.0), (1000.0, 400.0), (500.0, 100.0))), r"drift_schedule\[2\].t_ms goes backwards"),
    (dict(drift_schedule=((10.0, 40.0), (1000.0, 400.0))), "start at t_ms = 0"),
    (dict(drift_schedule=((0.0, 40.0), (1000.0, -4.0))), r"drift_schedule\[1\].mean_rtt_ms"),
    (dict(drift_schedule=((0.0, 40.0), (NAN, 4.0))), r"drift_schedule\[1\].t_ms"),
    (dict(drift_schedule=((0.0, 40.0, 1.0),)), "drift_schedule"),
    (dict(drift_schedule=None), "drift_schedule"),
    (dict(drift_period_ms=1000.0), "drift_period_ms"),
])
def test_bad_drift_schedules_name_the_problem(change: dict, field: str) -> None:
    make_scenario("qwen-geometric", **DRIFT_OK)
    with pytest.raises(ConfigError, match=field):
        make_scenario("qwen-geometric", **{**DRIFT_OK, **change})


def test_trace_channel_and_trace_acceptance_need_their_files() -> None:
    raises_naming("delay_trace", channel="trace", delay_trace=None)
    raises_naming("acceptance_trace", acceptance="trace", acceptance_trace=None)
    cfg = make_scenario("qwen-geometric", channel="trace", delay_trace="/no/such/dir/delays.csv")
    with pytest.raises(ConfigError, match="/no/such/dir/delays.csv"):
        build_simulator(cfg)
    with pytest.raises(ValueError, match="/no/such/dir/delays.csv"):
        gym.make("SpecStop-v0", channel="trace", delay_trace="/no/such/dir/delays.csv")


# ------------------------------------------------------------------ immutability
def test_configs_are_immutable_and_replace_returns_a_validated_copy() -> None:
    cfg = make_scenario("qwen-geometric")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.delay_ms = 10.0  # type: ignore[misc]
    other = cfg.replace(delay_ms=300, max_draft=12)
    assert other is not cfg and other.delay_ms == 300.0 and other.max_draft == 12
    assert cfg.delay_ms == 150.0 and cfg.max_draft == 8
    assert isinstance(other.delay_ms, float)  # coerced by validation
    assert make_scenario("qwen-geometric") == cfg  # presets are rebuilt, never shared state
    with pytest.raises(ConfigError, match="delay_ms"):
        cfg.replace(delay_ms=-1.0)
    assert make_scenario(cfg, alpha=0.6).alpha == 0.6 and cfg.alpha == 0.5  # a config as the base


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", scenario_names())
def test_every_preset_validates_round_trips_and_builds(name: str) -> None:
    cfg = make_scenario(name)
    assert cfg.name == name and cfg.description and cfg.sources
    again = ScenarioConfig(**cfg.to_dict())  # the plain dict re-validates to the same config
    assert again == cfg
    assert cfg.replace() == cfg
    sim = build_simulator(cfg, batch_size=2)
    assert sim.max_draft == cfg.max_draft and sim.n_states == cfg.n_states or cfg.channel == "trace"
    k_star, rho = stationary_reference(cfg)
    assert 1 <= k_star <= cfg.max_draft and math.isfinite(rho) and rho > 0
    assert name in PRESETS


@pytest.mark.parametrize("name,target,tol", [("qwen-geometric", 83.0, 5.0), ("llama-heavy-head", 111.0, 6.0)])
def test_critical_delays_of_the_calibrated_presets(name: str, target: float, tol: float) -> None:
    cfg = make_scenario(name)
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    dc = oracle.critical_delay(survival, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                               verify_per_token_ms=cfg.verify_per_token_ms)
    assert abs(dc - target) <= tol, (name, dc)
    # and it is the k* = 1 -> 2 transition of the stationary oracle
    kw = dict(draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms)
    assert oracle.optimal_draft_length(survival, delay_ms=dc - 1.0, **kw)[0] == 1
    assert oracle.optimal_draft_length(survival, delay_ms=dc + 1.0, **kw)[0] >= 2
    assert np.all(np.diff([oracle.optimal_draft_length(survival, delay_ms=d, **kw)[0]
                           for d in np.linspace(0, 1000, 41)]) >= 0)
