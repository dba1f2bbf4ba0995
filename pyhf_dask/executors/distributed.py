"""dask.distributed: an existing cluster by address, or a loopback-only local cluster.

Without an address, :func:`open_distributed` starts a ``LocalCluster`` (one worker per
core) or, with ``device="gpu"``, dask-cuda's ``LocalCUDACluster`` (one worker per visible
GPU, the ``cuda`` extra; :func:`local_gpu_cluster`). Both listen on 127.0.0.1 only.

Fit tasks go through :class:`~pyhf_dask.executors.adapter.ExecutorScheduler` over
:class:`AvoidingExecutor` (``Client.submit(pure=False)``), so a failing or lost task is
retried and finally marked failed instead of aborting the scan. A task's timeout counts
from when the scheduler gave it to a worker (:meth:`AvoidingExecutor.started_at`), not
from its submission: time queued while workers start or are busy does not count. A task
that times out marks the worker that was running it (a stopped or hung worker) as one to
avoid: retries and later tasks go to the other workers while there are any.

Example:
    >>> with open_distributed(workers=1) as scheduler:  # doctest: +SKIP
    ...     ds.compute(scheduler=scheduler)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pyhf_dask import config
from pyhf_dask._optional import require
from pyhf_dask.executors.adapter import ExecutorScheduler

__all__ = ["AvoidingExecutor", "local_cluster", "local_gpu_cluster", "open_distributed"]

log = logging.getLogger(__name__)

#: Seconds between two reads of the scheduler's processing table (:meth:`started_at`).
_PROCESSING_EVERY = 0.2

#: Options of a local cluster that keep it on loopback, with single-threaded workers.
LOOPBACK: dict[str, Any] = {
    "threads_per_worker": 1,
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
    "worker_dashboard_address": "127.0.0.1:0",
    "scheduler_port": 0,
}


def local_cluster(workers: int | None = None, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` that listens on 127.0.0.1 only.

    Scheduler, workers, nannies and dashboard bind to loopback (a default LocalCluster
    serves its dashboard on 0.0.0.0:8787). One single-threaded worker process per core.
    """
    distributed = require("distributed", "distributed")
    options: dict[str, Any] = {
        "n_workers": workers or os.cpu_count() or 1,
        "processes": True,
        **LOOPBACK,
    }
    options.update(kwargs)
    return distributed.LocalCluster(**options)


def local_gpu_cluster(workers: int | None = None, **kwargs: Any) -> Any:
    """dask-cuda's ``LocalCUDACluster`` that listens on 127.0.0.1 only.

    One single-threaded worker process per visible GPU, each pinned to its GPU, with
    JAX's preallocation off (:func:`pyhf_dask.gpu.local_cuda_cluster`). ``workers``: use
    the first ``workers`` visible GPUs; more than the visible GPUs are refused.

    Raises:
        MissingDependency: dask-cuda is not installed (the ``cuda`` extra).
        InvalidOption: no GPU is visible, or more workers than visible GPUs.
    """
    from pyhf_dask.gpu import local_cuda_cluster

    return local_cuda_cluster(workers, **{**LOOPBACK, **kwargs})


def _quiet_pyhf() -> None:
    """Runs on every worker: pyhf's logged tracebacks stay out of the terminal."""
    import logging as _logging

    _logging.getLogger("pyhf").setLevel(_logging.CRITICAL)


class AvoidingExecutor(cf.Executor):
    """``concurrent.futures.Executor`` over a ``distributed.Client`` that avoids stuck workers.

    Tasks are submitted with ``pure=False`` (a retry is a new task). :meth:`abandon`
    cancels a task and adds the workers processing it to :attr:`avoid`; later
    submissions are restricted to the other workers while any remain.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.avoid: set[str] = set()
        self._keys: dict[cf.Future[Any], Any] = {}
        self._started: dict[cf.Future[Any], float] = {}
        self._lock = threading.Lock()
        self._processing: tuple[float, frozenset[Any]] = (-1.0, frozenset())

    @property
    def capacity(self) -> int | None:
        """Threads of the cluster's workers (tasks that can run at once)."""
        try:
            return int(sum(self.client.nthreads().values())) or None
        except Exception:  # a scheduler that does not answer: no limit
            return None

    def _allowed(self) -> list[str] | None:
        if not self.avoid:
            return None
        workers = set(self.client.scheduler_info().get("workers", {})) - self.avoid
        return sorted(workers) or None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Submit ``fn(*args, **kwargs)`` to a worker that is not avoided."""
        allowed = self._allowed()
        options: dict[str, Any] = {"pure": False}
        if allowed:
            options.update(workers=allowed, allow_other_workers=False)
        dfut = self.client.submit(fn, *args, **options, **kwargs)
        out: cf.Future[Any] = cf.Future()
        out.set_running_or_notify_cancel()
        with self._lock:
            self._keys[out] = dfut

        def copy(f: Any) -> None:
            with self._lock:
                self._keys.pop(out, None)
                self._started.pop(out, None)
            if out.done():
                return
            try:
                if f.status == "finished":
                    out.set_result(f.result())
                else:
                    out.set_exception(f.exception() or RuntimeError(f"task {f.status}"))
            except BaseException as exc:  # cancelled, lost: all end the future
                if not out.done():
                    out.set_exception(exc)

        dfut.add_done_callback(copy)
        return out

    def _processing_keys(self) -> frozenset[Any]:
        """Keys the scheduler has given to workers (asked at most every 0.2 s)."""
        asked, keys = self._processing
        now = time.monotonic()
        if now - asked > _PROCESSING_EVERY:
            try:
                found = self.client.processing()
            except Exception:  # a scheduler that does not answer: nothing seen running
                found = {}
            keys = frozenset(k for ks in found.values() for k in ks)
            self._processing = (now, keys)
        return keys

    def started_at(self, fut: cf.Future[Any]) -> float | None:
        """When a worker was first seen with ``fut`` (``None``: still queued or unknown).

        Read from the scheduler's ``processing`` table, so at most about 0.2 s late.
        """
        with self._lock:
            seen = self._started.get(fut)
            dfut = self._keys.get(fut)
        if seen is not None or dfut is None:
            return seen
        if dfut.key not in self._processing_keys():
            return None
        now = time.monotonic()
        with self._lock:
            return self._started.setdefault(fut, now)

    def abandon(self, fut: cf.Future[Any]) -> None:
        """Cancel a stuck task and avoid the worker(s) that were processing it."""
        with self._lock:
            dfut = self._keys.pop(fut, None)
            self._started.pop(fut, None)
        if dfut is None:
            return
        try:
            processing = self.client.processing()
        except Exception:
            processing = {}
        stuck = {w for w, keys in processing.items() if dfut.key in keys}
        if stuck:
            log.warning("dask.distributed: avoiding worker(s) %s (task timed out)", sorted(stuck))
            self.avoid |= stuck
        dfut.cancel()
        fut.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel outstanding tasks (the client is closed by its owner)."""
        with self._lock:
            pending = list(self._keys.values())
            self._keys.clear()
        if cancel_futures and pending:
            self.client.cancel(pending)


@contextlib.contextmanager
def open_distributed(
    scheduler_address: str | None = None,
    *,
    workers: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    check_versions: bool | None = None,
    device: str | None = None,
) -> Iterator[ExecutorScheduler]:
    """Yield an :class:`ExecutorScheduler` over a dask.distributed cluster.

    Args:
        scheduler_address: ``tcp://host:port`` of a running scheduler (e.g. one started by
            dask-jobqueue); ``None`` starts a loopback-only local cluster.
        workers: worker processes of the local cluster (with ``device="gpu"``: GPUs).
        retries: extra attempts of a failed fit task.
        timeout: seconds per fit task.
        check_versions: compare pyhf_dask/pyhf versions with a worker first.
        device: ``"gpu"`` without an address: dask-cuda's ``LocalCUDACluster``, one
            worker per visible GPU (:func:`local_gpu_cluster`). With an address nothing
            is checked here: the cluster's workers have the GPUs, not this machine.

    Raises:
        MissingDependency: ``distributed`` (or, for ``device="gpu"``, dask-cuda) is not
            installed.
        InvalidOption: ``device="gpu"`` without an address, and no GPU is visible here or
            fewer than ``workers``.
    """
    distributed = require("distributed", "distributed")
    cluster = None
    client = None
    try:
        # not the default scheduler: local reads (a store) never go to the workers
        if scheduler_address:
            client = distributed.Client(scheduler_address, set_as_default=False)
        else:
            start = local_gpu_cluster if device == "gpu" else local_cluster
            cluster = start(workers)
            client = distributed.Client(cluster, set_as_default=False)
        log.info("dask.distributed scheduler at %s", client.scheduler.address)
        with contextlib.suppress(Exception):
            client.run(_quiet_pyhf)
        executor = AvoidingExecutor(client)
        yield ExecutorScheduler(
            executor,
            retries=retries,
            timeout=timeout,
            check_versions=check_versions,
            name="dask.distributed",
        )
    finally:
        # closing with tasks still on a stuck worker logs asyncio tracebacks: keep them out
        quiet = logging.getLogger("asyncio")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        wait = float(config.get("executor.close-timeout"))
        try:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close(timeout=wait)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=wait)
        finally:
            quiet.setLevel(level)
