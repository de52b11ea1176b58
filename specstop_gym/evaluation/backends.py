"""Where the cells of a grid run: in this process (a plain loop) or on Ray (tasks).

Both backends take ``(key, spec)`` pairs and yield ``(key, result)`` as cells finish, in any
order (an exception raised by a cell propagates with the cell's key as ``cell_key``); a cell is :func:`specstop_gym.evaluation.cell.run_cell`, a pure function of its
:class:`~specstop_gym.evaluation.cell.CellSpec`, so the backend changes when and where a number
is computed, never its value. There is no scheduler here: the in-process backend is a ``for``
loop, the Ray backend submits one Ray task per cell (``num_cpus=1``) and collects them with
``ray.wait`` as they complete; Ray places the tasks on the cluster's CPUs and retries a task
whose worker died (cells are pure, so a retry gives the same result).

* :class:`InProcessBackend` (default).
* :class:`RayBackend` with ``address=None`` (``evaluate.py --ray``) starts a local Ray runtime on
  this machine's cores, bound to the loopback address, and stops it at the end; with an address
  (``--ray-address HOST:PORT`` or ``auto``) it joins an existing cluster and leaves it running.
  The workers must import the same code (the same specstop-gym installed, or the repository on
  their ``PYTHONPATH``): every result carries its worker's code key and the driver refuses a
  result computed by other code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..cli import UsageError
from .cell import CellSpec, run_cell

Work = tuple[str, CellSpec]


class InProcessBackend:
    """Run the cells one after another in this process."""

    name = "in-process"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "cpus": 1}

    def run(self, work: Iterable[Work]) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, spec in work:
            try:
                result = run_cell(spec, key)
            except Exception as e:
                e.cell_key = key  # type: ignore[attr-defined]  # which cell failed, for the driver's message
                raise
            yield key, result

    def close(self) -> None:
        pass


WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Set in every Ray worker (as evaluate.py sets them for itself: tiny matrices, no BLAS threads)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray/--ray-address need Ray: pip install \"specstop-gym[ray]\" (or pip install ray)"
                         ) from None
    return ray


class RayBackend:
    """One Ray task per cell (module docstring).

    Args:
        address: None to start a local runtime; else the address of a running cluster
            (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``).
        num_cpus: CPUs of the local runtime (default: all of this machine's).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        if address is None:
            # a local runtime on this machine only: bind to the loopback address (Ray otherwise
            # advertises the machine's network address); read by Ray at import
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if address is not None:
            _reachable(address)
        ray = _import_ray()
        self.ray = ray
        self.started = False
        kw: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True,
                              "runtime_env": {"env_vars": dict(WORKER_ENV)}}
        try:
            if address is None:
                cpus = int(num_cpus or os.cpu_count() or 1)
                ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                         object_store_memory=256 << 20, **kw)
                self.started = True
            else:
                ray.init(address=address, **kw)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
            msg = " ".join(str(e).split())[:300]
            raise UsageError(f"--ray-address {address!r}: cannot connect: {msg}" if address is not None
                             else f"--ray: cannot start a local Ray runtime: {msg}") from None
        self._remote = ray.remote(num_cpus=1)(run_cell)

    def describe(self) -> dict[str, Any]:
        res = self.ray.cluster_resources()
        return {"backend": self.name, "address": self.address or "local", "cpus": int(res.get("CPU", 0)),
                "nodes": sum(1 for n in self.ray.nodes() if n.get("Alive")), "ray": self.ray.__version__}

    def run(self, work: Iterable[Work]) -> Iterator[tuple[str, dict[str, Any]]]:
        ray = self.ray
        pending = {self._remote.remote(spec, key): key for key, spec in work}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    key = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # the task's exception (RayTaskError: with the remote traceback)
                        e.cell_key = key  # type: ignore[attr-defined]
                        raise
                    yield key, result
        finally:
            for ref in pending:  # interrupted or failed: do not leave the cluster computing
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - best effort while unwinding
                    pass

    def close(self) -> None:
        try:
            self.ray.shutdown()
        except Exception:  # noqa: BLE001, S110
            pass


CONNECT_TIMEOUT_S = 10.0
"""How long ``--ray-address HOST:PORT`` may take to accept a TCP connection before the run is
refused (Ray itself retries an unreachable address for minutes)."""


def _reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` address that accepts no TCP connection within :data:`CONNECT_TIMEOUT_S`
    (``auto`` and ``ray://`` addresses are left to Ray)."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address[:80]!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"--ray-address {address!r}: cannot connect: {e.strerror or e}") from None


def make_backend(ray: bool = False, address: str | None = None, num_cpus: int | None = None) -> Any:
    """The backend the flags ask for: in-process, a local Ray runtime, or a Ray cluster."""
    if address is not None:
        return RayBackend(address=address)
    if ray:
        return RayBackend(num_cpus=num_cpus)
    return InProcessBackend()


__all__ = ["InProcessBackend", "RayBackend", "make_backend"]
