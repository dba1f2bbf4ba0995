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
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyhf_dask.exceptions import InvalidOption, VersionMismatch
from pyhf_dask.graph import FIT_PREFIX
from pyhf_dask.grid import FunctionPatches
from pyhf_dask.kernels import FIELDS, empty_result, fit_chunk

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
        timeout: seconds a fit task may take from submission to result (``None``: no
            limit). Queueing time counts, so leave room or limit ``max_in_flight``.
        max_payload: largest serialized submission in bytes (Globus Compute: 10 MB);
            bigger chunks are split, a single point that is too big is an error.
        max_result: largest serialized result in bytes (Globus Compute: 10 MiB).
        max_in_flight: most fit submissions outstanding at once (``None``: all).
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
        self.max_in_flight = max_in_flight
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


class _Run:
    """State of one ``ExecutorScheduler.__call__``."""

    def __init__(
        self,
        owner: ExecutorScheduler,
        graph: dict[Any, Any],
        keys: Any,
        callbacks: tuple[list[Any], ...],
    ) -> None:
        from dask.core import flatten

        self.owner = owner
        self.graph = graph
        self.keys = keys
        self.starts, self.start_states, self.pretasks, self.posttasks, self.finishes = callbacks
        self.wanted = set(flatten(keys)) if isinstance(keys, list) else {keys}
        self.deps = {k: set(node.dependencies) for k, node in graph.items()}
        self.dependents: dict[Any, set[Any]] = defaultdict(set)
        for k, ds in self.deps.items():
            for d in ds:
                self.dependents[d].add(k)
        self.waiting = {k: set(ds) for k, ds in self.deps.items() if ds}
        self.cache: dict[Any, Any] = {}
        self.state: dict[str, Any] = {
            "cache": self.cache,
            "ready": [k for k, ds in self.deps.items() if not ds],
            "waiting": self.waiting,
            "running": set(),
            "finished": set(),
            "dependents": self.dependents,
            "dependencies": self.deps,
        }
        self.remaining: dict[Any, int] = {}
        self.results: dict[Any, dict[tuple[int, ...], Any]] = defaultdict(dict)
        self.inflight: dict[cf.Future[Any], _Part] = {}
        self.queued: list[_Part] = []
        owner.stats = {"submitted": 0, "retried": 0, "failed": 0, "split": 0}

    def run(self) -> Any:
        for cb in self.starts:
            cb(self.graph)
        for cb in self.start_states:
            cb(self.graph, self.state)
        errored = True
        probe = self.owner._probe_versions()
        try:
            while self.state["ready"] or self.inflight or self.queued or probe is not None:
                while self.state["ready"]:
                    self._start(self.state["ready"].pop())
                self._fill()
                pending: set[cf.Future[Any]] = set(self.inflight)
                if probe is not None:
                    pending.add(probe)
                if not pending:
                    continue
                done, _ = cf.wait(
                    pending, timeout=self._wait_time(), return_when=cf.FIRST_COMPLETED
                )
                if probe is not None and probe in done:
                    done.discard(probe)
                    self.owner._check_probe(probe)
                    probe = None
                for fut in done:
                    self._collect(fut)
                self._expire()
            missing = self.wanted - self.cache.keys()
            if missing:
                msg = f"graph could not be completed; missing keys: {sorted(map(str, missing))[:5]}"
                raise RuntimeError(msg)
            errored = False
            return _pack(self.keys, self.cache)
        finally:
            for fut in self.inflight:
                fut.cancel()
            if probe is not None:
                probe.cancel()
            for cb in self.finishes:
                cb(self.graph, self.state, errored)

    # -- local and remote tasks --------------------------------------------------------

    def _start(self, key: Any) -> None:
        node = self.graph[key]
        for cb in self.pretasks:
            cb(key, self.graph, self.state)
        values = {d: self.cache[d] for d in self.deps[key]}
        if not (isinstance(key, str) and key.startswith(FIT_PREFIX)) or not hasattr(node, "func"):
            self.state["running"].add(key)
            self._finish(key, node(values))
            return
        args = tuple(_resolve(a, values) for a in node.args)
        kwargs = {k: _resolve(v, values) for k, v in node.kwargs.items()}
        parts = self.owner._parts(key, node.func, args, kwargs)
        self.state["running"].add(key)
        self.remaining[key] = len(parts)
        self.queued.extend(parts)

    def _fill(self) -> None:
        limit = self.owner.max_in_flight
        while self.queued and (limit is None or len(self.inflight) < limit):
            part = self.queued.pop(0)
            try:
                fut = self.owner._submit(part)
            except Exception as exc:  # the executor refused: count it as a failed attempt
                self._failed(part, exc)
                continue
            self.inflight[fut] = part
            self.owner.stats["submitted"] += 1

    def _collect(self, fut: cf.Future[Any]) -> None:
        part = self.inflight.pop(fut)
        try:
            value = fut.result()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._failed(part, exc)
            return
        if part.n_points is not None:
            problem = _check_result(value, part.n_points, part.n_poi)
            if problem:
                self._failed(part, ValueError(problem))
                return
        self._part_done(part, value)

    def _expire(self) -> None:
        timeout = self.owner.timeout
        if timeout is None:
            return
        now = time.monotonic()
        for fut, part in list(self.inflight.items()):
            if not fut.done() and now - part.started > timeout:
                fut.cancel()
                del self.inflight[fut]
                self._failed(part, TimeoutError(f"no result within {timeout:g} s"))

    def _wait_time(self) -> float | None:
        timeout = self.owner.timeout
        if timeout is None or not self.inflight:
            return None
        first = min(p.started for p in self.inflight.values())
        return max(0.0, first + timeout - time.monotonic()) + 0.01

    def _failed(self, part: _Part, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()
        reason = text[-1][:300] if text else type(exc).__name__
        if "MaxResultSizeExceeded" in reason and part.n_points and part.n_points > 1:
            self._resplit(part)
            return
        part.errors.append(reason)
        if part.attempts <= self.owner.retries:
            self.owner.stats["retried"] += 1
            log.warning(
                "%s: %s attempt %d failed (%s); retrying",
                self.owner.name,
                part.key,
                part.attempts,
                reason,
            )
            self.queued.append(part)
            return
        self.owner.stats["failed"] += 1
        if part.n_points is None:
            raise exc
        log.error(
            "%s: %s failed after %d attempts (%s); marking %d points failed",
            self.owner.name,
            part.key,
            part.attempts,
            reason,
            part.n_points,
        )
        result = empty_result(part.n_points, part.n_poi)
        result["message"][:] = (
            f"task failed after {part.attempts} attempt(s) on {self.owner.name}: {reason}"
        )
        self._part_done(part, result)

    def _resplit(self, part: _Part) -> None:
        kernel, workspace, patches, options = part.args
        pieces = split_patches(patches, 2)
        log.info("%s: result of %s too large; splitting", self.owner.name, part.key)
        self.remaining[part.key] += len(pieces) - 1
        for j, p in enumerate(pieces):  # (i, j) sorts between (i - 1,) and (i + 1,)
            self.queued.append(
                _Part(
                    part.key,
                    (*part.index, j),
                    part.func,
                    (kernel, workspace, p, options),
                    part.kwargs,
                    _n_points(p),
                    part.n_poi,
                    part.attempts,
                )
            )

    def _part_done(self, part: _Part, value: Any) -> None:
        self.results[part.key][part.index] = value
        self.remaining[part.key] -= 1
        if self.remaining[part.key]:
            return
        pieces = [v for _, v in sorted(self.results.pop(part.key).items())]
        value = (
            pieces[0]
            if len(pieces) == 1
            else {name: np.concatenate([p[name] for p in pieces]) for name in FIELDS}
        )
        del self.remaining[part.key]
        self._finish(part.key, value)

    def _finish(self, key: Any, value: Any) -> None:
        self.cache[key] = value
        self.state["running"].discard(key)
        self.state["finished"].add(key)
        for cb in self.posttasks:
            cb(key, value, self.graph, self.state, None)
        for dep in self.dependents.get(key, ()):
            waits = self.waiting[dep]
            waits.discard(key)
            if not waits:
                del self.waiting[dep]
                self.state["ready"].append(dep)
        for d in self.deps[key]:  # release inputs nobody needs any more
            if d not in self.wanted and self.dependents[d] <= self.state["finished"]:
                self.cache.pop(d, None)


def _resolve(arg: Any, values: Mapping[Any, Any]) -> Any:
    """Evaluate one argument of a task spec against computed dependency values."""
    from dask._task_spec import GraphNode, TaskRef

    if isinstance(arg, GraphNode):
        return arg({k: values[k] for k in arg.dependencies})
    if isinstance(arg, TaskRef):
        return values[arg.key]
    return arg


def _check_result(value: Any, n_points: int, n_poi: int) -> str:
    if not isinstance(value, dict) or not set(FIELDS) <= set(value):
        return f"worker returned {type(value).__name__}, not a result dict"
    if np.shape(value["CLs_obs"]) != (n_points, n_poi):
        return f"worker returned CLs of shape {np.shape(value['CLs_obs'])}, not {(n_points, n_poi)}"
    return ""


def _pack(keys: Any, cache: Mapping[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_pack(k, cache) for k in keys]
    return cache[keys]
