"""Compare speculation-control agents on common random numbers and write a run folder.

    python evaluate.py                                   # default comparison, about a minute
    python evaluate.py --scenarios llama-heavy-head drift --seeds 16
    python evaluate.py --agents ucb-specstop static-k:k=3 oracle --delay-ms 300
    python evaluate.py --set alpha=0.7 --set n_tokens=512 --level token
    python evaluate.py --paper                           # the reference paper's claims, ~5 minutes

Every agent of a scenario faces the same seeds, i.e. the same acceptance draws per round and
the same channel realisation (SPEC 5). Per scenario the out folder holds ``rounds.csv`` (one row
per round), ``summary.json`` (schema in docs/evaluation.md, written atomically), ``config.json``
(the resolved settings) and PNG plots: cumulative regret, per-token latency, chosen k over time
and a delay sweep. With several scenarios each gets a subfolder.

Exit codes: 0 success, 2 invalid arguments (nothing is run; the message says what is wrong).
"""

from __future__ import annotations

import os

# The simulator works on tiny matrices (a few channel states): multithreaded BLAS only contends for
# the CPUs (scipy's expm in the Markov oracle slows down 100x on a loaded 2-CPU machine). Set before
# numpy is imported; an explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from specstop_gym.cli import UsageError, dataclass_parser, parse_scenario_overrides

DEFAULT_AGENTS = ("static-k", "heuristic", "specdec++", "naive-ucb", "ucb-specstop", "contextual-ucb", "oracle",
                  "best-fixed-k")


@dataclass
class Args:
    """Command-line configuration of evaluate.py (each field is a flag: ``seed_list`` -> ``--seed-list``)."""

    scenarios: list[str] = field(default_factory=lambda: ["qwen-geometric"], metadata={"metavar": "NAME"})
    """scenario presets to evaluate (one or more; a subfolder each when several)"""
    agents: list[str] = field(default_factory=lambda: list(DEFAULT_AGENTS), metadata={"metavar": "SPEC"})
    """agent specs, name[:key=value,...] (e.g. static-k:k=4), best-fixed-k, sb3:PATH"""
    seeds: int = field(default=8, metadata={"metavar": "N"})
    """number of seeds (0..N-1); every agent sees the same seeds"""
    seed_list: list[int] | None = field(default=None, metadata={"metavar": "SEED"})
    """explicit seeds (overrides --seeds)"""
    requests: int = field(default=20, metadata={"metavar": "N"})
    """requests per run (sets requests_per_episode); a run is one episode of that many requests"""
    rounds: int | None = field(default=None, metadata={"metavar": "N"})
    """optional cap on the rounds of a run"""
    level: Literal["round", "token"] = "round"
    """round: the agent picks k per round; token: it decides draft-or-stop after each drafted token"""
    set: list[str] = field(default_factory=list)
    """override any scenario field, field=value (repeatable; the value is a number, list, true/false/none or a quoted string when it parses as one, else the string itself)"""
    delay_ms: float | None = field(default=None, metadata={"metavar": "MS"})
    """shortcut for --set delay_ms=... (the constant or mean rtt of constant/iid channels)"""
    delay_trace: str | None = field(default=None, metadata={"metavar": "PATH"})
    """replay a delay trace CSV (t_ms,rtt_ms): sets channel=trace and delay_trace"""
    acceptance_trace: str | None = field(default=None, metadata={"metavar": "PATH"})
    """replay an acceptance trace (.jsonl): sets acceptance=trace and acceptance_trace"""
    sweep_delays: list[float] | None = field(default=None, metadata={"metavar": "MS"})
    """constant delays (ms) of the delay sweep (default: 8 log-spaced points, 10..2000 ms)"""
    sweep_seeds: int = field(default=4, metadata={"metavar": "N"})
    """seeds per point of the delay sweep (the first of the run's seeds)"""
    sweep_requests: int = field(default=1, metadata={"metavar": "N"})
    """requests per run at each sweep delay (short runs)"""
    no_sweep: bool = False
    """skip the delay sweep"""
    out: str | None = field(default=None, metadata={"metavar": "DIR"})
    """output folder (default: results/<scenario>__<timestamp>)"""
    no_plots: bool = False
    """do not draw the PNG plots"""
    paper: bool = False
    """measure the reference paper's claims (SPEC 7) instead; writes paper.json and paper.md"""
    quick: bool = False
    """with --paper: a reduced budget (seconds; for smoke tests, numbers are noisy)"""
    quiet: bool = False
    """no progress bar and no table"""


# --------------------------------------------------------------------------- CLI from the dataclass
def build_parser(cls: type = Args) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``cls`` (help = the field's docstring)."""
    return dataclass_parser(cls, "evaluate.py", __doc__)


def parse_args(argv: list[str] | None = None) -> Args:
    ns = build_parser().parse_args(argv)
    values = vars(ns)
    values["set"] = values["set"] or []
    return Args(**values)


# --------------------------------------------------------------------------- validation
def resolve_overrides(args: Args) -> dict[str, Any]:
    """Scenario overrides from the shortcuts, then --set (explicit --set wins)."""
    ov: dict[str, Any] = {"requests_per_episode": args.requests}
    if args.delay_ms is not None:
        ov["delay_ms"] = args.delay_ms
    if args.delay_trace is not None:
        ov.update(channel="trace", delay_trace=args.delay_trace)
    if args.acceptance_trace is not None:
        ov.update(acceptance="trace", acceptance_trace=args.acceptance_trace)
    ov.update(parse_scenario_overrides(args.set))
    return ov


def validate(args: Args) -> tuple[list[Any], list[int], dict[str, dict[str, Any]], Path]:
    """Check every argument before any work: scenarios, overrides, traces, agents, output folder.

    Returns (scenario configs, seeds, prebuilt agents per scenario, output folder).
    """
    from agents.registry import agent_names
    from specstop_gym.core.config import ConfigError
    from specstop_gym.evaluation.report import BEST_FIXED_K, build_agent, check_writable, spec_name
    from specstop_gym.scenarios import (
        build_acceptance,
        build_channel,
        make_scenario,
        scenario_names,
    )

    if args.seeds < 1 and not args.seed_list:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(dict.fromkeys(args.seed_list)) if args.seed_list else list(range(args.seeds))
    if any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be >= 0, got {seeds}")
    if args.requests < 1:
        raise UsageError(f"--requests must be >= 1, got {args.requests}")
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {args.rounds}")
    if args.sweep_seeds < 1 or args.sweep_requests < 1:
        raise UsageError("--sweep-seeds and --sweep-requests must be >= 1")
    if args.sweep_delays is not None and any(not (d >= 0) or d == float("inf") for d in args.sweep_delays):
        raise UsageError(f"--sweep-delays must be finite delays >= 0 ms, got {args.sweep_delays}")
    unknown = [s for s in args.scenarios if s not in scenario_names()]
    if unknown:
        raise UsageError(f"unknown scenario {unknown[0]!r}; valid scenarios: {', '.join(scenario_names())}")
    if len(set(args.scenarios)) != len(args.scenarios):
        raise UsageError("--scenarios lists a scenario twice")
    labels = [a.strip() for a in args.agents]
    if len(set(labels)) != len(labels):
        raise UsageError(f"--agents lists an agent twice: {labels}")
    valid_agents = agent_names() + [BEST_FIXED_K]
    for label in labels:
        name = spec_name(label)
        if name not in valid_agents and name != "sb3":
            raise UsageError(f"unknown agent {name!r}; valid agents: {', '.join(valid_agents)} "
                             f"(and sb3:PATH for a trained Stable-Baselines3 policy)")
    overrides = resolve_overrides(args)
    configs, prebuilt = [], {}
    for name in args.scenarios:
        try:
            cfg = make_scenario(name, **overrides)
            build_acceptance(cfg)  # loads trace files, if any: errors name file, line and field
            build_channel(cfg)
        except (ConfigError, ValueError, OSError) as e:
            raise UsageError(f"scenario {name!r}: {e}") from None
        if args.delay_ms is not None and cfg.channel not in ("constant", "iid"):
            print(f"note: --delay-ms has no effect on {name!r} (channel={cfg.channel})", file=sys.stderr)
        built = {}
        for label in labels:
            if spec_name(label) == BEST_FIXED_K:
                if label != BEST_FIXED_K:
                    raise UsageError(f"best-fixed-k takes no parameters, got {label!r}")
                continue
            try:
                built[label] = build_agent(label, cfg, len(seeds), seeds[0])
            except (ValueError, TypeError, OSError, ImportError, KeyError) as e:
                raise UsageError(f"agent {label!r} on scenario {name!r}: {e}") from None
        configs.append(cfg)
        prebuilt[name] = built
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.out:
        out = Path(args.out)
    else:
        tag = "paper" if args.paper else ("+".join(args.scenarios) if len(args.scenarios) <= 3 else "multi")
        out = Path("results") / f"{tag}__{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = Path("results") / f"{tag}__{stamp}-{n}"
    try:
        check_writable(out)
        for cfg in configs if len(configs) > 1 else []:
            check_writable(out / cfg.name)
    except OSError as e:
        raise UsageError(str(e)) from None
    return configs, seeds, prebuilt, out


# --------------------------------------------------------------------------- one scenario
def evaluate_scenario(args: Args, cfg: Any, seeds: list[int], prebuilt: dict[str, Any], folder: Path,
                      command: str) -> dict[str, Any]:
    """Run the comparison (and the sweep) on one scenario and write its files into ``folder``."""
    from tqdm import tqdm

    from specstop_gym.evaluation import plots, report

    specs = [a.strip() for a in args.agents]
    sweep_delays = [] if args.no_sweep else (args.sweep_delays or report.default_sweep_delays())
    n_sweep_agents = len([s for s in specs if report.spec_name(s) != report.BEST_FIXED_K])
    n_sweep_agents += not any(report.spec_name(s) == report.ORACLE for s in specs)
    total = len(specs) + (not any(report.spec_name(s) == report.ORACLE for s in specs)) + len(sweep_delays)
    bar = tqdm(total=total, desc=cfg.name, unit="step", disable=args.quiet or not sys.stderr.isatty(),
               leave=False, dynamic_ncols=True)
    counter = {"rounds": 0}

    def on_round(n: int) -> None:
        counter["rounds"] += n
        if counter["rounds"] % 500 == 0:
            bar.set_postfix(rounds=counter["rounds"], refresh=False)

    def on_agent(label: str, seconds: float) -> None:
        bar.update(1)
        bar.set_postfix(last=label, rounds=counter["rounds"])

    t0 = time.perf_counter()
    comp = report.run_comparison(cfg, specs, seeds, level=args.level, max_rounds=args.rounds,
                                 prebuilt=prebuilt, on_round=on_round, on_agent=on_agent)
    sweep = None
    if sweep_delays:
        sweep_seeds = seeds[:args.sweep_seeds]
        sweep = report.delay_sweep(cfg, specs, sweep_delays, sweep_seeds, requests=args.sweep_requests,
                                   level=args.level, on_round=on_round,
                                   on_point=lambda d: (bar.update(1), bar.set_postfix(delay_ms=d)))
    bar.close()
    elapsed = time.perf_counter() - t0
    files: dict[str, Any] = {"rounds_csv": "rounds.csv", "config": "config.json", "plots": {}}
    report.write_text_atomic(folder / "rounds.csv", report.rounds_csv_text(cfg.name, comp.runs))
    summary = report.build_summary(comp, command=command, sweep=sweep, files=files)
    summary["wall_s"] = elapsed
    summary["rounds_per_s"] = counter["rounds"] / elapsed if elapsed > 0 else None
    if not args.no_plots:
        title = f"{cfg.name} ({len(seeds)} seeds, {cfg.requests_per_episode} requests x {cfg.n_tokens} tokens)"
        files["plots"]["regret"] = plots.plot_regret(comp.runs, folder / "regret.png", title).name
        files["plots"]["latency"] = plots.plot_latency(summary, folder / "latency.png", title).name
        files["plots"]["k_over_time"] = plots.plot_k_over_time(comp.runs, summary["oracle"],
                                                               folder / "k_over_time.png", title).name
        if sweep is not None:
            files["plots"]["delay_sweep"] = plots.plot_sweep(
                sweep, folder / "delay_sweep.png",
                f"{cfg.name}: delay sweep ({len(sweep['seeds'])} seeds, {args.sweep_requests} request(s))").name
    report.write_json_atomic(folder / "config.json", {
        "command": command, "args": dataclasses.asdict(args), "seeds": seeds, "scenario": cfg.to_dict(),
        "sweep_delays_ms": sweep_delays, "schema_version": report.SCHEMA_VERSION})
    report.write_json_atomic(folder / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["evaluate.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.paper:
            return _paper(args, command)
        configs, seeds, prebuilt, out = validate(args)
    except UsageError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    from specstop_gym.evaluation import report

    summaries = {}
    for cfg in configs:
        folder = out / cfg.name if len(configs) > 1 else out
        summaries[cfg.name] = evaluate_scenario(args, cfg, seeds, prebuilt[cfg.name], folder, command)
        if not args.quiet:
            s = summaries[cfg.name]
            ref = s["oracle"]
            extra = (f"k* = {ref['k_star']}, rho* = {ref['rho_star_ms']:.2f} ms/token, "
                     if ref["k_star"] is not None else "")
            print(f"\n{cfg.name}: {len(seeds)} seeds, level {args.level}, {extra}"
                  f"D_c = {ref['critical_delay_ms']:.1f} ms; regret vs {s['regret_reference']['description']}")
            print(report.format_table(s))
            print(f"({s['wall_s']:.1f} s, {s['rounds_per_s']:.0f} rounds/s) -> {folder}")
    if len(configs) > 1:
        report.write_json_atomic(out / "index.json", {
            "command": command, "scenarios": {n: f"{n}/summary.json" for n in summaries},
            "schema_version": report.SCHEMA_VERSION})
    return 0


def _paper(args: Args, command: str) -> int:
    from specstop_gym.evaluation import paper
    from specstop_gym.evaluation.report import check_writable

    out = Path(args.out) if args.out else Path("results") / f"paper__{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        check_writable(out)
    except OSError as e:
        raise UsageError(str(e)) from None
    result = paper.run_paper(out, quick=args.quick, quiet=args.quiet, command=command)
    if not args.quiet:
        print(paper.format_markdown(result))
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
