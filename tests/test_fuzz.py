"""Property-based fuzzing of every user-input boundary (issue 14).

Targets: the delay-trace CSV reader, the acceptance-trace JSONL reader, the three importers
(ping, fping, CSV columns), ``gym.make`` keyword arguments, and the flags of ``evaluate.py``,
``train.py`` and ``python -m specstop_gym.traces``. For every generated input the property is:

* either it is **accepted** and everything computed from it is finite (the loaded arrays; a
  few environment steps' observations and rewards; a few simulated rounds of the resolved
  scenario),
* or it is **refused cleanly**: the expected exception type (``TraceFormatError``,
  ``ConfigError``/``ValueError``, the scripts' usage error or argparse's exit 2) with a one-line
  message naming the field, the flag or the file and line;

and in both cases within **2 s** (``SIGALRM`` and a clock) and **1 GiB** of address space on
top of what the process already had (``RLIMIT_AS``): no traceback, no hang, no NaN, no giant
allocation.

Examples are generated with ``derandomize=True`` (a fixed sequence: CI is reproducible), no
example database, ``FUZZ_EXAMPLES`` per target (default 40; about 20 s in all). The counts per
target (inputs, refused, accepted) are written to the JSON file named by ``FUZZ_COUNTS`` when
it is set: ``python benchmarks/fuzz_report.py`` reruns the suite with more examples and prints
the table of docs/robustness.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import signal
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import specstop_gym
from specstop_gym.core.config import field_names
from specstop_gym.traces.errors import TraceFormatError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
try:
    import sb3_contrib  # noqa: F401
    import stable_baselines3  # noqa: F401

    HAVE_SB3 = True
except ImportError:  # train.py's flags need the sb3 extra; the other targets do not
    HAVE_SB3 = False
TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 1 << 30
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
COUNTS: dict[str, dict[str, int]] = defaultdict(lambda: {"inputs": 0, "refused": 0, "accepted": 0})
SCRATCH = Path(tempfile.mkdtemp(prefix="specstop_fuzz_"))


# ------------------------------------------------------------------------------------ harness
class Hang(Exception):
    """The 2 s alarm went off."""


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def limits() -> Iterator[None]:
    """At most TIME_LIMIT_S seconds and MEMORY_LIMIT more bytes of address space."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + MEMORY_LIMIT
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {TIME_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def all_finite(value: Any) -> bool:
    """Every number inside ``value`` (arrays, dicts, lists, dataclass-like objects) is finite."""
    if isinstance(value, np.ndarray):
        return bool(np.all(np.isfinite(value))) if value.dtype.kind in "fc" else True
    if isinstance(value, (float, np.floating)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    return True


def check(target: str, run: Callable[[], Any], names: list[str],
          refusals: tuple[type[BaseException], ...]) -> str:
    """Run one input (module docstring); count it; fail on a traceback, a hang, a giant
    allocation, a non-finite result or a refusal whose message names nothing given."""
    COUNTS[target]["inputs"] += 1
    t0 = time.perf_counter()
    try:
        with limits():
            result = run()
    except Hang:
        pytest.fail(f"{target}: hang (no answer within {TIME_LIMIT_S} s) for {names}")
    except MemoryError:
        pytest.fail(f"{target}: giant allocation (over 1 GiB) for {names}")
    except refusals as e:
        elapsed = time.perf_counter() - t0
        msg = str(e)
        assert elapsed <= TIME_LIMIT_S, f"{target}: refusal took {elapsed:.2f} s"
        assert msg and "\n" not in msg.strip() and "Traceback" not in msg, f"{target}: not one line: {msg!r}"
        assert any(n and n in msg for n in names), f"{target}: the message names none of {names}: {msg!r}"
        COUNTS[target]["refused"] += 1
        return "refused"
    elapsed = time.perf_counter() - t0
    assert elapsed <= TIME_LIMIT_S, f"{target}: took {elapsed:.2f} s for {names}"
    assert all_finite(result), f"{target}: non-finite result for {names}: {result!r}"[:2000]
    COUNTS[target]["accepted"] += 1
    return "accepted"


@pytest.fixture(scope="module", autouse=True)
def _warm_and_report() -> Iterator[None]:
    """Compile/load the kernels and import the scripts before any limit is set; write the counts."""
    import gymnasium as gym

    import evaluate
    import train

    env = gym.make("SpecStopRound-v0")
    env.reset(seed=0)
    env.step(0)
    # import everything the boundaries load lazily (an import cut by the alarm would break later ones)
    from specstop_gym.traces import cli  # noqa: F401

    if HAVE_SB3:
        import torch  # noqa: F401

        from specstop_gym.training.hyperparams import ALGORITHM_INFO

        for info in ALGORITHM_INFO.values():
            info.load_class()
        config, explicit = train.parse_args(["--out", str(SCRATCH / "warm")])
        train.prepare(config, explicit, "warm-up")
    evaluate.validate(evaluate.parse_args(["--agents", "static-k", "--out", str(SCRATCH / "warm-eval")]))
    _mini_simulation(specstop_gym.make_scenario("qwen-geometric"))
    yield
    path = os.environ.get("FUZZ_COUNTS")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        old.update({k: dict(v) for k, v in COUNTS.items()})
        Path(path).write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


def scratch_file(name: str, data: bytes) -> Path:
    p = SCRATCH / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------ values
SPECIAL_NUMBERS = [0, 1, -1, 0.5, 2, 3, 8, 12, 1e-320, 1e-300, 1e-3, 0.01, 0.1, 3.0, 10.0, 10.5, 20.0, 255, 256,
                   257, 1e3, 6e5, 600000.0001, 1e6, 1e9, 1e10, 1e12, 1e300, 2**31, 2**63, 10**30, -1e300,
                   float("nan"), float("inf"), -float("inf")]
numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-10**30, max_value=10**30), st.floats(0, 1000))
junk_text = st.one_of(st.sampled_from(["", "abc", "nan", "inf", "1e309", "-0", " 5 ", "1_000", "0x10", "１２",
                                       "../x", "a" * 300, "lognormal", "gamma", "markov", "trace"]),
                      st.text(max_size=12))
values = st.one_of(numbers, st.booleans(), st.none(), junk_text,
                   st.lists(numbers, max_size=6), st.lists(st.lists(numbers, max_size=3), max_size=3))

def rare(common: Any, extremes: list[Any]) -> Any:
    """``common`` values, and one of ``extremes`` about one time in twelve."""
    return st.integers(0, 11).flatmap(lambda i: st.sampled_from(extremes) if i == 0 else common)


CHOICES = {"channel": ["constant", "iid", "markov", "drift", "trace", "wifi"],
           "acceptance": ["geometric", "profile", "latent", "trace", "x"],
           "delay_distribution": ["lognormal", "gamma", "weibull"], "drift_mode": ["step", "linear", "cubic"],
           "reward_mode": ["latency", "token_credit", "speed"],
           "delay_trace_gaps": ["hold", "skip", "refuse", "interpolate"]}
FIELDS = field_names()


def _in_bounds(name: str) -> Any:
    """Values at and between a numeric field's documented bounds (and just past them)."""
    from specstop_gym.core.config import BOUNDS

    b = BOUNDS[name]
    hi = float(b.hi)
    edge = st.sampled_from([b.lo, hi, hi * 1.000001, b.lo - 1e-9, (b.lo + hi) / 2])
    inside = st.floats(min_value=float(b.lo), max_value=hi)
    if name in ("max_draft", "n_tokens", "requests_per_episode"):
        return st.one_of(st.integers(int(b.lo), min(int(hi), 64)), st.sampled_from([int(b.lo), int(hi), int(hi) + 1]))
    if name in ("markov_rtt_mean_ms", "markov_rtt_cv", "markov_bandwidth_kbps", "profile"):
        return st.lists(st.one_of(edge, inside), min_size=1, max_size=3)
    if name in ("markov_generator_per_ms", "drift_schedule"):
        return st.just(None)
    return st.one_of(edge, inside)


@st.composite
def field_value(draw: Any, name: str) -> Any:
    """Values of the field's kind (within and at its bounds), or anything."""
    from specstop_gym.core.config import BOUNDS

    if name in BOUNDS and draw(st.integers(0, 4)):
        v = draw(_in_bounds(name))
        if v is not None:
            return v
    if name in CHOICES and draw(st.booleans()):
        return draw(st.sampled_from(CHOICES[name]))
    if name in ("delay_trace", "acceptance_trace") and draw(st.booleans()):
        return draw(st.sampled_from(["delay/synthetic_wifi_jitter.csv", "acceptance/qwen_geometric.jsonl",
                                     "/no/such/file.csv", str(SCRATCH), "/dev/zero"]))
    if name == "markov_generator_per_ms" and draw(st.booleans()):
        r = draw(st.sampled_from([1e-4, 0.01, 0.1, 0.2, 1e3]))
        return ((-r, r), (r, -r))
    if name == "drift_schedule" and draw(st.booleans()):
        return ((0.0, draw(numbers)), (draw(numbers), draw(numbers)))
    return draw(values)


@st.composite
def overrides(draw: Any, max_fields: int = 3) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(FIELDS + ["delay_msec"]), min_size=1, max_size=max_fields, unique=True))
    return {n: draw(field_value(n)) for n in names}


# ------------------------------------------------------------------------------------ gym.make
@FUZZ
@given(kw=overrides(), scenario=rare(st.sampled_from(specstop_gym.scenario_names()), ["", "nope", "qwen", 5, None]),
       token=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_gym_make_kwargs(kw: dict[str, Any], scenario: str, token: bool, seed: int) -> None:
    import gymnasium as gym

    def run() -> dict[str, Any]:
        env = gym.make("SpecStop-v0" if token else "SpecStopRound-v0", scenario=scenario, **kw)
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        out: dict[str, Any] = {"obs": [obs], "rewards": []}
        for _ in range(20):
            obs, reward, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
            out["obs"].append(obs)
            out["rewards"].append(float(reward))
            if term or trunc:
                break
        out["info"] = {k: v for k, v in info.items() if isinstance(v, (int, float, np.ndarray))}
        env.close()
        return out

    names = list(kw) + [str(v)[:20] for v in kw.values() if isinstance(v, str)] + ["scenario", str(scenario)[:20]]
    check("gym.make kwargs", run, names, (ValueError,))


# ------------------------------------------------------------------------------------ delay CSV
cells = st.one_of(st.floats(0, 1e6).map(lambda x: f"{x:g}"), st.integers(0, 10**6).map(str),
                  st.sampled_from(["", "abc", "nan", "inf", "-5", "0", "1e308", "1e400", "99999999999999999999",
                                   "-0", " 7 ", "1,5", "１２", "+3", ".5", "5."]), st.text(max_size=6))


@st.composite
def delay_csv(draw: Any) -> bytes:
    """A delay trace CSV: half of them clean (valid up to the bounds), the rest with 1-3 defects."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    clean = draw(st.booleans())
    head = "t_ms,rtt_ms,state" if draw(st.booleans()) else "t_ms,rtt_ms"
    if not clean and draw(st.integers(0, 3)) == 0:
        head = draw(st.sampled_from(["rtt_ms,t_ms", "t_ms,rtt_ms,extra", "t_ms", "", "t_ms,rtt_ms,rtt_ms",
                                     "T_MS,RTT_MS"]))
    comments = draw(st.lists(st.sampled_from(["# source: fuzz", "# units: ms", "#", "free text", "# lost: 3"]),
                             max_size=3, unique=True))
    n = draw(st.integers(1, 25))
    gaps = draw(st.lists(rare(st.floats(0, 5e3), [0.0, 1e9, 3e10]), min_size=n, max_size=n))
    t = np.cumsum(gaps)
    rtt = draw(st.lists(rare(st.floats(1e-3, 2e3), [1e-9, 6e5, 600000.5, 1e308]), min_size=n, max_size=n))
    states = draw(st.lists(rare(st.integers(0, 3), [31, 32, 10**17]), min_size=n, max_size=n))
    rows = [[repr(float(t[i])), repr(float(rtt[i])), str(states[i])][: head.count(",") + 1] for i in range(n)]
    if not clean:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, n - 1))
            if rows[i] and draw(st.integers(0, 4)):
                rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(cells)
            else:
                rows[i] = rows[i][:-1] if rows[i] else ["1", "2", "3", "4"]
    lines = comments + [head] + [",".join(r) for r in rows]
    return ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))).encode("utf-8")


@FUZZ
@given(data=delay_csv())
def test_fuzz_delay_csv_reader(data: bytes) -> None:
    from specstop_gym.traces.bounds import check_delay_trace
    from specstop_gym.traces.delay import load_delay_trace

    path = scratch_file("fuzz_delay.csv", data)

    def run() -> dict[str, Any]:
        tr = load_delay_trace(path)
        check_delay_trace(tr)
        return {"t": tr.t_ms, "r": tr.rtt_ms, "s": None if tr.state is None else tr.state.astype(float)}

    check("delay CSV reader", run, [f"{path} line "], (TraceFormatError,))


# ------------------------------------------------------------------------------------ acceptance JSONL
json_values = st.one_of(st.integers(-3, 40), st.integers(-10**30, 10**30), st.floats(allow_nan=False),
                        st.booleans(), st.none(), st.text(max_size=5), st.lists(st.floats(0, 1), max_size=5))


@st.composite
def acceptance_jsonl(draw: Any) -> bytes:
    """An acceptance trace: half of them clean, the rest with 1-2 defects."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    clean = draw(st.booleans())
    header: Any = {"format": "specstop-acceptance-v1", "metadata": {"source": "fuzz"}}
    if not clean and draw(st.integers(0, 3)) == 0:
        header = draw(st.sampled_from([{"format": "specstop-acceptance-v1"}, {"format": "v0"}, {"metadata": {}}, []]))
    lines = [json.dumps(header)]
    with_conf = draw(st.booleans())
    with_ms = draw(st.booleans())
    for _ in range(draw(st.integers(1, 20))):
        k = draw(st.one_of(st.integers(1, 12), st.sampled_from([1, 64, 1024])))
        g = draw(st.integers(0, k))
        rec: dict[str, Any] = {"run_length": g, "censored": g == k, "draft_length": k}
        if with_conf:
            rec["confidences"] = draw(st.lists(st.floats(0, 1), min_size=k, max_size=k)) if k <= 12 else [0.5] * k
        if with_ms:
            rec["draft_ms"] = draw(st.one_of(st.floats(0, 1e3), st.sampled_from([0.0, 3.6e6])))
            rec["verify_ms"] = draw(st.floats(0, 1e3))
        lines.append(json.dumps(rec))
    if not clean:
        mutate, junk = draw(st.sampled_from([(1, 0), (0, 1), (1, 1), (2, 0)]))
        for _ in range(mutate):  # a record's field set to an arbitrary JSON value
            j = draw(st.integers(1, len(lines) - 1))
            rec = json.loads(lines[j])
            rec[draw(st.sampled_from(["run_length", "censored", "draft_length", "draft_ms", "verify_ms",
                                      "confidences", "extra"]))] = draw(json_values)
            lines[j] = json.dumps(rec)
        for _ in range(junk):  # then a line that is not a record at all
            j = draw(st.integers(1, len(lines)))
            lines.insert(j, draw(st.sampled_from(
                ["{", "NaN", '{"run_length": 1, "run_length": 2}', "[" * 5000, '{"draft_length": 1e999}',
                 '{"x": ' + "1" * 5000 + "}", '{"run_length": 0, "censored": false, "draft_length": 1025}'])))
    return ("\n".join(lines) + "\n").encode()


@FUZZ
@given(data=acceptance_jsonl())
def test_fuzz_acceptance_jsonl_reader(data: bytes) -> None:
    from specstop_gym.traces.acceptance import load_acceptance_trace

    path = scratch_file("fuzz_acceptance.jsonl", data)

    def run() -> dict[str, Any]:
        tr = load_acceptance_trace(path)
        return {"survival": tr.empirical_survival(min(tr.max_draft_length, 64)),
                "g": tr.run_length.astype(float), "q": None if tr.confidences is None else np.nan_to_num(tr.confidences)}

    check("acceptance JSONL reader", run, [f"{path} line "], (TraceFormatError,))


# ------------------------------------------------------------------------------------ importers
seqs = st.one_of(st.integers(0, 70000), st.sampled_from([10**11, 10**12, 10**30, 2**63]))


@st.composite
def ping_log(draw: Any) -> bytes:
    """ping output: half of them clean, the rest with 1-2 defects."""
    clean = draw(st.booleans())
    stamped = draw(st.booleans())
    out = []
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(["PING x (1.2.3.4) 56(84) bytes of data.", "$ ping -i 0.2 x",
                                         "# interval_ms: 200", "user@box:~$ sudo ping -i 0.5 host"])))
    seq = draw(st.integers(0, 70000))
    for _ in range(draw(st.integers(1, 20))):
        seq = seq + draw(st.integers(1, 3))
        ts = f"[{1723456789 + seq * 0.2 + draw(st.floats(0, 0.1)):.6f}] " if stamped else ""
        kind = draw(st.integers(0, 9))
        if kind < 8:
            tm = draw(st.floats(0.01, 2000).map(lambda x: f"{x:.3g}"))
            out.append(f"{ts}64 bytes from 1.2.3.4: icmp_seq={seq} ttl=57 time={tm} ms")
        elif kind == 8:
            out.append(f"{ts}no answer yet for icmp_seq={seq}")
        else:
            out.append(f"Request timeout for icmp_seq {seq}")
    if not clean:
        for _ in range(draw(st.integers(1, 2))):
            bad = draw(st.one_of(
                st.sampled_from(["# interval_ms: -100", "# interval_ms: 1e9", "# interval_ms: abc",
                                 "user@box:~$ sudo ping -i 0 host", "^C", "time=" * 300, "$" * 1000 + "ping",
                                 "a/" * 500 + "ping x", "64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1e400 ms",
                                 "64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=700000 ms"]),
                seqs.map(lambda q: f"64 bytes from 1.2.3.4: icmp_seq={q} ttl=57 time=1 ms"),
                cells.map(lambda c: f"64 bytes from 1.2.3.4: icmp_seq=5 ttl=57 time={c} ms"),
                st.text(max_size=40)))
            out.insert(draw(st.integers(0, len(out))), bad)
    return ("\n".join(out) + "\n").encode()


@st.composite
def fping_log(draw: Any) -> bytes:
    clean = draw(st.booleans())
    out = []
    idx = draw(st.integers(0, 1000))
    for _ in range(draw(st.integers(1, 20))):
        idx = idx + 1
        if draw(st.integers(0, 5)):
            rtt = draw(st.floats(0.01, 2000).map(lambda x: f"{x:.3g}"))
            out.append(f"8.8.8.8 : [{idx}], 64 bytes, {rtt} ms (15.2 avg, 0% loss)")
        else:
            out.append(f"8.8.8.8 : [{idx}], timed out (15.2 avg, 50% loss)")
    if not clean:
        bad = draw(st.one_of(seqs.map(lambda q: f"8.8.8.8 : [{q}], 64 bytes, 1 ms (1 avg, 0% loss)"),
                             cells.map(lambda c: f"8.8.8.8 : [3], 64 bytes, {c} ms (1 avg, 0% loss)"),
                             st.just("1.1.1.1 : [2], 64 bytes, 3 ms (3 avg, 0% loss)"), st.text(max_size=30)))
        out.insert(draw(st.integers(0, len(out))), bad)
    return ("\n".join(out) + "\n").encode()


@st.composite
def csv_columns(draw: Any) -> bytes:
    clean = draw(st.booleans())
    head = "time,delay,st" if draw(st.booleans()) else "time,delay"
    if not clean and draw(st.integers(0, 3)) == 0:
        head = draw(st.sampled_from(["delay,time", "x,y", "time;delay"]))
    rows = []
    t = 0.0
    for _ in range(draw(st.integers(1, 20))):
        t += draw(st.floats(0, 10))
        rows.append([f"{t:g}", f"{draw(st.floats(0.001, 500)):g}", str(draw(st.integers(0, 3)))][: head.count(",") + 1])
    if not clean:
        i = draw(st.integers(0, len(rows) - 1))
        rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(cells)
    return ("\n".join([head] + [",".join(r) for r in rows]) + "\n").encode()


@FUZZ
@given(kind=st.sampled_from(["ping", "fping", "csv"]), data=st.data())
def test_fuzz_importers(kind: str, data: Any) -> None:
    from specstop_gym.traces.importers import import_csv_columns, import_fping, import_ping

    if kind == "ping":
        path = scratch_file("fuzz_ping.txt", data.draw(ping_log()))
        fn: Callable[[], Any] = lambda: import_ping(path)[0]
    elif kind == "fping":
        path = scratch_file("fuzz_fping.txt", data.draw(fping_log()))
        fn = lambda: import_fping(path)[0]
    else:
        path = scratch_file("fuzz_columns.csv", data.draw(csv_columns()))
        unit = data.draw(st.sampled_from(["ms", "s", "us"]))
        state = data.draw(st.sampled_from([None, "st"]))
        fn = lambda: import_csv_columns(path, "time", "delay", unit, unit, state_column=state)

    def run() -> dict[str, Any]:
        tr = fn()
        return {"t": tr.t_ms, "r": tr.rtt_ms}

    check(f"importer {kind}", run, [f"{path} line "], (TraceFormatError,))


# ------------------------------------------------------------------------------------ script flags
def _mini_simulation(cfg: Any) -> dict[str, Any]:
    """A few rounds of static-k on the resolved scenario: the results must be finite."""
    from agents.registry import make_agent
    from specstop_gym.evaluation import run_agent

    run = run_agent(make_agent("static-k", cfg, n_runs=1, k=min(2, cfg.max_draft)), cfg, [0], max_rounds=3,
                    keep_rounds=True)
    return {"cols": run.columns, "lat": run.per_token_latency_ms if run.total_tokens.all() else np.zeros(1)}


flag_values = st.one_of(numbers.map(str), junk_text, st.sampled_from(["0", "1", "-1", "2", "99999999999999999999",
                                                                     "1e3", "nan", "inf", "0-1000000000", "3-1"]))
EVAL_FLAGS = ["--seeds", "--seed-list", "--requests", "--rounds", "--delay-ms", "--sweep-delays", "--sweep-seeds",
              "--sweep-requests", "--set", "--level", "--scenarios", "--agents", "--delay-trace",
              "--acceptance-trace", "--rounds-format"]
TRAIN_FLAGS = ["--n-envs", "--seed", "--total-timesteps", "--eval-freq", "--checkpoint-freq", "--torch-threads",
               "--device", "--verbose", "--eval-seeds", "--set", "--hyperparams", "--algo", "--level", "--scenario",
               "--resume"]
HYPER = ["learning_rate", "n_steps", "batch_size", "gamma", "gae_lambda", "net_arch", "clip_range", "ent_coef",
         "buffer_size", "n_epochs", "activation_fn", "max_grad_norm", "policy_kwargs"]


@st.composite
def flag_args(draw: Any, flags: list[str]) -> tuple[list[str], list[str]]:
    argv: list[str] = []
    names: list[str] = []
    for flag in draw(st.lists(st.sampled_from(flags), min_size=1, max_size=3, unique=True)):
        names += [flag, flag[2:].replace("-", "_")]
        if flag == "--set":
            n = draw(st.sampled_from(FIELDS))
            names.append(n)
            v = draw(field_value(n))
            argv += [flag, f"{n}={json.dumps(v) if isinstance(v, (list, tuple)) else v}"]
        elif flag == "--hyperparams":
            k = draw(st.sampled_from(HYPER))
            names.append(k)
            argv += [flag, f"{k}={draw(st.one_of(flag_values, st.sampled_from(['[64, 64]', '[-1]', '[100000]', '[]', '{}', 'relu', 'lin_0.5', 'lin_-1'])))}"]
        elif flag == "--level":
            argv += [flag, draw(st.sampled_from(["round", "token", "episode"]))]
        elif flag in ("--scenarios", "--scenario"):
            argv += [flag, draw(st.one_of(st.sampled_from(specstop_gym.scenario_names()), junk_text)) or "x"]
        elif flag == "--agents":
            argv += [flag, draw(st.sampled_from(["static-k:k=3", "static-k:k=99", "heuristic", "nope", "sb3:",
                                                  f"sb3:{SCRATCH}/none.zip", "static-k:k=1e400", "specdec++:threshold=2"]))]
        elif flag in ("--delay-trace", "--acceptance-trace", "--resume"):
            argv += [flag, draw(st.sampled_from(["/no/such", str(SCRATCH), "/dev/zero", "x" * 5000]))]
            names.append(argv[-1][:20])  # a file is named by its path
        elif flag == "--device":
            argv += [flag, draw(st.sampled_from(["cpu", "cuda", "cuda:99", "bogus", "auto", "mps"]))]
        elif flag == "--algo":
            argv += [flag, draw(st.sampled_from(["PPO", "dqn", "SAC", "A2C"]))]
        elif flag == "--rounds-format":
            argv += [flag, draw(st.sampled_from(["parquet", "csv.gz", "csv", "xlsx"]))]
        else:
            argv += [flag, draw(flag_values) or "0"]
    return argv, names


def _refusal_from_exit(e: SystemExit, err: str) -> ValueError:
    if e.code in (0, None):
        raise AssertionError("--help-like exit 0 in a fuzz input")
    assert e.code == 2, f"argparse exit {e.code}"
    return ValueError(err.strip())


class Refused(ValueError):
    """A script refused its arguments (usage error or argparse)."""


@FUZZ
@given(args=flag_args(EVAL_FLAGS))
def test_fuzz_evaluate_flags(args: tuple[list[str], list[str]]) -> None:
    import evaluate
    from specstop_gym.cli import UsageError

    argv, names = args
    out = SCRATCH / "eval_out"

    def run() -> dict[str, Any]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parsed = evaluate.parse_args([*argv, "--out", str(out), "--quiet"]
                                             + ([] if "--agents" in argv else ["--agents", "static-k"]))
                configs, seeds, _prebuilt, _out = evaluate.validate(parsed)
        except SystemExit as e:
            raise Refused(str(_refusal_from_exit(e, err.getvalue()))) from None
        except UsageError as e:
            raise Refused(f"evaluate.py: error: {e}") from None
        return {"configs": [c.to_dict() for c in configs], "seeds": [float(s) for s in seeds],
                "sim": [_mini_simulation(c) for c in configs[:1]]}

    check("evaluate.py flags", run, names, (Refused,))


@FUZZ
@given(args=flag_args(TRAIN_FLAGS))
def test_fuzz_train_flags(args: tuple[list[str], list[str]]) -> None:
    if not HAVE_SB3:
        pytest.skip("train.py needs the sb3 extra")
    import train
    from specstop_gym.cli import UsageError

    argv, names = args
    out = SCRATCH / f"train_out_{COUNTS['train.py flags']['inputs']}"

    def run() -> dict[str, Any]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                config, explicit = train.parse_args([*argv, "--out", str(out)] if "--resume" not in argv else argv)
                plan = train.prepare(config, explicit, "fuzz")
        except SystemExit as e:
            raise Refused(str(_refusal_from_exit(e, err.getvalue()))) from None
        except UsageError as e:
            raise Refused(f"train.py: error: {e}") from None
        return {"scenario": plan.scenario.to_dict(), "hp": plan.hyperparams, "sim": _mini_simulation(plan.scenario)}

    check("train.py flags", run, names, (Refused,))


TRACES_FLAGS = {
    "summary": ["--window-ms", "--min-shift-ms", "--min-rel-shift", "--min-z", "--max-draft"],
    "fit": ["--states", "--smooth-ms"],
    "convert": ["--interval-ms", "--delimiter"],
}


@FUZZ
@given(cmd=st.sampled_from(sorted(TRACES_FLAGS)), data=st.data())
def test_fuzz_traces_cli_flags(cmd: str, data: Any) -> None:
    from specstop_gym.traces.cli import main
    from specstop_gym.traces.manifest import data_path

    flags = data.draw(st.lists(st.sampled_from(TRACES_FLAGS[cmd]), min_size=1, max_size=2, unique=True))
    argv: list[str] = []
    for f in flags:
        argv += [f, data.draw(flag_values) or "0"]
    shipped = str(data_path("delay/synthetic_wifi_jitter.csv"))
    if cmd == "summary":
        target = data.draw(st.sampled_from([shipped, str(data_path("acceptance/qwen_geometric.jsonl"))]))
        full = ["summary", target, "--json", *argv]
    elif cmd == "fit":
        full = ["fit", shipped, "--out", str(SCRATCH / "fit.json"), *argv]
    else:
        ping = scratch_file("cli_ping.txt", b"64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\n"
                                            b"64 bytes from 1.2.3.4: icmp_seq=3 ttl=57 time=2 ms\n")
        full = ["convert", str(ping), str(SCRATCH / "cli_out.csv"), "--format", "ping", *argv]

    def run() -> dict[str, Any]:
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(full)
        except SystemExit as e:
            raise Refused(str(_refusal_from_exit(e, err.getvalue()))) from None
        if code != 0:
            raise Refused(err.getvalue().strip())
        text = out.getvalue()
        return json.loads(text) if cmd == "summary" and text.lstrip().startswith("{") else {}

    check("traces CLI flags", run, flags, (Refused,))


# ------------------------------------------------------------------------------------ the harness itself
def test_harness_fails_on_hang_nan_allocation_traceback_and_unnamed_refusal() -> None:
    """Each failure mode the fuzz targets look for is caught (the checks can fail)."""
    def hang() -> None:
        while True:
            pass

    def giant() -> Any:
        return np.ones(1 << 31)  # 16 GiB

    def unnamed() -> None:
        raise ValueError("something is wrong")

    def traceback() -> None:
        raise KeyError("x")

    cases: list[tuple[Callable[[], Any], str]] = [
        (hang, "hang"), (giant, "giant allocation"), (lambda: {"x": np.array([1.0, np.nan])}, "non-finite"),
        (unnamed, "names none"), (traceback, "KeyError"),
    ]
    for fn, expected in cases:
        with pytest.raises((pytest.fail.Exception, AssertionError, KeyError)) as err:
            check("harness self-test", fn, ["field_x"], (ValueError,))
        assert expected in str(err.value) or expected in type(err.value).__name__, (expected, err.value)
    assert check("harness self-test", lambda: {"x": np.ones(3)}, ["x"], (ValueError,)) == "accepted"
    assert check("harness self-test", lambda: (_ for _ in ()).throw(ValueError("field_x bad")), ["field_x"],
                 (ValueError,)) == "refused"
    COUNTS.pop("harness self-test", None)
