"""Counter-based random numbers: the randomness of a simulated episode as a pure function.

Every random quantity of an episode is ``f(episode_key, stream, index, slot)``: a
SplitMix64 hash of a 64-bit episode key (drawn from the environment's own
``np_random``, hence from the user's seed), a named stream, an index (the round
number for acceptance draws, the wall-clock slot for channel jitter, the switch
number for Markov paths) and a slot within that index (e.g. the draft position).
Consequences the project relies on:

* **Common random numbers** (SPEC 5): two policies that run on the same episode
  key see the same acceptance draws for round ``r`` and the same channel at
  wall-clock time ``t``, whatever they did before.
* **Vector == single**: a batch row and a single environment with the same key
  produce identical draws; nothing depends on how many rows are stepped together.
* No global generator is ever touched.

The arithmetic is in :mod:`specstop_gym.core.kernels` (compiled, one copy, used by
the simulator too); the functions here broadcast numpy arrays over it.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .kernels import (PROBE_SLOT, STREAM_ACCEPT_U, STREAM_CONFIDENCE, STREAM_INIT, STREAM_LATENT_EPS,  # noqa: F401
                      STREAM_LATENT_Z, STREAM_MARKOV, STREAM_OFFSET, STREAM_RTT, STREAM_TRACE_PICK)

_KIND_HASH, _KIND_UNIFORM, _KIND_NORMAL = 0, 1, 2


def _draw(key, stream: int, index, slot, kind: int):
    k, i, s = np.broadcast_arrays(np.asarray(key, dtype=np.uint64), np.asarray(index, dtype=np.int64),
                                  np.asarray(slot, dtype=np.int64))
    shape = k.shape
    k, i, s = (kernels.as_arg(a, a.dtype).ravel() for a in (k, i, s))
    out_u = np.empty(k.size if kind == _KIND_HASH else 0, np.uint64)
    out_f = np.empty(0 if kind == _KIND_HASH else k.size)
    kernels.draw_array(k, int(stream), i, s, kind, out_u, out_f)
    out = (out_u if kind == _KIND_HASH else out_f).reshape(shape)
    return out if shape else out[()]


def hash64(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """64-bit hash of (key, stream, index, slot): two SplitMix64 rounds; broadcasts like numpy.

    ``h = mix(mix(key ^ stream*GOLDEN) ^ (index*M1 + slot*M2 + GOLDEN))`` modulo 2**64.
    """
    return _draw(key, stream, index, slot, _KIND_HASH)


def uniform(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Uniform draws in the open interval (0, 1) (53 random bits): ``((h >> 11) + 0.5) * 2**-53``."""
    return _draw(key, stream, index, slot, _KIND_UNIFORM)


def normal(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Standard normal draws by inversion: ``z = Phi^-1(u)`` of the uniform ``u`` of the same
    hash, with Acklam's rational approximation of ``Phi^-1`` (relative error < 1.2e-9)."""
    return _draw(key, stream, index, slot, _KIND_NORMAL)


def episode_keys(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """Draw ``n`` fresh 64-bit episode keys from an explicit generator."""
    return rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
