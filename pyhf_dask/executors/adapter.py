"""A Dask scheduler that sends remote tasks to any ``concurrent.futures.Executor``.

:class:`ExecutorScheduler` is a callable "get" function: pass it as
``ds.compute(scheduler=adapter)`` or ``dask.config.set(scheduler=adapter)``. It walks the
graph itself and routes each task by what it is (:mod:`pyhf_dask.tasks`): marked tasks
(the fit tasks of a scan, functions wrapped in :func:`pyhf_dask.tasks.remote`), tasks
annotated ``pyhf_dask_remote=True`` and, with ``remote="all"`` (the default), every task
that calls a user's function go to the wrapped executor (a Globus Compute ``Executor``,
Parsl's ``ParslPoolExecutor``, a process pool, ``distributed.Client.get_executor()``,
...). Dask's plumbing (literals, result extraction, concatenation) runs inline in this
process and never crosses the network. A remote task that Dask's optimisation fused into
another task is taken out again; one that would still run here raises
:class:`~pyhf_dask.tasks.RemoteTaskInClient` instead of running silently.

Results are consumed as they complete (``concurrent.futures.wait``, no polling sleeps).
A submission that raises, is lost with its worker, or exceeds ``timeout`` is retried up to
``retries`` times; after that the points of a fit task are marked ``"failed"`` with a
message saying what happened (the task's own protocol builds that result), while a plain
call raises its error as Dask would. Fit tasks whose serialized arguments or expected
result exceed the executor's payload limits are split before submission; plain calls are
sent ``batch_size`` at a time, one submission per batch.

Defaults come from the ``pyhf-dask.executor`` section of the configuration
(:mod:`pyhf_dask.config`), read when the adapter is made.

Example:
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pyhf_dask.grid import SignalGrid, simple_workspace, scaled_signal
    >>> import pyhf_dask
    >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    >>> ds = pyhf_dask.scan(SignalGrid.from_function(ws, scaled_signal, scale=[1.0]),
    ...                     kernel="pyhf")
    >>> with ThreadPoolExecutor(1) as pool:
    ...     adapter = ExecutorScheduler(pool, check_versions=False)
    ...     out = ds.CLs_obs.compute(scheduler=adapter)
    >>> adapter.stats["submitted"], bool(out.equals(ds.CLs_obs.compute(scheduler="synchronous")))
    (1, True)
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyhf_dask import config
from pyhf_dask.exceptions import InvalidOption, VersionMismatch
from pyhf_dask.executors.routing import check_mode

__all__ = ["ExecutorScheduler", "estimate_payload", "worker_versions"]

log = logging.getLogger(__name__)


def worker_versions() -> dict[str, str]:
    """Versions that client and workers must agree on (runs on the worker).

    Example:
        >>> sorted(worker_versions())
        ['pyhf', 'pyhf_dask', 'python']
    """
    import platform

    from pyhf_dask._version import __version__
    from pyhf_dask.schema import pyhf_version

    return {
        "pyhf_dask": __version__,
        "pyhf": pyhf_version(),
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


@dataclass
class _Part:
    """One submission of a splittable remote task (a fit task) or of a slice of one."""

    key: Hashable
    index: tuple[int, ...]
    task: Any  # a pyhf_dask.tasks.SplittableTask
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = 0.0

    @property
    def func(self) -> Callable[..., Any]:
        return self.task.worker

    @property
    def weight(self) -> int:
        """Timeouts count per submission."""
        return 1


@dataclass
class _Call:
    """One plain remote call of a batch."""

    key: Hashable
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    """One submission of :func:`pyhf_dask.tasks.run_batch` over plain calls."""

    calls: list[_Call]
    started: float = 0.0

    @property
    def key(self) -> str:
        return f"batch of {len(self.calls)} call(s) ({self.calls[0].key!r}, ...)"

    @property
    def func(self) -> Callable[..., Any]:
        from pyhf_dask.tasks import run_batch

        return run_batch

    @property
    def args(self) -> tuple[Any, ...]:
        return ([(c.func, c.args, c.kwargs) for c in self.calls],)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def weight(self) -> int:
        """A batch may run ``timeout`` seconds per call."""
        return len(self.calls)


class ExecutorScheduler:
    """Dask "get" function that routes remote tasks to a ``concurrent.futures.Executor``.

    Every option left ``None`` is read from the ``pyhf-dask.executor`` configuration.

    Args:
        executor: any object with ``submit(fn, *args) -> Future``.
        retries: extra attempts of a failed, lost or timed-out submission.
        timeout: seconds a fit task (or each call of a batch) may run (``None``: no
            limit). Executors that say when a task starts (``started_at(future)``, as
            the ``local`` pool does) are timed from that moment; others from submission,
            so queue time is kept short by ``max_in_flight``. A timed-out task is
            abandoned (``abandon(future)``: its worker is stopped where the executor can)
            and retried.
        max_payload: largest serialized submission in bytes (Globus Compute: 10 MB);
            bigger fit tasks are split, a single point that is too big is an error.
        max_result: largest serialized result in bytes (Globus Compute: 10 MiB).
        max_in_flight: most submissions outstanding at once (default: the executor's
            ``capacity`` when it has one, else all).
        check_versions: compare pyhf_dask/pyhf/Python versions with a worker first.
        name: label used in messages (default: the executor's class name).
        remote: ``"all"`` (also send every task calling a user's function) or
            ``"marked"`` (marked and annotated tasks only).
        batch_size: most plain calls per submission.
    """

    def __init__(
        self,
        executor: Any,
        *,
        retries: int | None = None,
        timeout: float | None = None,
        max_payload: int | None = None,
        max_result: int | None = None,
        max_in_flight: int | None = None,
        check_versions: bool | None = None,
        name: str | None = None,
        remote: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        retries = int(config.resolve(retries, "executor.retries"))
        timeout = config.resolve(timeout, "executor.timeout")
        batch_size = int(config.resolve(batch_size, "executor.batch-size"))
        if retries < 0:
            msg = f"retries must be 0 or more, got {retries}"
            raise InvalidOption(msg)
        if timeout is not None and timeout <= 0:
            msg = f"timeout must be positive, got {timeout}"
            raise InvalidOption(msg)
        if batch_size < 1:
            msg = f"batch_size must be 1 or more, got {batch_size}"
            raise InvalidOption(msg)
        self.executor = executor
        self.retries = retries
        self.timeout = None if timeout is None else float(timeout)
        self.max_payload = max_payload or getattr(executor, "max_payload", None)
        self.max_result = max_result or getattr(executor, "max_result", None)
        self.max_in_flight = max_in_flight or getattr(executor, "capacity", None)
        self.check_versions = bool(config.resolve(check_versions, "executor.check-versions"))
        self.name = name or type(executor).__name__
        self.remote = check_mode(str(config.resolve(remote, "executor.remote")))
        self.batch_size = batch_size
        self._versions_checked = False
        #: Counters of the last run: submitted, retried, failed, split, calls (batched).
        self.stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"ExecutorScheduler({self.name}, retries={self.retries}, timeout={self.timeout})"

    # -- the dask "get" protocol -------------------------------------------------------

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of graph ``dsk`` (called by ``dask.compute``)."""
        from dask.callbacks import local_callbacks, unpack_callbacks

        from pyhf_dask.executors.routing import prepare, unfuse
        from pyhf_dask.executors.walker import Run

        graph, annotations = prepare(dsk)
        graph = unfuse(graph, annotations, self.remote)
        with local_callbacks(kwargs.get("callbacks")) as callbacks:
            cbs = unpack_callbacks(callbacks)
            return Run(self, graph, keys, annotations, cbs).run()

    # -- submissions -------------------------------------------------------------------

    def _submit(self, part: _Part | _Batch) -> cf.Future[Any]:
        if isinstance(part, _Part):
            part.attempts += 1
        else:
            for call in part.calls:
                call.attempts += 1
        part.started = time.monotonic()
        return self.executor.submit(part.func, *part.args, **part.kwargs)

    def _parts(
        self, key: Hashable, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[_Part]:
        """Split a splittable task into submissions that respect the payload limits."""
        pieces = [(args, kwargs)]
        if self.max_result:
            need = -(-task.result_bytes(args, kwargs) // self.max_result)
            if need > 1:
                pieces = task.split(args, kwargs, need)
        if self.max_payload:
            pieces = [q for a, k in pieces for q in self._fit_payload(key, task, a, k)]
        if len(pieces) > 1:
            self.stats["split"] = self.stats.get("split", 0) + 1
            log.info(
                "%s: task %s split into %d submissions to respect payload limits",
                self.name,
                key,
                len(pieces),
            )
        return [_Part(key, (i,), task, a, k) for i, (a, k) in enumerate(pieces)]

    def _fit_payload(
        self, key: Hashable, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        assert self.max_payload is not None
        size = estimate_payload(args, kwargs)
        if size <= self.max_payload:
            return [(args, kwargs)]
        if task.n_points(args, kwargs) <= 1:
            msg = (
                f"task {key!r} is {size / 1e6:.1f} MB serialized, more than the "
                f"{self.max_payload / 1e6:.1f} MB that {self.name} accepts per submission, "
                "and one point already exceeds it: it cannot be sent (use an executor "
                "without a payload limit, e.g. --executor distributed or parsl)"
            )
            raise InvalidOption(msg)
        return [
            q for a, k in task.split(args, kwargs, 2) for q in self._fit_payload(key, task, a, k)
        ]

    def _batches(self, calls: list[_Call], free: int | None) -> list[_Batch]:
        """Group plain calls into batches: ``batch_size`` at most, spread over ``free``
        submission slots, each under the payload limit."""
        if not calls:
            return []
        size = self.batch_size
        if free:
            size = max(1, min(size, -(-len(calls) // free)))
        out: list[_Batch] = []
        for i in range(0, len(calls), size):
            out.extend(self._batch_payload(calls[i : i + size]))
        return out

    def _batch_payload(self, calls: list[_Call]) -> list[_Batch]:
        batch = _Batch(calls)
        if not self.max_payload:
            return [batch]
        size = estimate_payload(batch.args)
        if size <= self.max_payload:
            return [batch]
        if len(calls) == 1:
            msg = (
                f"task {calls[0].key!r} is {size / 1e6:.1f} MB serialized, more than the "
                f"{self.max_payload / 1e6:.1f} MB that {self.name} accepts per submission"
            )
            raise InvalidOption(msg)
        half = len(calls) // 2
        return [*self._batch_payload(calls[:half]), *self._batch_payload(calls[half:])]

    def _started(self, fut: cf.Future[Any], part: _Part | _Batch) -> float | None:
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
