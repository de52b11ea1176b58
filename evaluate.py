"""Compare speculation-control agents on common random numbers and write a run folder.

    python evaluate.py                                   # default comparison, about a minute
    python evaluate.py --scenarios llama-heavy-head drift --seeds 16
    python evaluate.py --agents ucb-specstop static-k:k=3 oracle --delay-ms 300
    python evaluate.py --set alpha=0.7 --set n_tokens=512 --level token
    python evaluate.py --paper                           # the reference paper's claims, about 3 minutes
    python evaluate.py --grid my_grid.toml               # an experiment grid, cell by cell (resumable)
    python evaluate.py --grid my_grid.toml --ray         # its cells as Ray tasks on this machine's cores
    python evaluate.py --grid my_grid.toml --ray-address HEAD:6379      # ... on a Ray cluster
    python evaluate.py --scenarios qwen-geometric drift --grid-delays 25 100 400 --seeds 16 --seed-block 8

Every agent of a scenario faces the same seeds, i.e. the same acceptance draws per round and
the same channel realisation (docs/spec.md, section 5). Per scenario the out folder holds ``rounds.parquet`` (one
row per round, streamed to disk while the agents run), ``summary.json`` (schema in
docs/evaluation.md), ``config.json`` (the resolved settings and the run's status: running,
finished, failed or interrupted) and PNG plots: cumulative regret, per-token latency, chosen k
over time and a delay sweep. With several scenarios each gets a subfolder. A grid (``--grid``, ``--grid-delays``,
``--grid-traces``, ``--seed-block``, ``--ray``, ``--ray-address``; also ``--paper``) writes one
folder for all its cells instead: ``rounds/`` (a Parquet dataset, one part per cell),
``cells/`` (one result per cell: the record that it finished), ``cells.parquet``,
``seeds.parquet``, ``summary.json``, ``grid.json``, ``config.json`` and ``plots/``; rerun on the
same ``--out`` it continues where it stopped (docs/evaluation.md, "Grids"). Every file is
written atomically; the folder is locked while a run writes to it (a second run on the same
--out is refused); rerunning on a folder replaces the earlier results.

Trust: sb3:PATH loads a Stable-Baselines3 model, which unpickles Python objects from the file:
load only files you trust (a file's sha256 is checked against its run folder's record when
there is one; that guards against accidents, not against someone who can rewrite the folder).

Exit codes: 0 success; 1 a disk error during the run (one line naming the file) or a grid
worker running other code; 2 invalid arguments, an output folder in use or a Ray cluster that cannot be reached
(nothing is run; the message says what is wrong); 130 interrupted.
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
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from specstop_gym.cli import (
    UsageError,
    check_count,
    check_number,
    check_path,
    dataclass_parser,
    did_you_mean,
    parse_scenario_overrides,
)

DEFAULT_AGENTS = ("static-k", "heuristic", "specdec++", "naive-ucb", "ucb-specstop", "contextual-ucb", "oracle",
                  "best-fixed-k")


@dataclass
class Args:
    """Command-line configuration of evaluate.py (each field is a flag: ``seed_list`` -> ``--seed-list``)."""

    scenarios: list[str] = field(default_factory=lambda: ["qwen-geometric"], metadata={"metavar": "NAME"})
    """scenario presets to evaluate (one or more; a subfolder each when several)"""
    agents: list[str] = field(default_factory=lambda: list(DEFAULT_AGENTS), metadata={"metavar": "SPEC"})
    """agent specs, name[:key=value,...] (e.g. static-k:k=4), best-fixed-k, sb3:PATH (a trained model: load trusted files only, it is unpickled)"""
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
    """output folder (default: results/<scenario>__<timestamp>); locked while a run writes to it"""
    rounds_format: Literal["parquet", "csv.gz", "csv"] = "parquet"
    """format of the per-round table: parquet (zstd, columnar), csv.gz or csv"""
    no_plots: bool = False
    """do not draw the PNG plots"""
    paper: bool = False
    """measure the reference paper's claims (docs/paper.md) instead; writes paper.json and paper.md"""
    quick: bool = False
    """with --paper: a reduced budget (seconds; for smoke tests, numbers are noisy)"""
    quiet: bool = False
    """no progress bar and no table"""
    grid: str | None = field(default=None, metadata={"metavar": "FILE"})
    """run an experiment grid file (TOML; docs/evaluation.md, "Grids") cell by cell; resumable: rerun with the same --out to continue"""
    grid_delays: list[float] | None = field(default=None, metadata={"metavar": "MS"})
    """grid of constant delays (ms): one cell per scenario and delay (channel=constant)"""
    grid_traces: list[str] | None = field(default=None, metadata={"metavar": "PATH"})
    """grid of delay traces: one cell per scenario and trace (channel=trace)"""
    seed_block: int | None = field(default=None, metadata={"metavar": "N"})
    """split the seeds into cells of N seeds (a grid; more cells to run in parallel)"""
    ray: bool = False
    """run the grid's cells as Ray tasks on a local Ray runtime started on this machine's cores (needs the ray extra)"""
    ray_address: str | None = field(default=None, metadata={"metavar": "ADDR"})
    """run the grid's cells on an existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto)"""


# --------------------------------------------------------------------------- CLI from the dataclass
def build_parser(cls: type = Args) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``cls`` (help = the field's docstring); the
    epilog is the module docstring after its examples (outputs, trust, exit codes)."""
    paragraphs = (__doc__ or "").split("\n\n")
    epilog = "\n\n".join(["examples:\n" + paragraphs[1], valid_names_help(), *paragraphs[2:]])
    return dataclass_parser(cls, "evaluate.py", __doc__, epilog=epilog)


def valid_names_help() -> str:
    """The scenarios and agents --help lists (from the registries, so always current)."""
    import textwrap

    from agents.registry import agent_names
    from specstop_gym.scenarios import scenario_names

    scen = textwrap.fill(", ".join(scenario_names()), 96, initial_indent="  ", subsequent_indent="  ",
                         break_on_hyphens=False)
    agents = textwrap.fill(", ".join([*agent_names(), "best-fixed-k", "sb3:PATH"]), 96, initial_indent="  ", break_on_hyphens=False,
                           subsequent_indent="  ")
    return (f"scenarios (--scenarios; docs/scenarios.md):\n{scen}\n\nagents (--agents NAME[:key=value,...]; "
            f"docs/agents.md):\n{agents}")


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


def resolve_seeds(args: Args) -> list[int]:
    """The seeds of a run: ``--seed-list`` (each checked; duplicates run once, with a note naming the
    flag) or ``0..--seeds-1``. Shared by plain runs and grids built from flags."""
    from specstop_gym.cli import MAX_SEED, MAX_SEEDS

    if not args.seed_list:
        return list(range(check_count("--seeds", args.seeds, 1, MAX_SEEDS)))
    if len(args.seed_list) > MAX_SEEDS:
        raise UsageError(f"--seed-list: at most {MAX_SEEDS} seeds, got {len(args.seed_list)}")
    for s in args.seed_list:
        check_count("--seed-list", s, 0, MAX_SEED)
    seeds = list(dict.fromkeys(args.seed_list))
    if len(seeds) < len(args.seed_list):
        dups = sorted({s for s in args.seed_list if args.seed_list.count(s) > 1})
        print(f"note: --seed-list: duplicate seeds dropped ({', '.join(map(str, dups))}): each seed runs once, "
              f"{len(seeds)} seeds", file=sys.stderr)
    return seeds


def validate(args: Args) -> tuple[list[Any], list[int], dict[str, dict[str, Any]], Path]:
    """Check every argument before any work: scenarios, overrides, traces, agents, output folder.

    Returns (scenario configs, seeds, prebuilt agents per scenario, output folder).
    """
    from agents.registry import agent_names
    from specstop_gym.cli import MAX_SEEDS
    from specstop_gym.core.config import BOUNDS, MAX_DELAY_MS, ConfigError
    from specstop_gym.evaluation.report import BEST_FIXED_K, build_agent, check_writable, spec_name
    from specstop_gym.scenarios import (
        build_acceptance,
        build_channel,
        make_scenario,
        scenario_names,
    )

    seeds = resolve_seeds(args)
    check_count("--requests", args.requests, 1, int(BOUNDS["requests_per_episode"].hi))
    if args.rounds is not None:
        check_count("--rounds", args.rounds, 1, 10**9)
    check_count("--sweep-seeds", args.sweep_seeds, 1, MAX_SEEDS)
    check_count("--sweep-requests", args.sweep_requests, 1, int(BOUNDS["requests_per_episode"].hi))
    if args.sweep_delays is not None:
        if len(args.sweep_delays) > 1000:
            raise UsageError(f"--sweep-delays: at most 1000 delays, got {len(args.sweep_delays)}")
        for d in args.sweep_delays:
            check_number("--sweep-delays", d, 0.0, MAX_DELAY_MS, "ms")
            if not d > 0:
                raise UsageError(f"--sweep-delays: every delay must be > 0 ms (the sweep is drawn on a log axis), "
                                 f"got {d:g}")
    if args.quick and not args.paper:
        raise UsageError("--quick: only with --paper (it selects the paper's reduced budget; a comparison's budget "
                         "is --seeds and --requests)")
    if len(args.agents) > 64 or any(len(a) > 1000 for a in args.agents):
        raise UsageError("--agents: at most 64 specs of at most 1000 characters each")
    for flag, value in (("--out", args.out), ("--delay-trace", args.delay_trace),
                        ("--acceptance-trace", args.acceptance_trace)):
        if value is not None:
            check_path(flag, value)
    unknown = [s for s in args.scenarios if s not in scenario_names()]
    if unknown:
        raise UsageError(f"--scenarios: unknown scenario {unknown[0]!r}{did_you_mean(unknown[0], scenario_names())}; "
                         f"valid scenarios: {', '.join(scenario_names())}")
    if len(set(args.scenarios)) != len(args.scenarios):
        raise UsageError("--scenarios lists a scenario twice")
    labels = [a.strip() for a in args.agents]
    if len(set(labels)) != len(labels):
        raise UsageError(f"--agents lists an agent twice: {labels}")
    valid_agents = agent_names() + [BEST_FIXED_K]
    for label in labels:
        name = spec_name(label)
        if name not in valid_agents and name != "sb3":
            raise UsageError(f"--agents: unknown agent {name!r}{did_you_mean(name, valid_agents)}; valid agents: "
                             f"{', '.join(valid_agents)} "
                             f"(and sb3:PATH for a trained Stable-Baselines3 policy)")
    overrides = resolve_overrides(args)
    configs, prebuilt = [], {}
    for name in args.scenarios:
        try:
            cfg = make_scenario(name, **overrides)
            build_acceptance(cfg)  # loads trace files, if any: errors name file, line and field
            build_channel(cfg)
        except (ConfigError, ValueError, TypeError, OSError) as e:
            raise UsageError(f"scenario {name!r}: {e}") from None
        if args.delay_ms is not None and cfg.channel not in ("constant", "iid"):
            print(f"note: --delay-ms has no effect on {name!r} (channel={cfg.channel})", file=sys.stderr)
        built = {}
        for label in labels:
            if spec_name(label) == BEST_FIXED_K:
                if label != BEST_FIXED_K:
                    raise UsageError(f"--agents: best-fixed-k takes no parameters, got {label!r}")
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    built[label] = build_agent(label, cfg, len(seeds), seeds[0])
            except (ValueError, TypeError, OSError, ImportError, KeyError, OverflowError) as e:
                raise UsageError(f"--agents {label!r} on scenario {name!r}: {e}") from None
            for w in caught:  # e.g. a trained model evaluated on another scenario: one line each
                if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning):
                    print(f"warning: --agents {label}: {w.message}", file=sys.stderr)
        if not any(spec_name(label) == "oracle" for label in labels):  # always run: built and checked here too
            try:
                built["oracle"] = build_agent("oracle", cfg, len(seeds), seeds[0])
            except (ValueError, TypeError, OSError, OverflowError) as e:
                raise UsageError(f"the oracle (always run as the reference) on scenario {name!r}: {e}") from None
        configs.append(cfg)
        prebuilt[cfg.name] = built
    if len({c.name for c in configs}) != len(configs):
        raise UsageError("--set name=... gives several scenarios one name (and one folder); drop it or run them "
                         "one by one")
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
    check_space(out, configs, labels, len(seeds), args)
    return configs, seeds, prebuilt, out


def estimate_rounds(cfg: Any, n_agents: int, n_seeds: int, max_rounds: int | None) -> tuple[int, int]:
    """(fewest, most) rows of the rounds table: every round gains 1..max_draft+1 tokens."""
    per_seed = cfg.requests_per_episode * cfg.n_tokens
    most = per_seed if max_rounds is None else min(per_seed, max_rounds)
    fewest = -(-per_seed // (cfg.max_draft + 1)) if max_rounds is None else min(-(-per_seed // (cfg.max_draft + 1)),
                                                                                 max_rounds)
    return n_agents * n_seeds * fewest, n_agents * n_seeds * most


BYTES_PER_ROUND = {"parquet": 32, "csv.gz": 32, "csv": 104}
"""Size of one row of the rounds table per format, rounded up from docs/evaluation.md's measurement
(29.4, 29.5 and 100.5 bytes)."""


def check_space(out: Path, configs: list[Any], labels: list[str], n_seeds: int, args: Args) -> None:
    """Refuse a run whose rounds table cannot fit the free space even at its smallest; note one
    that may not fit at its largest (every round of one token)."""
    from specstop_gym.fileio import format_bytes, free_bytes

    free = free_bytes(out)
    if free is None:
        return
    n_agents = len(labels) + (not any(lab.split(":")[0] == "oracle" for lab in labels))
    per_row = BYTES_PER_ROUND[args.rounds_format]
    low = high = 0
    for cfg in configs:
        a, b = estimate_rounds(cfg, n_agents, n_seeds, args.rounds)
        low, high = low + a * per_row, high + b * per_row
    margin = 16 << 20  # plots, JSON files, temporary copies
    if free < low + margin:
        raise UsageError(f"not enough free space in {str(out)!r}: the rounds table needs at least "
                         f"{format_bytes(low + margin)}, {format_bytes(free)} are free")
    if free < high + margin:
        print(f"note: the rounds table may need up to {format_bytes(high + margin)} and {format_bytes(free)} are free "
              f"in {str(out)!r}", file=sys.stderr)


# --------------------------------------------------------------------------- one scenario
OUTPUT_NAMES = ("rounds.parquet", "rounds.csv.gz", "rounds.csv", "summary.json", "regret.png", "latency.png",
                "k_over_time.png", "delay_sweep.png")
"""Files evaluate.py writes into a scenario folder (a rerun removes the ones it will not rewrite)."""


def run_config(args: Args, cfg: Any, seeds: list[int], sweep_delays: list[float], command: str, run_id: str,
               status: str, files: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    """config.json of a scenario folder: the resolved settings and the run's status."""
    from datetime import datetime, timezone

    from specstop_gym.evaluation import report

    doc = {"command": command, "run_id": run_id, "status": status, "error": error, "pid": os.getpid(),
           "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": dataclasses.asdict(args),
           "seeds": seeds, "scenario": cfg.to_dict(), "sweep_delays_ms": sweep_delays, "files": files,
           "schema_version": report.SCHEMA_VERSION}
    return doc


def evaluate_scenario(args: Args, cfg: Any, seeds: list[int], prebuilt: dict[str, Any], folder: Path,
                      command: str, run_id: str = "") -> dict[str, Any]:
    """Run the comparison (and the sweep) on one scenario and write its files into ``folder``.

    config.json is written first (status ``running``) and last (``finished``); the rounds are
    streamed to the rounds table while the agents run; every file is moved into place
    atomically, summary.json after all others. On an exception config.json says ``failed`` (or
    ``interrupted``) with the error, and the exception propagates.
    """
    from tqdm import tqdm

    from specstop_gym.evaluation import plots, report

    specs = [a.strip() for a in args.agents]
    sweep_delays = [] if args.no_sweep else (args.sweep_delays or report.default_sweep_delays())
    total = len(specs) + (not any(report.spec_name(s) == report.ORACLE for s in specs)) + len(sweep_delays)
    rounds_name = report.ROUNDS_FORMATS[args.rounds_format]
    files: dict[str, Any] = {"rounds": rounds_name, "config": "config.json", "summary": "summary.json", "plots": {}}
    planned = {rounds_name, "summary.json"}
    if not args.no_plots:
        planned |= {"regret.png", "latency.png", "k_over_time.png"} | ({"delay_sweep.png"} if sweep_delays else set())
    folder.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:  # an earlier run's files this run will not rewrite
        if name not in planned and (folder / name).is_file():
            (folder / name).unlink()
    config_path = folder / "config.json"
    report.write_json_atomic(config_path, run_config(args, cfg, seeds, sweep_delays, command, run_id, "running",
                                                     files))
    try:
        summary = _evaluate(args, cfg, seeds, prebuilt, folder, command, run_id, specs, sweep_delays, files, total,
                            tqdm, plots, report)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        error = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        try:
            report.write_json_atomic(config_path, run_config(args, cfg, seeds, sweep_delays, command, run_id, status,
                                                             files, error))
        except OSError:
            pass  # the disk error itself is reported by main()
        raise
    report.write_json_atomic(config_path, run_config(args, cfg, seeds, sweep_delays, command, run_id, "finished",
                                                     files))
    return summary


def _evaluate(args: Args, cfg: Any, seeds: list[int], prebuilt: dict[str, Any], folder: Path, command: str,
              run_id: str, specs: list[str], sweep_delays: list[float], files: dict[str, Any], total: int,
              tqdm: Any, plots: Any, report: Any) -> dict[str, Any]:
    bar = tqdm(total=total, desc=cfg.name, unit="step", disable=args.quiet or not sys.stderr.isatty(),
               leave=False, dynamic_ncols=True)
    counter = {"rounds": 0}

    def on_round(n: int) -> None:
        counter["rounds"] += n
        if counter["rounds"] % 500 == 0:
            bar.set_postfix(rounds=counter["rounds"], refresh=False)

    # without a terminal (CI logs, pipes, nohup) a bar is noise: one line per finished agent instead
    log_lines = not args.quiet and bar.disable
    done = {"n": 0}

    def on_agent(label: str, seconds: float) -> None:
        bar.update(1)
        bar.set_postfix(last=label, rounds=counter["rounds"])
        done["n"] += 1
        if log_lines:
            print(f"{cfg.name}: [{done['n']}/{total}] {label} finished in {seconds:.1f} s", file=sys.stderr,
                  flush=True)

    def on_point(d: float) -> None:
        bar.update(1)
        bar.set_postfix(delay_ms=d)
        done["n"] += 1
        if log_lines:
            print(f"{cfg.name}: [{done['n']}/{total}] delay sweep at {d:g} ms finished", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    rounds = report.RoundsFile(folder / files["rounds"], cfg, fmt=args.rounds_format)
    try:
        comp = report.run_comparison(cfg, specs, seeds, level=args.level, max_rounds=args.rounds, prebuilt=prebuilt,
                                     on_round=on_round, on_agent=on_agent, rounds=rounds, keep_rounds=False)
        rounds.close()
    except BaseException:
        rounds.abort()
        raise
    sweep = None
    if sweep_delays:
        sweep_seeds = seeds[:args.sweep_seeds]
        sweep = report.delay_sweep(cfg, specs, sweep_delays, sweep_seeds, requests=args.sweep_requests,
                                   level=args.level, on_round=on_round,
                                   on_point=on_point)
    bar.close()
    elapsed = time.perf_counter() - t0
    summary = report.build_summary(comp, command=command, sweep=sweep, files=files)
    summary["run_id"] = run_id
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
    report.write_json_atomic(folder / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse and validate (exit 2 on bad input), lock the output folder, evaluate, write."""
    from specstop_gym.cli import print_error
    from specstop_gym.fileio import FolderLock, LockedError, clean_orphans, disk_error_message

    args_list = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["evaluate.py", *args_list])
    try:
        args = parse_args(args_list)
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2, one line printed)
        return int(e.code or 0)
    lock = None
    gridded = args.paper or is_grid(args)
    try:
        if gridded:
            grid, cells, code, out = validate_grid(args)
        else:
            configs, seeds, prebuilt, out = validate(args)
        lock = FolderLock(out, command[:200]).acquire()
    except UsageError as e:
        print_error("evaluate.py", str(e))
        return 2
    except LockedError as e:
        print_error("evaluate.py", f"--out: {e}")
        return 2
    try:
        clean_orphans(out)
        if gridded:
            return _grid(args, grid, cells, code, out, command)
        return _run(args, configs, seeds, prebuilt, out, command)
    except UsageError as e:  # a Ray runtime that cannot be started or joined
        print_error("evaluate.py", str(e))
        return 2
    except KeyboardInterrupt:
        hint = f"; rerun with --out {shlex.quote(str(out))} to continue" if gridded else ""
        print_error("evaluate.py", f"interrupted; the files under their final names in {str(out)!r} are complete "
                                   f"(config.json says interrupted){hint}")
        return 130
    except OSError as e:
        msg = disk_error_message(e)
        if msg is None:
            raise
        print_error("evaluate.py", msg)
        return 1
    except RuntimeError as e:
        from specstop_gym.evaluation.grid_run import GridError

        if not isinstance(e, GridError):
            raise
        print_error("evaluate.py", f"{e}; the finished cells are kept in {str(out)!r}")
        return 1
    finally:
        lock.release()


def _run(args: Args, configs: list[Any], seeds: list[int], prebuilt: dict[str, Any], out: Path, command: str) -> int:
    import secrets
    from datetime import datetime

    from specstop_gym.evaluation import report

    run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    summaries = {}
    for cfg in configs:
        folder = out / cfg.name if len(configs) > 1 else out
        summaries[cfg.name] = evaluate_scenario(args, cfg, seeds, prebuilt[cfg.name], folder, command, run_id)
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
            "command": command, "run_id": run_id, "scenarios": {n: f"{n}/summary.json" for n in summaries},
            "schema_version": report.SCHEMA_VERSION})
    return 0


# --------------------------------------------------------------------------- grids
GRID_CONTENT = ("scenarios", "agents", "seeds", "seed_list", "requests", "rounds", "level", "set", "delay_ms",
                "delay_trace", "acceptance_trace", "grid_delays", "grid_traces", "seed_block")
"""Flags that say what a grid contains (given with --grid or --paper they are refused: the file says it)."""
NOT_FOR_GRIDS = ("sweep_delays", "sweep_seeds", "sweep_requests", "no_sweep", "rounds_format")
"""Flags of a single comparison that a grid does not use."""


def is_grid(args: Args) -> bool:
    """Whether the flags ask for a grid (a grid file, a delay or trace axis, seed blocks, Ray)."""
    return bool(args.grid is not None or args.grid_delays or args.grid_traces or args.seed_block is not None
                or args.ray or args.ray_address is not None)


def validate_grid(args: Args) -> tuple[Any, list[Any], str, Path]:
    """Check a grid run before any work: the grid (file or flags), every cell, the backend's
    availability and the output folder. Returns (grid, cells, code key, output folder)."""
    import importlib.util

    from specstop_gym.cli import MAX_SEEDS
    from specstop_gym.core.config import BOUNDS, MAX_DELAY_MS
    from specstop_gym.evaluation.cell import code_key
    from specstop_gym.evaluation.grid import expand, grid_from_flags, load_grid
    from specstop_gym.evaluation.report import check_writable

    defaults = Args()
    source = "--paper" if args.paper else ("--grid" if args.grid else None)
    if args.paper and args.grid:
        raise UsageError("--grid: give either --paper or --grid")
    if args.quick and not args.paper:
        raise UsageError("--quick: only with --paper")
    if source is not None:
        for name in GRID_CONTENT:
            if getattr(args, name) != getattr(defaults, name):
                raise UsageError(f"--{name.replace('_', '-')}: not with {source} (the grid file says what to run)")
    for name in NOT_FOR_GRIDS:
        if getattr(args, name) != getattr(defaults, name):
            raise UsageError(f"--{name.replace('_', '-')}: not used by grids (a grid is a set of comparisons without "
                             "the delay sweep; use --grid-delays for a delay axis)")
    if args.ray_address is not None:
        if args.ray:
            raise UsageError("--ray-address: give either --ray (a local runtime) or --ray-address (a cluster)")
        if not args.ray_address or len(args.ray_address) > 1000 or any(ch.isspace() for ch in args.ray_address):
            raise UsageError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {args.ray_address[:80]!r}")
    if (args.ray or args.ray_address) and importlib.util.find_spec("ray") is None:
        raise UsageError("--ray/--ray-address need Ray: pip install \"specstop-gym[ray]\" (or pip install ray)")
    if args.ray_address is not None:
        from specstop_gym.evaluation.backends import _reachable

        _reachable(args.ray_address)
    if args.out is not None:
        check_path("--out", args.out)
    code = code_key()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.paper:
        from specstop_gym.evaluation.paper import paper_grid_path

        grid = load_grid(paper_grid_path(args.quick))
        default_out = Path("results") / f"paper__{stamp}"
    elif args.grid is not None:
        check_path("--grid", args.grid)
        grid = load_grid(args.grid)
        default_out = Path("results") / grid.name
    else:
        seeds = resolve_seeds(args)
        check_count("--requests", args.requests, 1, int(BOUNDS["requests_per_episode"].hi))
        if args.rounds is not None:
            check_count("--rounds", args.rounds, 1, 10**9)
        if args.seed_block is not None:
            check_count("--seed-block", args.seed_block, 1, MAX_SEEDS)
        for d in args.grid_delays or []:
            check_number("--grid-delays", d, 0.0, MAX_DELAY_MS, "ms")
        if len(args.grid_delays or []) > 1000 or len(args.grid_traces or []) > 1000:
            raise UsageError("--grid-delays/--grid-traces: at most 1000 values")
        if args.grid_delays and args.grid_traces:
            raise UsageError("--grid-traces: one channel axis per grid; --grid-delays is given too")
        for t in args.grid_traces or []:
            check_path("--grid-traces", t)
        if len(args.agents) > 64 or any(len(a) > 1000 for a in args.agents):
            raise UsageError("--agents: at most 64 specs of at most 1000 characters each")
        labels = [a.strip() for a in args.agents]
        if len(set(labels)) != len(labels):
            raise UsageError(f"--agents lists an agent twice: {labels}")
        if len(set(args.scenarios)) != len(args.scenarios):
            raise UsageError("--scenarios lists a scenario twice")
        for flag, value in (("--delay-trace", args.delay_trace), ("--acceptance-trace", args.acceptance_trace)):
            if value is not None:
                check_path(flag, value)
        overrides = resolve_overrides(args)
        overrides.pop("requests_per_episode")
        name = "grid-" + ("+".join(args.scenarios) if len(args.scenarios) <= 3 else "multi")
        grid = grid_from_flags(name, scenarios=args.scenarios, agents=labels, seeds=seeds, seed_block=args.seed_block,
                               level=args.level, requests=args.requests, rounds=args.rounds, overrides=overrides,
                               delays_ms=args.grid_delays, traces=args.grid_traces)
        default_out = Path("results") / f"{name}__{stamp}"
    cells = expand(grid, code)
    out = Path(args.out) if args.out else default_out
    try:
        check_writable(out)
    except OSError as e:
        raise UsageError(str(e)) from None
    _check_grid_space(out, cells)
    return grid, cells, code, out


def _check_grid_space(out: Path, cells: list[Any]) -> None:
    """Refuse a grid whose rounds cannot fit the free space even at their fewest (as check_space)."""
    from specstop_gym.fileio import format_bytes, free_bytes

    free = free_bytes(out)
    if free is None:
        return
    low = 0
    for c in cells:
        if c.spec.rounds:
            n_agents = len(c.spec.agents) + (not any(a.split(":")[0] == "oracle" for a in c.spec.agents))
            low += estimate_rounds(c.spec.scenario, n_agents, len(c.spec.seeds), c.spec.max_rounds)[0]
    need = low * BYTES_PER_ROUND["parquet"] + (16 << 20)
    if free < need:
        raise UsageError(f"not enough free space in {str(out)!r}: the grid's rounds need at least {format_bytes(need)}, "
                         f"{format_bytes(free)} are free")


def _grid(args: Args, grid: Any, cells: list[Any], code: str, out: Path, command: str) -> int:
    from specstop_gym.evaluation.backends import make_backend
    from specstop_gym.evaluation.grid_run import format_cells_table, run_grid

    backend = make_backend(ray=args.ray, address=args.ray_address)
    try:
        summary = run_grid(grid, cells, out, backend, command=command, quiet=args.quiet, plots=not args.no_plots,
                           code=code)
    finally:
        backend.close()
    if args.paper:
        from specstop_gym.evaluation import paper

        result = paper.paper_from_grid(summary, out, quick=args.quick, command=command)
        if not args.quiet:
            print(paper.format_markdown(result))
            print(f"-> {out}")
        return 0
    if not args.quiet:
        print(format_cells_table(summary))
        print(f"({summary['cells_computed']} cells computed, {summary['cells_reused']} reused, "
              f"{summary['compute_wall_s']:.1f} s on {summary['backend']['backend']}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
