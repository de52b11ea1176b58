"""Cold start (specstop_gym.core._coldstart): the interpreted twin of the kernels gives the compiled
kernels' bits, and a process without compiled kernels steps at once, then hands over to them.

Equality is exact (bytes of every output), step for step, on every kind of acceptance (profile,
latent with signal and per-token noise, recorded trace) and channel (i.i.d. lognormal and gamma,
drift step and linear, Markov with per-state bandwidth, trace), at both levels, single and vector
(serial and threaded step kernel), and for the array kernels of the acceptance and channel classes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numba
import numpy as np
import pytest

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym.core import _coldstart
from specstop_gym.core import kernels as kn
from specstop_gym.scenarios import build_simulator, make_scenario

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("qwen-geometric", {}),
    ("qwen-geometric", {"delay_distribution": "gamma", "delay_cv": 0.5}),
    ("llama-heavy-head", {}),
    ("qwen-latent-signal", {"latent_eps_sigma": 0.3}),
    ("drift", {}),
    ("drift", {"drift_mode": "linear", "requests_per_episode": 1}),
    ("markov-csi", {}),
    ("markov-nr5g", {}),
    ("trace-cellular", {}),
]
SHORT = {"n_tokens": 24}  # short requests: episodes end, rows reset, often


def _compiled(name: str):
    f = getattr(kn, name)
    return f.jit if isinstance(f, _coldstart.Kernel) else f


@pytest.fixture(scope="module")
def twin():
    return _coldstart.build_twin(kn)


def _use(monkeypatch, source) -> None:
    for name in kn.ENTRY_POINTS:
        monkeypatch.setattr(kn, name, source(name))


def _flat(info: dict, prefix: str = "") -> list[tuple[str, bytes]]:
    out = []
    for key in sorted(info):
        value = info[key]
        if isinstance(value, dict):
            out += _flat(value, prefix + key + ".")
        elif isinstance(value, np.ndarray) and value.dtype == object:
            out.append((prefix + key, repr([None if v is None else v.tobytes() for v in value]).encode()))
        else:
            out.append((prefix + key, np.asarray(value).tobytes()))
    return out


def _vector_run(env_id: str, scenario: str, overrides: dict, n: int, steps: int = 40) -> list:
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", scenario=scenario,
                       max_episode_steps=30, **{**SHORT, **overrides})
    obs, info = env.reset(seed=11)
    rng = np.random.default_rng(5)
    out = [obs.tobytes(), _flat(info), env.unwrapped.action_masks().tobytes()]
    for _ in range(steps):
        obs, rew, term, trunc, info = env.step(rng.integers(0, env.single_action_space.n, n))
        out += [obs.tobytes(), rew.tobytes(), term.tobytes(), trunc.tobytes(), _flat(info)]
    return out


def _single_run(env_id: str, scenario: str, overrides: dict, steps: int = 60) -> list:
    env = gym.make(env_id, scenario=scenario, **{**SHORT, **overrides})
    obs, info = env.reset(seed=4)
    rng = np.random.default_rng(2)
    out = [obs.tobytes(), repr(info)]
    for _ in range(steps):
        obs, rew, term, _, info = env.step(int(rng.integers(0, env.action_space.n)))
        out += [obs.tobytes(), repr(rew), term, repr(info)]
        if term:
            out.append(env.reset()[0].tobytes())
    return out


def _core_run(scenario: str, overrides: dict) -> list:
    """The array kernels behind the acceptance and channel classes and the counter-based draws."""
    from specstop_gym.core import rng as crng

    sim = build_simulator(make_scenario(scenario, **overrides), batch_size=4)
    keys = np.array([1, 2**63 + 5, 77, 2**64 - 3], np.uint64)
    t = np.array([0.0, 1234.5, 20000.0, 99999.0])
    idx = np.arange(4)
    sim.channel.init_rows(sim.rows, idx, keys)
    state = sim.channel.state_at(sim.rows, idx, keys, t)
    out = [sim.acceptance.draw(keys, idx, sim.max_draft), sim.acceptance.draw_with_signal(keys, 3, sim.max_draft, 0.4),
           state, sim.channel.sample_rtt(sim.rows, idx, keys, t, state, slot=1),
           sim.channel.mean_rtt_ms(sim.rows, idx, t, state),
           crng.uniform(keys, crng.STREAM_RTT, idx), crng.normal(keys, crng.STREAM_RTT, idx)]
    return [np.asarray(x).tobytes() if not isinstance(x, tuple) else [np.asarray(y).tobytes() for y in x if y is not None]
            for x in out]


@pytest.mark.parametrize("scenario, overrides", CASES, ids=[f"{s}{'+' if o else ''}{'+'.join(o)}" for s, o in CASES])
def test_interpreted_twin_gives_the_compiled_bits(scenario, overrides, twin, monkeypatch) -> None:
    runs = {}
    for label, source in (("compiled", _compiled), ("twin", lambda name: getattr(twin, name))):
        with monkeypatch.context() as mp:
            _use(mp, source)
            mp.setattr(kn, "PARALLEL_MIN_ROWS", 4)  # n = 5 steps with the threaded kernel, n = 3 without
            with np.errstate(all="ignore"):
                runs[label] = [_vector_run(env_id, scenario, overrides, n) for env_id in ("SpecStop-v0", "SpecStopRound-v0")
                               for n in (3, 5)]
                runs[label] += [_single_run(env_id, scenario, overrides) for env_id in ("SpecStop-v0", "SpecStopRound-v0")]
                runs[label].append(_core_run(scenario, overrides))
    assert runs["twin"] == runs["compiled"]


def _compiled_loop(fn):
    @numba.njit
    def run(xs, out):
        for i in range(xs.shape[0]):
            out[i] = fn(xs[i])
    return run


def test_twin_primitives_equal_numbas() -> None:
    """Each math function the twin may use, against numba's compiled call, bit for bit."""
    cm = _coldstart._CMath()
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e300, -1e300, 709.8, 710.0, -745.2, -746.0,
                        np.inf, -np.inf, np.nan, 2.0**52, -(2.0**52) + 0.5])
    xs = np.concatenate([special, rng.standard_normal(20000), rng.random(20000), 10 ** rng.uniform(-300, 300, 20000),
                         -rng.random(5000) * 2.0, rng.uniform(-800.0, 800.0, 5000), rng.uniform(0.0, 50.0, 5000)])
    for name in ("log", "log1p", "exp", "expm1", "sqrt", "tanh", "lgamma"):
        mine = getattr(cm, name)
        got = np.array([mine(x) for x in xs])
        ref = np.empty_like(xs)
        _compiled_loop(getattr(math, name))(xs, ref)
        assert np.array_equal(got.view(np.int64), ref.view(np.int64)) or (
            np.array_equal(np.isnan(got), np.isnan(ref))
            and np.array_equal(got[~np.isnan(got)].view(np.int64), ref[~np.isnan(ref)].view(np.int64))), name
    finite = xs[np.isfinite(xs) & (np.abs(xs) < 2.0**62)]
    floor = numba.njit(lambda x: math.floor(x))
    assert [cm.floor(x) for x in finite] == [floor(x) for x in finite]


def test_twin_refuses_primitives_it_cannot_reproduce(tmp_path: Path) -> None:
    src = tmp_path / "fake_kernels.py"
    src.write_text(textwrap.dedent('''
        import numpy as np
        from numba import njit

        @njit
        def f(x):
            return np.exp(x)
    '''))
    module = type(sys)("fake_kernels")
    module.__file__ = str(src)
    with pytest.raises(_coldstart.TwinSourceError, match=r"np\.exp"):
        _coldstart.build_twin(module)


def test_a_failing_twin_call_is_undone_and_compiled(monkeypatch, tmp_path: Path) -> None:
    """Should the twin raise mid-way, the arrays it changed are restored and the compiled kernel runs."""
    state = _coldstart._State(kn, tmp_path)
    env = gym.make_vec("SpecStopRound-v0", num_envs=4, vectorization_mode="vector_entry_point", **SHORT)
    env.reset(seed=1)
    sim = env.unwrapped.sim
    args = (sim.state_ints, sim.state_floats, sim.obs_buffer, sim.kernel_params, sim.kernel_ints, np.arange(4),
            np.full(4, 2, np.int64), sim.out_ints, sim.out_floats)
    before = [a.copy() if a.flags.writeable else a for a in args]  # P, I stay read-only (one compiled signature)

    def broken(S, F, O, *rest):
        S[:] = -1
        O[:] = 7.0
        raise ZeroDivisionError("twin")

    fake = type(sys)("fake_twin")
    fake.step_round = broken
    kernel = _coldstart.Kernel("step_round", _compiled("step_round"), state)
    done, _ = state._interpret(kernel, fake, args)
    assert not done and all(np.array_equal(a, b) for a, b in zip(args, before))
    state.ready.add(_coldstart._key("step_round", _coldstart._signature(args)))
    with monkeypatch.context() as mp:
        mp.setattr(kn, "step_round", kernel)
        n = kernel(*args)  # ready: numba's dispatcher runs, and takes the module attribute over
        assert kn.step_round is kernel.jit
    expected = [b.copy() if b.flags.writeable else b for b in before]
    assert n == _compiled("step_round")(*expected[:5], *expected[5:]) == 4
    assert all(np.array_equal(a, b) for a, b in zip(args, expected))


def test_without_a_background_compiler_kernels_compile_in_the_process(monkeypatch, tmp_path: Path) -> None:
    """A compiler process that dies at once (here: not Python) is started a few times, then the
    process compiles the kernel itself: the call still returns the compiled kernel's result."""
    state = _coldstart._State(kn, tmp_path)
    state.budget = 0.0  # no twin: wait for compiled code
    monkeypatch.setattr(sys, "executable", "/bin/false")
    monkeypatch.setattr(_coldstart, "_in_numba_cache", lambda jit, sig: False)  # as on a fresh machine
    kernel = _coldstart.Kernel("actions_in_range", _compiled("actions_in_range"), state)
    with monkeypatch.context() as mp:
        mp.setattr(kn, "actions_in_range", kernel)
        assert kernel(np.array([0, 1, 1], np.int64), np.int64(2)) is True
        assert kernel(np.array([0, 2], np.int64), np.int64(2)) is False
    assert state.spawns == _coldstart.MAX_SPAWNS and state.interpreted_calls == {}


COLD = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import gymnasium as gym, numpy as np, specstop_gym
    from specstop_gym.core import _coldstart
    env = gym.make("SpecStopRound-v0", n_tokens=24)
    obs, _ = env.reset(seed=3)
    out = [obs.tolist()]
    for i in range(30):
        obs, rew, term, trunc, info = env.step(i % 8)
        out.append([obs.tolist(), repr(rew), term])
        if term:
            out.append(env.reset()[0].tolist())
    status = _coldstart.status()
    print(json.dumps({"out": out, "interpreted": status.get("interpreted_calls"), "mode": status["mode"],
                      "compiled": _coldstart.wait_all(300)}))
""")


def _run_cold(env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def test_a_process_without_compiled_kernels_steps_at_once_then_uses_them(tmp_path: Path) -> None:
    """A fresh numba cache: the first process steps through the twin while its background compiler
    fills the cache; a second process finds the kernels compiled; both see the same numbers, which
    are those of the compiled kernels in this process."""
    env = {k: v for k, v in os.environ.items() if k not in (_coldstart.MODE_ENV, _coldstart.BUDGET_ENV)}
    env.update(NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    first = _run_cold(env)
    assert first["mode"] == "background" and first["compiled"]
    assert first["interpreted"].get("step_round", 0) >= 1 and first["interpreted"].get("reset_rows", 0) >= 1
    second = _run_cold(env)
    assert second["interpreted"] == {} and second["out"] == first["out"]
    here = gym.make("SpecStopRound-v0", n_tokens=24)
    obs, _ = here.reset(seed=3)
    assert obs.tolist() == first["out"][0]
    for i in range(3):
        obs, rew, term, _, _ = here.step(i % 8)
        assert first["out"][1 + i] == [obs.tolist(), repr(rew), term]
