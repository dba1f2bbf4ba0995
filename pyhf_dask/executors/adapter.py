"""A Dask scheduler that sends fit tasks to any ``concurrent.futures.Executor``.

:class:`ExecutorScheduler` is a callable "get" function: pass it as
``ds.compute(scheduler=adapter)`` or ``dask.config.set(scheduler=adapter)``. It walks the
graph itself; tasks whose key starts with :data:`pyhf_dask.graph.FIT_PREFIX` go to the
wrapped executor (a Globus Compute ``Executor``, Parsl's ``ParslPoolExecutor``, a process
pool, ``distributed.Client.get_executor()``, ...), every other task (workspace literal,
result extraction, concatenation) runs inline in this process and never crosses the network.

Fit results are consumed as they complete (``concurrent.futures.wait``, no polling sleeps).
A fit task that raises, is lost with its worker, or exceeds ``timeout`` is retried up to
``retries`` times; after that its points are marked ``"failed"`` with a message saying what
happened, and the scan finishes. Chunks whose serialized arguments or expected result
exceed the executor's payload limits are split before submission.

Example:
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pyhf_dask.grid import SignalGrid, simple_workspace, scaled_signal
    >>> import pyhf_dask
    >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    >>> ds = pyhf_dask.scan(SignalGrid.from_function(ws, scaled_signal, scale=[1.0]),
    ...                     kernel="pyhf")
    >>> with ThreadPoolExecutor(1) as pool:
    ...     out = ds.compute(scheduler=ExecutorScheduler(pool, check_versions=False))
    >>> bool(out.CLs_obs.equals(ds.CLs_obs.compute(scheduler="synchronous")))
    True
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyhf_dask.exceptions import InvalidOption, VersionMismatch
from pyhf_dask.grid import FunctionPatches
from pyhf_dask.kernels import fit_chunk

__all__ = ["ExecutorScheduler", "estimate_payload", "split_patches", "worker_versions"]

log = logging.getLogger(__name__)

#: Bytes per point of a serialized result beyond the CLs arrays (status, message, time).
_RESULT_POINT_OVERHEAD = 400


def worker_versions() -> dict[str, str]:
    """Versions that client and workers must agree on (runs on the worker).

    Example:
        >>> sorted(worker_versions())
        ['pyhf', 'pyhf_dask', 'python']
    """
    import platform

    import pyhf

    from pyhf_dask._version import __version__

    return {
        "pyhf_dask": __version__,
        "pyhf": str(pyhf.__version__),
        "python": ".".join(platform.python_version_tuple()[:2]),
    }


def estimate_payload(args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None) -> int:
    """Bytes of a task submission's serialized arguments, as Globus Compute sends them.

    Uses the SDK's ``ComputeSerializer`` when installed (base64 dill, as on the wire),
    else pickle with the same 4/3 base64 factor.

    Example:
        >>> estimate_payload((b"x" * 3000,)) > 4000
        True
    """
    try:
        from globus_compute_sdk.serialize import ComputeSerializer
    except ImportError:
        import pickle

        return int(len(pickle.dumps((args, dict(kwargs or {})), protocol=5)) * 4 / 3) + 64
    serde = ComputeSerializer()
    return len(serde.pack_buffers([serde.serialize(args), serde.serialize(dict(kwargs or {}))]))


def split_patches(patches: Any, parts: int) -> list[Any]:
    """Split a chunk's patches (a list or :class:`~pyhf_dask.grid.FunctionPatches`).

    Example:
        >>> [len(p) for p in split_patches([[1], [2], [3]], 2)]
        [2, 1]
    """
    n = _n_points(patches)
    bounds = np.array_split(np.arange(n), min(parts, n))
    out: list[Any] = []
    for idx in bounds:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        if isinstance(patches, FunctionPatches):
            out.append(dataclasses.replace(patches, values=patches.values[start:stop]))
        else:
            out.append(list(patches[start:stop]))
    return out


def _n_points(patches: Any) -> int:
    values = getattr(patches, "values", None)
    return len(values) if isinstance(values, np.ndarray) else len(patches)


@dataclass
class _Part:
    """One submission: a fit task or a slice of one."""

    key: Hashable
    index: tuple[int, ...]
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    n_points: int | None  # None: not a fit_chunk call, cannot be split or marked failed
    n_poi: int = 1
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0


class ExecutorScheduler:
    """Dask "get" function that routes fit tasks to a ``concurrent.futures.Executor``.

    Args:
        executor: any object with ``submit(fn, *args) -> Future``.
        retries: extra attempts of a failed, lost or timed-out fit task.
        timeout: seconds a fit task may run (``None``: no limit). Executors that say when
            a task starts (``started_at(future)``, as the ``local`` pool does) are timed
            from that moment; others from submission, so queue time is kept short by
            ``max_in_flight``. A timed-out task is abandoned (``abandon(future)``: its
            worker is stopped where the executor can) and retried.
        max_payload: largest serialized submission in bytes (Globus Compute: 10 MB);
            bigger chunks are split, a single point that is too big is an error.
        max_result: largest serialized result in bytes (Globus Compute: 10 MiB).
        max_in_flight: most fit submissions outstanding at once (default: the
            executor's ``capacity`` when it has one, else all).
        check_versions: compare pyhf_dask/pyhf/Python versions with a worker first.
        name: label used in messages (default: the executor's class name).
    """

    def __init__(
        self,
        executor: Any,
        *,
        retries: int = 2,
        timeout: float | None = None,
        max_payload: int | None = None,
        max_result: int | None = None,
        max_in_flight: int | None = None,
        check_versions: bool = True,
        name: str | None = None,
    ) -> None:
        if retries < 0:
            msg = f"retries must be 0 or more, got {retries}"
            raise InvalidOption(msg)
        if timeout is not None and timeout <= 0:
            msg = f"timeout must be positive, got {timeout}"
            raise InvalidOption(msg)
        self.executor = executor
        self.retries = int(retries)
        self.timeout = timeout
        self.max_payload = max_payload or getattr(executor, "max_payload", None)
        self.max_result = max_result or getattr(executor, "max_result", None)
        self.max_in_flight = max_in_flight or getattr(executor, "capacity", None)
        self.check_versions = check_versions
        self.name = name or type(executor).__name__
        self._versions_checked = False
        #: Counters of the last run: submitted, retried, failed parts, split chunks.
        self.stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"ExecutorScheduler({self.name}, retries={self.retries}, timeout={self.timeout})"

    # -- the dask "get" protocol -------------------------------------------------------

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of graph ``dsk`` (called by ``dask.compute``)."""
        from dask._task_spec import convert_legacy_graph
        from dask.callbacks import local_callbacks, unpack_callbacks

        if not isinstance(dsk, Mapping):
            dsk = dsk.__dask_graph__()
        graph = convert_legacy_graph(dict(dsk))
        from pyhf_dask.executors.walker import _Run

        with local_callbacks(kwargs.get("callbacks")) as callbacks:
            cbs = unpack_callbacks(callbacks)
            return _Run(self, graph, keys, cbs).run()

    # -- submissions -------------------------------------------------------------------

    def _submit(self, part: _Part) -> cf.Future[Any]:
        part.attempts += 1
        part.started = time.monotonic()
        return self.executor.submit(part.func, *part.args, **part.kwargs)

    def _parts(
        self, key: Hashable, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[_Part]:
        """Split a fit task into submissions that respect the payload limits."""
        if func is not fit_chunk or len(args) != 4:
            return [_Part(key, (0,), func, args, kwargs, None)]
        kernel, workspace, patches, options = args
        n_poi = len(options["poi_values"])
        n = _n_points(patches)
        pieces = [patches]
        if self.max_result:
            per_point = int((8 * n_poi * 6 + 8) * 4 / 3) + _RESULT_POINT_OVERHEAD
            need = -(-n * per_point // self.max_result)
            if need > 1:
                pieces = split_patches(patches, need)
        if self.max_payload:
            pieces = [q for p in pieces for q in self._fit_payload(kernel, workspace, p, options)]
        if len(pieces) > 1:
            self.stats["split"] = self.stats.get("split", 0) + 1
            log.info(
                "%s: chunk %s split into %d submissions to respect payload limits",
                self.name,
                key,
                len(pieces),
            )
        return [
            _Part(key, (i,), func, (kernel, workspace, p, options), kwargs, _n_points(p), n_poi)
            for i, p in enumerate(pieces)
        ]

    def _fit_payload(self, kernel: str, workspace: Any, patches: Any, options: Any) -> list[Any]:
        assert self.max_payload is not None
        size = estimate_payload((kernel, workspace, patches, options))
        if size <= self.max_payload:
            return [patches]
        n = _n_points(patches)
        if n == 1:
            base = estimate_payload((kernel, workspace, [], options))
            what = "the workspace alone" if base > self.max_payload else "one point"
            msg = (
                f"a fit task is {size / 1e6:.1f} MB serialized, more than the "
                f"{self.max_payload / 1e6:.1f} MB that {self.name} accepts per submission, "
                f"and {what} already exceeds it: it cannot be sent (use an executor without "
                "a payload limit, e.g. --executor distributed or parsl)"
            )
            raise InvalidOption(msg)
        return [
            q
            for p in split_patches(patches, 2)
            for q in self._fit_payload(kernel, workspace, p, options)
        ]

    def _started(self, fut: cf.Future[Any], part: _Part) -> float | None:
        """When ``fut`` started running (``None``: still queued), for timeouts."""
        started_at = getattr(self.executor, "started_at", None)
        if started_at is None:
            return part.started
        return started_at(fut)

    def _abandon(self, fut: cf.Future[Any]) -> None:
        """Give up on ``fut``: stop its worker where the executor can, else cancel it."""
        try:
            abandon = getattr(self.executor, "abandon", None)
            if abandon is not None:
                abandon(fut)
            else:
                fut.cancel()
        except Exception as exc:  # e.g. Parsl: "Cancel not implemented"
            log.debug("%s: cannot cancel a task (%s)", self.name, exc)

    def _probe_versions(self) -> cf.Future[Any] | None:
        if not self.check_versions or self._versions_checked:
            return None
        return self.executor.submit(worker_versions)

    def _check_probe(self, future: cf.Future[Any]) -> None:
        self._versions_checked = True
        try:
            remote = future.result()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if "pyhf_dask" in text and ("No module" in text or "ModuleNotFound" in text):
                msg = (
                    f"pyhf_dask is not importable on the workers of {self.name}: install "
                    f"the same pyhf_dask version there ({text.splitlines()[-1][:200]})"
                )
                raise VersionMismatch(msg) from exc
            log.warning("%s: version check failed (%s); continuing", self.name, text[:200])
            return
        local = worker_versions()
        if remote != local:
            diff = ", ".join(
                f"{k}: client {local[k]} / worker {remote.get(k)}"
                for k in local
                if remote.get(k) != local[k]
            )
            msg = f"client and workers of {self.name} run different versions ({diff})"
            raise VersionMismatch(msg)
