"""Where a scan's graph runs: schedulers for ``dask.compute`` built from executor names.

``open_scheduler("local")`` is the embedded default: a process pool on this machine,
started with the ``spawn`` method (JAX deadlocks in processes forked after JAX was used).
It and the remote executors route fit tasks through
:class:`~pyhf_dask.executors.adapter.ExecutorScheduler` (retries, timeouts, failed points
marked instead of aborting the scan; every other task runs in this process):

========================  ==================================================  ===========
name                      where fit tasks run                                 extra
========================  ==================================================  ===========
``local``                 :class:`~.local.LocalProcessPool` (spawn)          --
``threads``               Dask thread pool                                    --
``synchronous``           this thread                                         --
``processes``             the same as ``local`` (an alias)                    --
``distributed``           ``--scheduler-address`` or a loopback LocalCluster  distributed
                          (``device="gpu"``: a loopback LocalCUDACluster)     cuda
``parsl``                 ``--parsl-config FILE`` or a loopback local HTEX    parsl
``globus``                Globus Compute endpoint ``--endpoint UUID``          globus
``endpoint-local``        an in-process Globus Compute endpoint engine        globus
========================  ==================================================  ===========

Everything a scheduler starts is stopped when its context ends, also after an error or a
signal: engines are shut down, then any process they started that is still alive (a
stopped worker, a Parsl interchange) is killed.

Any other ``concurrent.futures.Executor`` can be wrapped directly:
``ds.compute(scheduler=pyhf_dask.executors.wrap(executor))``. The adapter routes tasks by
what they are (:mod:`pyhf_dask.tasks`), never by key names, also after Dask's graph
optimisation has fused them: a scan's fit tasks, and a user's own ``dask.delayed`` tasks
(all that call user functions, or only those marked with ``pyhf_dask.tasks.remote`` or
annotated ``pyhf_dask_remote=True``), batched for endpoints with per-task latency (see
``examples/delayed_to_endpoint.py``). Defaults come from ``pyhf-dask.executor`` in the
configuration (:mod:`pyhf_dask.config`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

from pyhf_dask import config
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors.adapter import ExecutorScheduler

__all__ = ["EXECUTORS", "ExecutorScheduler", "open_scheduler", "wrap"]

log = logging.getLogger(__name__)

EXECUTORS = (
    "local",
    "synchronous",
    "threads",
    "processes",
    "distributed",
    "parsl",
    "globus",
    "endpoint-local",
)


def wrap(executor: Any, **kwargs: Any) -> ExecutorScheduler:
    """Scheduler for ``dask.compute`` that sends remote tasks to ``executor``.

    Globus Compute (and legacy funcX) executors get their payload limits applied.
    ``kwargs`` are those of :class:`ExecutorScheduler` (``retries``, ``timeout``,
    ``remote="all"|"marked"``, ``batch_size``, ...; ``None``: from the configuration).

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(2) as pool:
        ...     wrap(pool, retries=1).retries
        1
    """
    from pyhf_dask.executors.globus import wrap as _wrap

    return _wrap(executor, **kwargs)


@contextlib.contextmanager
def open_scheduler(
    executor: str | None = None,
    *,
    workers: int | None = None,
    endpoint: str | None = None,
    scheduler_address: str | None = None,
    parsl_config: str | os.PathLike[str] | None = None,
    engine: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    check_versions: bool | None = None,
    device: str | None = None,
    preload: tuple[str, ...] = (),
    **_: Any,
) -> Iterator[Any]:
    """Context manager yielding a ``scheduler=`` value for ``dask.compute``.

    Everything it starts is shut down on exit, also after an error.

    Args:
        executor: one of :data:`EXECUTORS` (``None``: ``pyhf-dask.executor.default``).
        workers: local worker processes or threads (default: one per core).
        endpoint: Globus Compute endpoint UUID (``globus``).
        scheduler_address: address of a running Dask scheduler (``distributed``).
        parsl_config: Python file defining a Parsl ``config`` (``parsl``).
        engine: ``"globus"`` or ``"process"`` (``endpoint-local``).
        retries: extra attempts of a failed, lost or timed-out fit task.
        timeout: seconds per fit task (``pyhf-dask.executor.timeout``, null: no limit).
        check_versions: compare pyhf_dask/pyhf versions with a worker at the start.
        device: ``"gpu"``: ``local``/``processes`` start one worker per visible GPU,
            ``distributed`` without an address one dask-cuda worker per visible GPU,
            ``threads``/``synchronous`` fit in this process; each refuses in one line
            (:class:`InvalidOption`) when no GPU is visible on this machine. Remote
            workers (``distributed`` with an address, ``parsl``, ``globus``) are not
            checked here: they, not this machine, have the GPUs.
        preload: ``"module"``/``"module:function"`` names the ``local``/``processes``
            workers import when they start, at once (e.g. a kernel's warm-up), so that
            their start overlaps the caller's work before the first task.

    Options left ``None`` are read from the ``pyhf-dask.executor`` configuration.

    Example:
        >>> with open_scheduler("synchronous") as scheduler:
        ...     scheduler
        'synchronous'
    """
    before = _descendants()
    try:
        with _open(
            str(config.resolve(executor, "executor.default")),
            workers=workers,
            endpoint=endpoint,
            scheduler_address=scheduler_address,
            parsl_config=parsl_config,
            engine=engine,
            retries=retries,
            timeout=timeout,
            check_versions=check_versions,
            device=device,
            preload=preload,
        ) as scheduler:
            yield scheduler
    finally:
        _reap(before)


def _descendants() -> dict[int, Any]:
    """This process's descendants by pid (empty without psutil)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed and parsl
        return {}
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.Error:  # pragma: no cover
        return {}


def _reap(before: dict[int, Any], grace: float | None = None) -> None:
    """Kill processes started since ``before`` that outlived their engine's shutdown."""
    from pyhf_dask.executors.local import stop_processes

    grace = float(config.resolve(grace, "executor.stop-grace"))
    left = [
        p
        for pid, p in _descendants().items()
        if pid not in before and not _is_tracker(p) and _running(p)
    ]
    if left:
        log.info("stopping %d processes left by the executor", len(left))
        stop_processes(left, grace=grace)


def _running(proc: Any) -> bool:
    try:
        return bool(proc.is_running()) and proc.status() != "zombie"
    except Exception:  # gone
        return False


def _is_tracker(proc: Any) -> bool:
    """multiprocessing's resource tracker: it ends by itself when this process does."""
    try:
        return "resource_tracker" in " ".join(proc.cmdline())
    except Exception:  # gone
        return True


@contextlib.contextmanager
def _open(
    executor: str,
    *,
    workers: int | None,
    endpoint: str | None,
    scheduler_address: str | None,
    parsl_config: str | os.PathLike[str] | None,
    engine: str | None,
    retries: int | None,
    timeout: float | None,
    check_versions: bool | None,
    device: str | None = None,
    preload: tuple[str, ...] = (),
) -> Iterator[Any]:
    import dask

    n = workers or os.cpu_count() or 1
    options: dict[str, Any] = {
        "retries": retries,
        "timeout": timeout,
        "check_versions": check_versions,
    }
    if executor in ("synchronous", "threads") and device == "gpu":
        from pyhf_dask.gpu import require_gpus

        require_gpus()  # the fits run in this process: refuse before any fit
    if executor == "synchronous":
        yield "synchronous"
    elif executor == "threads":
        yield functools.partial(dask.threaded.get, num_workers=n)
    elif executor in ("local", "processes"):
        from pyhf_dask.executors.local import open_pool

        # spawn, not fork: JAX deadlocks in processes forked after it was used
        pool = open_pool(workers, device=device, preload=preload)  # gpu: one worker per GPU
        clean = False
        try:
            yield ExecutorScheduler(pool, name="local process pool", **options)
            clean = True
        finally:  # after an error or a signal, running fits are not waited for
            pool.shutdown(wait=clean, cancel_futures=True)
    elif executor == "distributed":
        from pyhf_dask.executors.distributed import open_distributed

        with open_distributed(
            scheduler_address, workers=workers, device=device, **options
        ) as scheduler:
            yield scheduler
    elif executor == "parsl":
        from pyhf_dask.executors.parsl import open_parsl

        with open_parsl(parsl_config, workers=workers, **options) as scheduler:
            yield scheduler
    elif executor == "globus":
        from pyhf_dask.executors.globus import open_globus

        if not endpoint:
            msg = "--executor globus needs --endpoint UUID (see deploy/GUIDE.md)"
            raise InvalidOption(msg)
        with open_globus(endpoint, **options) as scheduler:
            yield scheduler
    elif executor == "endpoint-local":
        from pyhf_dask.executors.engine import LocalEndpointExecutor

        local = LocalEndpointExecutor(engine, workers=workers)
        try:
            yield wrap(local, name=f"local endpoint ({local.engine_name})", **options)
        finally:
            local.shutdown()
    else:
        msg = f"unknown executor {executor!r} (choose from: {', '.join(EXECUTORS)})"
        raise InvalidOption(msg)
