"""Bad input gets a clear error naming the field; presets are calibrated as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specstop_gym import ConfigError, make_scenario, scenario_names
from specstop_gym.oracle import critical_delay
from specstop_gym.scenarios import build_acceptance


@pytest.mark.parametrize("field,value", [
    ("delay_ms", -1.0), ("delay_ms", math.nan), ("draft_ms", -0.5), ("verify_base_ms", math.nan),
    ("verify_per_token_ms", -1), ("delay_cv", math.inf), ("time_scale_ms", 0), ("bandwidth_kbps", 0),
    ("alpha", 1.5), ("alpha", -0.1), ("alpha", math.nan), ("max_draft", 0), ("max_draft", 2.5),
    ("n_tokens", 0), ("requests_per_episode", -3), ("channel", "wifi"), ("acceptance", "magic"),
    ("reward_mode", "speed"), ("confidence_sigma", -1.0), ("csi_observable", "yes"),
])
def test_bad_values_name_the_field(field: str, value) -> None:
    with pytest.raises(ConfigError, match=field):
        make_scenario("qwen-geometric", **{field: value})


def test_profile_entries_are_probabilities() -> None:
    with pytest.raises(ConfigError, match=r"profile\[1\]"):
        make_scenario("llama-heavy-head", profile=(0.7, 1.2))
    with pytest.raises(ConfigError, match="profile"):
        make_scenario("qwen-geometric", acceptance="profile", profile=None)


def test_markov_and_drift_definitions_are_checked() -> None:
    with pytest.raises(ConfigError, match="row 0 must sum to 0"):
        make_scenario("markov-csi", markov_generator_per_ms=((-1.0, 0.5), (0.1, -0.1)))
    with pytest.raises(ConfigError, match=r"markov_generator_per_ms\[0\]\[1\]"):
        make_scenario("markov-csi", markov_generator_per_ms=((0.1, -0.1), (0.1, -0.1)))
    with pytest.raises(ConfigError, match="markov_rtt_mean_ms must have one value per state"):
        make_scenario("markov-csi", markov_rtt_mean_ms=(30.0,))
    with pytest.raises(ConfigError, match=r"drift_schedule\[2\].t_ms goes backwards"):
        make_scenario("drift", drift_schedule=((0.0, 40.0), (900.0, 400.0), (500.0, 100.0)))
    with pytest.raises(ConfigError, match="delay_trace"):
        make_scenario("qwen-geometric", channel="trace")
    with pytest.raises(ConfigError, match="acceptance_trace"):
        make_scenario("qwen-geometric", acceptance="trace")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'fast'.*llama-heavy-head"):
        make_scenario("fast")
    with pytest.raises(ConfigError, match="unknown scenario parameter.*delay.*valid:.*delay_ms"):
        make_scenario("qwen-geometric", delay=3)


def test_missing_trace_file_names_the_file() -> None:
    from specstop_gym.scenarios import build_simulator

    with pytest.raises(ConfigError, match="no_such_file.csv"):
        build_simulator(make_scenario("qwen-geometric", channel="trace", delay_trace="no_such_file.csv"))


def test_configs_are_immutable_and_replace_copies() -> None:
    base = make_scenario("qwen-geometric")
    other = base.replace(delay_ms=400.0)
    assert base.delay_ms == 150.0 and other.delay_ms == 400.0
    with pytest.raises(Exception):
        base.delay_ms = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name", scenario_names())
def test_every_preset_validates_and_names_its_sources(name: str) -> None:
    cfg = make_scenario(name)
    assert cfg.name == name and cfg.sources and cfg.description
    surv = build_acceptance(cfg).survival(cfg.max_draft)
    assert np.all(np.diff(surv) <= 1e-12) and surv[0] <= 1.0


@pytest.mark.parametrize("name,target,tol", [("qwen-geometric", 83.0, 5.0), ("llama-heavy-head", 111.0, 6.0)])
def test_critical_delays_of_the_calibrated_presets(name: str, target: float, tol: float) -> None:
    cfg = make_scenario(name)
    dc = critical_delay(build_acceptance(cfg).survival(cfg.max_draft), draft_ms=cfg.draft_ms,
                        verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms)
    assert abs(dc - target) <= tol, dc
