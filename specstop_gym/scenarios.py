"""Named scenario presets with provenance, and the builder from a config to a simulator.

``make_scenario(name, **overrides)`` returns a validated :class:`ScenarioConfig`;
``build_simulator(config, batch_size)`` turns it into the batched core. Every
preset field can be overridden (``gym.make(id, scenario=..., **overrides)``,
``--set field=value`` on the command line). See docs/scenarios.md for the
numbers and their sources; the reference paper's own parameters are not public
(only its abstract is), so the presets are calibrated to its reported critical
delays with public hardware and acceptance figures (docs/calibration.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from .core.acceptance import (AcceptanceProcess, LatentDifficultyAcceptance, ProfileAcceptance,
                              SwitchingProfileAcceptance, TraceAcceptance, geometric)
from .core.channel import Channel, DriftChannel, IIDChannel, MarkovChannel, TraceChannel
from .core.config import ConfigError, ScenarioConfig
from .core.simulator import Simulator

# --- shared calibration (docs/calibration.md) -------------------------------------------------
_VERIFY = dict(verify_base_ms=16.0, verify_per_token_ms=0.11)
_SRC_VERIFY = ("verification 16 ms + 0.11 ms/token: linear fit of llama.cpp PR 15131 (RTX 4090, "
               "Llama 8B, k = 2..9), close to llama.cpp PR 14262 on an RTX 3090")
_SRC_QWEN_DRAFT = "draft 20 ms/token: Qwen2.5 0.5B on Jetson Orin Nano Super, ~50 tok/s (community speed tests)"
_SRC_LLAMA_DRAFT = ("draft 16.4 ms/token: Llama 3.2 1B on Jetson Orin Nano Super, ~62 tok/s "
                    "(community speed tests), so c = 16.51 ms")
_SRC_PAPER = "critical delays 83 ms / 111 ms: arXiv 2606.20591 (abstract); its own parameters are not public"

_MARKOV_CSI_Q = ((-1.0 / 30000.0, 1.0 / 30000.0), (1.0 / 10000.0, -1.0 / 10000.0))


def _qwen_geometric() -> ScenarioConfig:
    return ScenarioConfig(
        name="qwen-geometric",
        description="Qwen-like pair: geometric acceptance alpha = 0.5, i.i.d. lognormal rtt (mean 150 ms, cv 0.2)",
        sources=(_SRC_QWEN_DRAFT, _SRC_VERIFY, _SRC_PAPER,
                 "alpha = 0.5 puts the critical delay at 84.6 ms (docs/calibration.md, derived); modest "
                 "acceptance of small cross-size Qwen pairs: SVIP, arXiv 2411.18462"),
        draft_ms=20.0, **_VERIFY, acceptance="geometric", alpha=0.5,
        channel="iid", delay_ms=150.0, delay_cv=0.2, max_draft=8, n_tokens=256,
    )


def _llama_heavy_head() -> ScenarioConfig:
    return ScenarioConfig(
        name="llama-heavy-head",
        description=("Llama-like pair: heavy-head profile a_1 = 0.70, a_i = 0.28 (i >= 2), "
                     "i.i.d. lognormal rtt (mean 150 ms, cv 0.2)"),
        sources=(_SRC_LLAMA_DRAFT, _SRC_VERIFY, _SRC_PAPER,
                 "heavy head a_1 = 0.70, a_i = 0.28 puts the critical delay at 110.7 ms "
                 "(docs/calibration.md, derived); first-position excess: EAGLE arXiv 2401.15077 Table 2"),
        draft_ms=16.4, **_VERIFY, acceptance="profile", profile=(0.70, 0.28),
        channel="iid", delay_ms=150.0, delay_cv=0.2, max_draft=8, n_tokens=256,
    )


def _qwen_latent_signal() -> ScenarioConfig:
    return _qwen_geometric().replace(
        name="qwen-latent-signal",
        description=("Qwen-like latency with latent per-round difficulty (a = 0.6, tau = 1.0) and a "
                     "draft-confidence signal (sigma = 0.5): where SpecDec++-style stopping helps"),
        sources=_qwen_geometric().sources + (
            "latent difficulty and signal noise are illustrative choices (no public measurement)",),
        acceptance="latent", profile=(0.6,), latent_tau=1.0, latent_eps_sigma=0.3, confidence_sigma=0.5,
    )


# Base profile of llama-latent-signal: logit a_i shifted by a per-round difficulty z ~ N(0, 1) and a
# per-token eps ~ N(0, 0.3^2) gives back llama-heavy-head's survival S_i = 0.70 * 0.28^(i-1) (each a_i
# solved by bisection so that LatentDifficultyAcceptance.survival matches to 1e-3 relative, i <= 8;
# tests/test_agents_delay_aware.py checks it). Easy rounds survive, so the base must fall faster
# than the marginal 0.28.
_LLAMA_LATENT_BASE = (0.7373, 0.202, 0.1313, 0.0874, 0.06, 0.0423, 0.0306, 0.0227)


def _llama_latent_signal() -> ScenarioConfig:
    return _llama_heavy_head().replace(
        name="llama-latent-signal",
        description=("llama-heavy-head's survival (a_1 = 0.70, a_i = 0.28) from latent per-round difficulty "
                     "(tau = 1.0, eps 0.3) with a draft-confidence signal (sigma = 0.5): the heavy head with a "
                     "confidence that informs acceptance"),
        sources=_llama_heavy_head().sources + (
            "latent difficulty and signal noise as qwen-latent-signal (illustrative); base profile solved so "
            "that the exact survival equals llama-heavy-head's (same D_c, 110.7 ms)",),
        acceptance="latent", profile=_LLAMA_LATENT_BASE, latent_tau=1.0, latent_eps_sigma=0.3,
        confidence_sigma=0.5,
    )


def _drift() -> ScenarioConfig:
    return ScenarioConfig(
        name="drift",
        description=("A good pair (geometric alpha = 0.7) under a drifting mean rtt: 40 ms and 400 ms "
                     "alternating every 20 s (steps), lognormal jitter cv 0.1"),
        sources=(_SRC_QWEN_DRAFT, _SRC_VERIFY,
                 "alpha = 0.7: per-position acceptance 0.64-0.79 of EAGLE arXiv 2401.15077 Table 2",
                 "levels 40 ms / 400 ms: the medians of a good terrestrial path and of a loaded "
                 "satellite/cellular path (traces/delay: 5G n78 16 ms, Starlink ISL 151 ms with "
                 "stalls to 388 ms); the schedule itself is synthetic"),
        draft_ms=20.0, **_VERIFY, acceptance="geometric", alpha=0.7,
        channel="drift", drift_schedule=((0.0, 40.0), (20000.0, 400.0)), drift_mode="step",
        drift_period_ms=40000.0, drift_cv=0.1, max_draft=12, n_tokens=256, requests_per_episode=4,
    )


# vLLM speculators issue #1135 (Llama-3.2-1B target, 8-token drafts), docs/calibration.md: unconditional
# acceptance per position on HumanEval 0.837, 0.685, 0.562, 0.460, 0.368, 0.283, 0.217, 0.161 and on chat
# prompts 0.63, 0.39, 0.24, 0.16; conditional a_i = S_i / S_{i-1} (derived, 3 decimals).
_CODE_PROFILE = (0.837, 0.818, 0.820, 0.819, 0.800, 0.769, 0.767, 0.742)
_CHAT_PROFILE = (0.63, 0.62)
_SRC_PROMPTS = ("code / chat acceptance: vLLM speculators issue #1135 (Llama-3.2-1B target, 8-token drafts), "
                "unconditional per-position rates on HumanEval 0.837, 0.685, 0.562, 0.460, 0.368, 0.283, 0.217, "
                "0.161 and on chat prompts 0.63, 0.39, 0.24, 0.16, ...; conditional rates derived "
                "(code 0.837, 0.818, 0.820, 0.819, 0.800, 0.769, 0.767, 0.742; chat 0.63, 0.62, 0.62, ...: about "
                "0.62, close to geometric)")


def _prompt_switch() -> ScenarioConfig:
    return ScenarioConfig(
        name="prompt-switch",
        description=("Acceptance that drifts: the prompt type switches every 60 s (2-4 requests) between "
                     "code-like (HumanEval profile, a_i 0.84-0.74) and chat-like (a_i about 0.62) acceptance; "
                     "Llama-like costs, i.i.d. lognormal rtt (mean 50 ms, cv 0.2)"),
        sources=(_SRC_LLAMA_DRAFT, _SRC_VERIFY, _SRC_PROMPTS,
                 "the 60-s switching period and the 50-ms channel are illustrative (no public measurement of "
                 "prompt-type sequences); at 50 ms the two regimes' k* differ (4 and 2)"),
        draft_ms=16.4, **_VERIFY, acceptance="profile", profile=_CODE_PROFILE, alt_profile=_CHAT_PROFILE,
        acceptance_switch_ms=60000.0, channel="iid", delay_ms=50.0, delay_cv=0.2, max_draft=8, n_tokens=256,
        requests_per_episode=24,
    )


def _markov_csi() -> ScenarioConfig:
    return ScenarioConfig(
        name="markov-csi",
        description=("Gilbert-Elliott channel with observable state: good 30 ms (cv 0.2, mean stay 30 s) "
                     "and bad 300 ms (cv 0.3, mean stay 10 s); geometric alpha = 0.7"),
        sources=(_SRC_QWEN_DRAFT, _SRC_VERIFY,
                 "alpha = 0.7: EAGLE arXiv 2401.15077 Table 2",
                 "two-state delays and stays are illustrative; fitted channels from real traces are "
                 "the markov-nr5g and markov-starlink presets"),
        draft_ms=20.0, **_VERIFY, acceptance="geometric", alpha=0.7,
        channel="markov", markov_generator_per_ms=_MARKOV_CSI_Q, markov_rtt_mean_ms=(30.0, 300.0),
        markov_rtt_cv=(0.2, 0.3), csi_observable=True, max_draft=12, n_tokens=256,
    )


def _trace_cellular() -> ScenarioConfig:
    return _qwen_geometric().replace(
        name="trace-cellular",
        description="Qwen-like pair over a replayed delay trace (shipped synthetic cellular handover trace)",
        sources=_qwen_geometric().sources + ("delay: traces/delay/synthetic_cellular_handover.csv "
                                             "(synthetic; see traces/MANIFEST.json)",),
        channel="trace", delay_trace="delay/synthetic_cellular_handover.csv",
    )


def _real_trace(name: str, file: str, description: str, source: str) -> Callable[[], ScenarioConfig]:
    def factory() -> ScenarioConfig:
        return _qwen_geometric().replace(
            name=name, description=description,
            sources=_qwen_geometric().sources + (
                f"delay: traces/delay/{file}, {source} (third-party; licence and attribution in "
                "traces/README.md and traces/MANIFEST.json)",),
            channel="trace", delay_trace=f"delay/{file}",
        )

    return factory


def _fitted_markov(name: str, file: str, description: str) -> Callable[[], ScenarioConfig]:
    def factory() -> ScenarioConfig:
        import json

        path = resolve_data_path(f"channels/{file}")
        fit = json.loads(Path(path).read_text())
        return _qwen_geometric().replace(
            name=name, description=description,
            sources=_qwen_geometric().sources + (
                f"channel fitted to {fit.get('source', file)} ({fit.get('licence', 'see traces/MANIFEST.json')}) "
                f"by traces/fit_channels.py; figures in traces/channels/{file}",),
            channel="markov",
            markov_generator_per_ms=tuple(tuple(r) for r in fit["generator_per_ms"]),
            markov_rtt_mean_ms=tuple(fit["rtt_mean_ms"]), markov_rtt_cv=tuple(fit["rtt_cv"]),
            csi_observable=True,
        )

    return factory


PRESETS: dict[str, Callable[[], ScenarioConfig]] = {
    "qwen-geometric": _qwen_geometric,
    "llama-heavy-head": _llama_heavy_head,
    "qwen-latent-signal": _qwen_latent_signal,
    "llama-latent-signal": _llama_latent_signal,
    "drift": _drift,
    "markov-csi": _markov_csi,
    "prompt-switch": _prompt_switch,
    "trace-cellular": _trace_cellular,
    "trace-nr5g": _real_trace("trace-nr5g", "nr5g_urban_n78.csv",
                              "Qwen-like pair over the measured 5G (n78) urban drive trace, replayed",
                              "CICV5G dataset (Tongji University), CC BY 4.0"),
    "trace-starlink": _real_trace("trace-starlink", "starlink_isl_ping.csv",
                                  "Qwen-like pair over the measured Starlink (inter-satellite links) ping "
                                  "trace, replayed", "LENS dataset (Zhao and Pan, MMSys 2024), CC BY-SA 4.0"),
    "markov-nr5g": _fitted_markov("markov-nr5g", "nr5g_urban_n78.json",
                                  "Qwen-like pair over a Markov channel fitted to a measured 5G (n78) urban trace"),
    "markov-starlink": _fitted_markov("markov-starlink", "starlink_isl.json",
                                      "Qwen-like pair over a Markov channel fitted to a measured Starlink ISL trace"),
}
DEFAULT_SCENARIO = "qwen-geometric"


def scenario_names() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def make_scenario(name: str | ScenarioConfig = DEFAULT_SCENARIO, /, **overrides: Any) -> ScenarioConfig:
    """A preset (or a given config) with fields overridden; unknown names raise ConfigError.

    The preset is positional-only, so ``name`` is free to be overridden like any other field
    (``make_scenario("drift", name="my-drift")``, ``gym.make(id, name="my-drift")``).
    """
    if isinstance(name, ScenarioConfig):
        base = name
    else:
        if not isinstance(name, str) or name not in PRESETS:
            shown = repr(name) if isinstance(name, str) and len(name) <= 100 else f"of type {type(name).__name__}"
            raise ConfigError(f"unknown scenario {shown}; valid: {', '.join(PRESETS)}")
        base = PRESETS[name]()
    return base.replace(**overrides) if overrides else base


def resolve_data_path(path: str) -> str:
    """An existing file as given, else a file shipped in the project's traces/ data folder."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ConfigError(f"a trace path must be a non-empty string, got {str(path)[:80]!r}")
    p = Path(path).expanduser()
    if p.exists():
        return str(p)
    from .traces.manifest import data_path

    try:
        shipped = data_path(path)
    except (FileNotFoundError, ValueError):
        shipped = None
    if shipped is None or not Path(shipped).exists():
        raise ConfigError(f"file not found: {path!r} (neither a path nor a shipped trace in traces/)")
    return str(shipped)


def build_acceptance(config: ScenarioConfig) -> AcceptanceProcess:
    """The acceptance process a config describes."""
    if config.acceptance in ("geometric", "profile") and config.acceptance_switch_ms is not None:
        assert config.alt_profile is not None  # validated by ScenarioConfig
        base = (config.alpha,) if config.acceptance == "geometric" else config.profile
        assert base is not None
        return SwitchingProfileAcceptance(profile=tuple(base), alt_profile=config.alt_profile,
                                          switch_ms=config.acceptance_switch_ms)
    if config.acceptance == "geometric":
        return geometric(config.alpha)
    if config.acceptance == "profile":
        assert config.profile is not None  # validated by ScenarioConfig
        return ProfileAcceptance(profile=config.profile)
    if config.acceptance == "latent":
        assert config.profile is not None
        return LatentDifficultyAcceptance(profile=config.profile, tau=config.latent_tau,
                                          eps_sigma=config.latent_eps_sigma)
    from .traces.acceptance import load_acceptance_trace

    assert config.acceptance_trace is not None
    tr = load_acceptance_trace(resolve_data_path(config.acceptance_trace))
    return TraceAcceptance(run_lengths=np.asarray(tr.run_length, np.int64), censored=np.asarray(tr.censored, bool),
                           draft_lengths=np.asarray(tr.draft_length, np.int64), confidences=tr.confidences)


def build_channel(config: ScenarioConfig) -> Channel:
    """The channel process a config describes."""
    if config.channel == "constant":
        return IIDChannel(mean_ms=config.delay_ms, cv=0.0)
    if config.channel == "iid":
        return IIDChannel(mean_ms=config.delay_ms, cv=config.delay_cv, distribution=config.delay_distribution,
                          jitter_slot_ms=config.jitter_slot_ms)
    if config.channel == "markov":
        return MarkovChannel(generator_per_ms=np.array(config.markov_generator_per_ms),
                             mean_ms=np.array(config.markov_rtt_mean_ms), cv=np.array(config.markov_rtt_cv),
                             bandwidth_kbps=(None if config.markov_bandwidth_kbps is None
                                             else np.array(config.markov_bandwidth_kbps)),
                             jitter_slot_ms=config.jitter_slot_ms)
    if config.channel == "drift":
        sched = np.array(config.drift_schedule, dtype=np.float64)
        return DriftChannel(times_ms=sched[:, 0], means_ms=sched[:, 1], mode=config.drift_mode,
                            period_ms=config.drift_period_ms, cv=config.drift_cv,
                            jitter_slot_ms=config.jitter_slot_ms)
    from .traces.bounds import check_delay_trace
    from .traces.delay import load_delay_trace
    from .traces.gaps import replay_times

    assert config.delay_trace is not None
    path = resolve_data_path(config.delay_trace)
    tr = load_delay_trace(path)
    check_delay_trace(tr)  # rtt, time span and states within the simulator's bounds (file and line named)
    times = replay_times(tr.t_ms, config.delay_trace_gaps, config.delay_trace_gap_factor, name=path)
    return TraceChannel(times_ms=times, rtts_ms=tr.rtt_ms, states=tr.state, random_offset=config.delay_trace_offset)


def build_simulator(config: ScenarioConfig, batch_size: int = 1) -> Simulator:
    """The batched core for a config (loads trace files, if any, once)."""
    return Simulator(config, build_acceptance(config), build_channel(config), batch_size=batch_size)


def stationary_reference(config: ScenarioConfig, channel: Channel | None = None) -> tuple[int, float]:
    """(k*, rho*) of the stationary oracle at the channel's long-run mean rtt (SPEC 4); for a trace
    that mean counts every sample once (``TraceChannel.long_run_mean_rtt_ms``)."""
    from .oracle import optimal_k_for_costs

    channel = channel or build_channel(config)
    survival = build_acceptance(config).survival(config.max_draft)
    fixed = channel.long_run_mean_rtt_ms() + config.verify_base_ms
    return optimal_k_for_costs(survival, config.marginal_cost_ms, fixed)


def scenarios_markdown() -> str:
    """docs/scenarios.md, generated from the presets (``python -m specstop_gym scenarios``)."""
    from .oracle import critical_delay

    lines = ["# Scenario presets", "",
             "Generated from the presets by `python -m specstop_gym scenarios > docs/scenarios.md` "
             "(a test checks that it is current).",
             "Every field can be overridden: `gym.make(id, scenario=name, field=value)`, "
             "`make_scenario(name, field=value)`, or `--set field=value` on the command line.",
             "The reference paper (arXiv 2606.20591) publishes only its abstract: its own parameters are "
             "unknown, so the presets are calibrated to its reported critical delays (83 ms, 111 ms) with "
             "public hardware and acceptance figures (see the sources of each preset).", "",
             "| preset | acceptance | channel | K | c (ms/token) | mean rtt (ms) | D_c (ms) | stationary k* | rho* (ms/token) |",
             "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for name in PRESETS:
        c = make_scenario(name)
        ch = build_channel(c)
        surv = build_acceptance(c).survival(c.max_draft)
        dc = critical_delay(surv, draft_ms=c.draft_ms, verify_base_ms=c.verify_base_ms,
                            verify_per_token_ms=c.verify_per_token_ms)
        k, rho = stationary_reference(c, ch)
        lines.append(f"| `{name}` | {c.acceptance} | {c.channel} | {c.max_draft} | {c.marginal_cost_ms:.2f} | "
                     f"{ch.long_run_mean_rtt_ms():.1f} | {dc:.1f} | {k} | {rho:.2f} |")
        details += ["", f"## `{name}`", "", c.description, "", "Sources:"]
        details += [f"- {s}" for s in c.sources]
        fields = {f: getattr(c, f) for f in ("draft_ms", "verify_base_ms", "verify_per_token_ms", "max_draft",
                                              "n_tokens", "requests_per_episode", "acceptance", "alpha", "profile",
                                              "latent_tau", "latent_eps_sigma", "confidence_sigma", "alt_profile",
                                              "acceptance_switch_ms", "channel",
                                              "delay_ms", "delay_cv", "markov_generator_per_ms", "markov_rtt_mean_ms",
                                              "markov_rtt_cv", "drift_schedule", "drift_period_ms", "drift_cv",
                                              "delay_trace", "delay_trace_gaps", "csi_observable")}
        details += ["", "Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in fields.items()
                                                    if v is not None and not (k.startswith("markov") and c.channel != "markov")
                                                    and not (k.startswith("drift") and c.channel != "drift")
                                                    and not (k.startswith("delay_trace") and c.channel != "trace")
                                                    and not (k.startswith("latent") and c.acceptance != "latent"))]
    lines += ["", "D_c: critical delay below which k = 1 is optimal, `c (1 + S_1 - S_2) / S_2 - verify_base_ms` "
              "([spec §4](spec.md#4-exact-optimal-control-the-oracle)). k*, rho*: the stationary optimum at the long-run mean rtt (for a trace: the mean over "
              "its samples, each counted once); for Markov, drift and trace channels the evaluation's oracle is "
              "state- or time-dependent (docs/model.md)."]
    return "\n".join(lines + details) + "\n"



if __name__ == "__main__":  # the older form of ``python -m specstop_gym scenarios``
    from specstop_gym.__main__ import main as _main

    raise SystemExit(_main(["scenarios", *__import__("sys").argv[1:]]))
