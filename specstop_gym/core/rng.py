"""Counter-based random numbers: the randomness of a simulated episode as a pure function.

Every random quantity of an episode is ``f(episode_key, stream, index, slot)``: a
SplitMix64 hash of a 64-bit episode key (drawn from the environment's own
``np_random``, hence from the user's seed), a named stream, an index (the round
number for acceptance draws, the wall-clock millisecond for channel jitter, the
switch number for Markov paths) and a slot within that index (e.g. the draft
position). Consequences the project relies on:

* **Common random numbers** (SPEC 5): two policies that run on the same episode
  key see the same acceptance draws for round ``r`` and the same channel at
  wall-clock time ``t``, whatever they did before.
* **Vector == single**: a batch row and a single environment with the same key
  produce identical draws; nothing depends on how many rows are stepped together.
* No global generator is ever touched.

All functions are vectorised over numpy arrays (batch axis first) and use
wrap-around ``uint64`` arithmetic.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53
_TWO_M32 = 1.0 / 4294967296.0  # 2**-32
_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_MASK = 0xFFFFFFFFFFFFFFFF
_TWO_PI = 2.0 * np.pi

# Named streams: distinct constants so that draws never collide.
STREAM_ACCEPT_U = 1  # acceptance uniforms, index = round, slot = position
STREAM_LATENT_Z = 2  # per-round difficulty, index = round
STREAM_LATENT_EPS = 3  # per-token difficulty noise, index = round, slot = position
STREAM_CONFIDENCE = 4  # confidence-signal noise, index = round, slot = position
STREAM_TRACE_PICK = 5  # which recorded round a replayed round copies, index = round
STREAM_RTT = 6  # rtt jitter, index = wall-clock millisecond of sending
STREAM_MARKOV = 7  # Markov path: index = switch number, slot 0 = holding time, 1 = next state
STREAM_OFFSET = 8  # episode start offsets (trace replay), index = 0
STREAM_INIT = 9  # initial channel state, index = 0


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (bijective on uint64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def hash64(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """64-bit hash of (key, stream, index, slot): two SplitMix64 rounds; broadcasts like numpy."""
    with np.errstate(over="ignore"):
        k = np.asarray(key, dtype=np.uint64)
        i = np.asarray(index, dtype=np.int64).view(np.uint64) if np.ndim(index) else np.uint64(int(index) & _MASK)
        s = np.asarray(slot, dtype=np.int64).view(np.uint64) if np.ndim(slot) else np.uint64(int(slot) & _MASK)
        h = _mix(k ^ (np.uint64(stream) * _GOLDEN))
        return _mix(h ^ (i * _M1 + s * _M2 + _GOLDEN))


def uniform(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Uniform draws in the open interval (0, 1) (53 random bits)."""
    h = hash64(key, stream, index, slot)
    return ((h >> _S11).astype(np.float64) + 0.5) * _TWO_M53


def normal(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Standard normal draws: Box-Muller on the two 32-bit halves of one hash."""
    h = hash64(key, stream, index, slot)
    u1 = ((h >> _S32).astype(np.float64) + 0.5) * _TWO_M32
    u2 = ((h & _LOW32).astype(np.float64) + 0.5) * _TWO_M32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


def episode_keys(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """Draw ``n`` fresh 64-bit episode keys from an explicit generator."""
    return rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
