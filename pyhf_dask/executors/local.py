"""The embedded ``local`` executor: a spawned process pool that survives its workers.

:class:`LocalProcessPool` is a ``concurrent.futures.Executor`` over
``ProcessPoolExecutor`` (``spawn`` start method: JAX deadlocks in processes forked after
it was used) that adds what a long scan needs:

- **a broken pool is replaced.** When a worker dies (SIGKILL, out of memory), Python marks
  the whole pool broken and fails every outstanding future with ``BrokenProcessPool``; the
  next ``submit`` starts a fresh pool, so the retries of
  :class:`~pyhf_dask.executors.adapter.ExecutorScheduler` run instead of failing at once.
- **running time is known.** Each worker reports when it starts a task (and its pid), so a
  timeout counts running time only (:meth:`started_at`), never time spent queued.
- **a stuck task can be abandoned.** :meth:`abandon` kills the worker running it
  (a stopped or hung worker), which breaks and replaces the pool.
- **GPU workers.** :func:`open_pool` with ``device="gpu"`` starts one worker per visible
  GPU, each pinned with ``CUDA_VISIBLE_DEVICES`` and with JAX's preallocation off
  (:mod:`pyhf_dask.gpu`), and refuses in one line, before any fit, when no GPU is
  visible.
- **warm workers.** With ``preload`` (importable ``"module"`` or ``"module:function"``
  names, e.g. a kernel's warm-up), every worker is started at once and imports them
  while the caller is still reading its inputs: process start and imports leave the
  critical path.
- **shutdown never hangs.** Workers that do not exit after a grace period (a SIGSTOPped
  worker, a fit that is still running after Ctrl-C) are continued and killed.

Workers ignore SIGINT (the parent handles Ctrl-C and stops them) and take the parent's
log level for pyhf, so pyhf's logged tracebacks never reach the terminal from a worker.
They die with the parent however it ends, SIGKILL included (a parent-death signal and an
orphan check, :mod:`pyhf_dask.executors.owned`).

Example:
    >>> with LocalProcessPool(1) as pool:  # doctest: +SKIP
    ...     pool.submit(sum, [1, 2]).result()
    3
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import importlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pyhf_dask.executors.owned import owned_context

__all__ = ["LocalProcessPool", "open_pool", "stop_processes"]

log = logging.getLogger(__name__)

_EVENTS: Any = None  # the worker side of the start-event queue
#: Seconds a clean shutdown waits for idle workers to exit before killing them.
IDLE_GRACE = 0.1


def _init_worker(
    events: Any,
    pyhf_level: int,
    environments: list[dict[str, str]] | None = None,
    started: Any = None,
    preload: tuple[str, ...] = (),
) -> None:
    """Initializer of every worker process.

    With ``environments``, the ``k``-th worker started by the pool takes
    ``environments[k % len(environments)]`` (its GPU), before anything starts JAX; then
    the ``preload`` names are imported (and their functions called).
    """
    global _EVENTS  # noqa: PLW0603
    _EVENTS = events
    if environments:
        with started.get_lock():
            k = started.value
            started.value += 1
        os.environ.update(environments[k % len(environments)])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    logging.getLogger("pyhf").setLevel(pyhf_level)
    for name in preload:
        run_preload(name)


def run_preload(name: str) -> None:
    """Import ``"module"`` or call ``"module:function"``; a failure is only logged (the
    tasks that need it will fail with their own error)."""
    module, _, func = name.partition(":")
    try:
        loaded = importlib.import_module(module)
        if func:
            getattr(loaded, func)()
    except Exception as exc:
        log.debug("worker preload %s failed: %s", name, exc)


def _run_task(task_id: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one task in a worker after reporting its start to the parent."""
    if _EVENTS is not None:
        _EVENTS.put((task_id, os.getpid()))
    return fn(*args, **kwargs)


def stop_processes(processes: list[Any], *, grace: float = 0.0) -> None:
    """Wait up to ``grace`` seconds for processes to end, then continue and kill them.

    Works on ``multiprocessing.Process`` and ``psutil.Process`` objects; a stopped
    (SIGSTOP) process is sent SIGCONT so that it can die.
    """
    deadline = time.monotonic() + grace
    for proc in processes:
        pid = getattr(proc, "pid", None)
        if pid is None:
            continue
        while _alive(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(proc):
            continue
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
    for proc in processes:
        join = getattr(proc, "join", None) or getattr(proc, "wait", None)
        if join is not None:
            try:
                join(5)
            except Exception:  # best effort: psutil may raise on reaped pids
                log.debug("waiting for process %s failed", getattr(proc, "pid", "?"))


def _alive(proc: Any) -> bool:
    try:
        if hasattr(proc, "is_alive"):
            return bool(proc.is_alive())
        return bool(proc.is_running()) and proc.status() != "zombie"
    except Exception:  # a process that cannot be queried is gone
        return False


class LocalProcessPool(cf.Executor):
    """A spawned process pool that replaces itself when broken and never hangs on shutdown.

    Args:
        workers: worker processes.
        grace: seconds ``shutdown(wait=True)`` waits for workers still running a task to exit before
            killing them.
        environments: per-worker environment variables, taken in turn by the workers
            of each (new) pool, e.g. one GPU each (:func:`open_pool`).
        preload: ``"module"`` or ``"module:function"`` names every worker imports (and
            calls) when it starts; the workers are then started at once.
    """

    def __init__(
        self,
        workers: int,
        *,
        grace: float = 3.0,
        environments: list[dict[str, str]] | None = None,
        preload: tuple[str, ...] = (),
    ) -> None:
        self.workers = int(workers)
        self.preload = tuple(preload)
        self.grace = grace
        self.environments = [dict(e) for e in environments] if environments else None
        self._ctx = owned_context()  # spawn; workers die with this process, however it ends
        self._lock = threading.Lock()
        self._events = self._ctx.SimpleQueue()
        self._ids = itertools.count()
        self._task_of: dict[int, cf.Future[Any]] = {}
        self._started: dict[cf.Future[Any], tuple[float, int]] = {}
        self._old: list[Any] = []
        self._stopped = False
        self.replaced = 0
        self._pool = self._new_pool()
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()
        if self.preload:
            self._start_workers()

    def _start_workers(self) -> None:
        """Start every worker now (a spawned pool otherwise starts one per submission)."""
        for _ in range(self.workers):
            self._pool.submit(os.getpid)

    #: In-flight submissions the adapter should allow (one per worker: no queue wait).
    @property
    def capacity(self) -> int:
        """Tasks that can run at once."""
        return self.workers

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        level = logging.getLogger("pyhf").getEffectiveLevel()
        started = self._ctx.Value("i", 0) if self.environments else None  # per pool
        return cf.ProcessPoolExecutor(
            self.workers,
            mp_context=self._ctx,
            initializer=_init_worker,
            initargs=(self._events, level, self.environments, started, self.preload),
        )

    def _read_events(self) -> None:
        while True:
            try:
                event = self._events.get()
            except (EOFError, OSError):
                return
            if event is None:
                return
            task_id, pid = event
            with self._lock:
                fut = self._task_of.get(task_id)
                if fut is not None and not fut.done():
                    self._started[fut] = (time.monotonic(), pid)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Submit ``fn(*args, **kwargs)``; a broken pool is replaced first."""
        with self._lock:
            if self._stopped:
                msg = "cannot submit to a local process pool after shutdown"
                raise RuntimeError(msg)
            task_id = next(self._ids)
            for _ in range(2):
                if getattr(self._pool, "_broken", False):
                    self._replace()
                try:
                    fut = self._pool.submit(_run_task, task_id, fn, *args, **kwargs)
                    break
                except BrokenProcessPool:
                    self._replace()
            else:  # pragma: no cover - a fresh pool is never broken at submission
                msg = "the local process pool broke again right after it was replaced"
                raise BrokenProcessPool(msg)
            self._task_of[task_id] = fut
        fut.add_done_callback(functools.partial(self._forget, task_id))
        return fut

    def _forget(self, task_id: int, fut: cf.Future[Any]) -> None:
        with self._lock:
            self._task_of.pop(task_id, None)
            self._started.pop(fut, None)

    def _replace(self) -> None:
        """Start a new pool; the broken one is stopped in the background (lock held)."""
        old = self._pool
        self.replaced += 1
        log.warning("local process pool: a worker died; starting a new pool")
        self._old.append(old)
        self._pool = self._new_pool()
        threading.Thread(target=_stop_pool, args=(old, 0.0), daemon=True).start()

    def started_at(self, fut: cf.Future[Any]) -> float | None:
        """``time.monotonic()`` when a worker started ``fut`` (``None``: not started)."""
        with self._lock:
            info = self._started.get(fut)
        return None if info is None else info[0]

    def abandon(self, fut: cf.Future[Any]) -> bool:
        """Kill the worker running ``fut`` (stuck or stopped); the pool is replaced."""
        with self._lock:
            info = self._started.get(fut)
            pids = [info[1]] if info is not None else self.worker_pids(locked=True)
        if info is None and fut.cancel():
            return True
        # a task that never started and cannot be cancelled sits in a stuck call queue
        log.warning("local process pool: killing worker(s) %s (task timed out)", pids)
        for pid in pids:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
        return True

    def worker_pids(self, *, locked: bool = False) -> list[int]:
        """Process ids of the current pool's workers (tests, diagnostics)."""
        if locked:
            return sorted((getattr(self._pool, "_processes", None) or {}).keys())
        with self._lock:
            return self.worker_pids(locked=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop every pool; workers still running after the grace period are killed.

        Outstanding futures are cancelled. Safe to call twice.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            pools = [*self._old, self._pool]
            busy = bool(self._task_of)
        # idle workers only tear down their interpreter (JAX's takes about 0.5 s): every
        # result is already back, so they are not waited for
        grace = (self.grace if busy else min(self.grace, IDLE_GRACE)) if wait else 0.0
        for pool in pools:
            _stop_pool(pool, grace)
        with contextlib.suppress(OSError, ValueError):
            self._events.put(None)
        self._reader.join(2)
        self._events.close()


def open_pool(
    workers: int | None = None,
    *,
    device: str | None = None,
    gpus: Callable[[], list[str]] | None = None,
    grace: float = 3.0,
    preload: tuple[str, ...] = (),
) -> LocalProcessPool:
    """The local executor's pool for a device: one worker per core, or per visible GPU.

    Args:
        workers: worker processes (default: one per CPU core; with ``device="gpu"`` one
            per visible GPU, more than that share their GPUs round-robin).
        device: ``"gpu"`` pins each worker to a GPU (``CUDA_VISIBLE_DEVICES``) with
            JAX's preallocation off; anything else starts CPU workers.
        gpus: GPU discovery (default :func:`pyhf_dask.gpu.visible_gpus`; tests inject
            one).
        grace: see :class:`LocalProcessPool`.
        preload: see :class:`LocalProcessPool`.

    Raises:
        InvalidOption: ``device="gpu"`` and no GPU is visible (one line, before any fit).
    """
    if device != "gpu":
        return LocalProcessPool(workers or os.cpu_count() or 1, grace=grace, preload=preload)
    from pyhf_dask.gpu import visible_gpus, worker_environments

    found = (gpus or visible_gpus)()
    environments = worker_environments(found, workers)
    log.info(
        "local GPU pool: %d worker(s) on GPU(s) %s, %s",
        len(environments),
        ",".join(found),
        ", ".join(f"{k}={v}" for k, v in environments[0].items() if k != "CUDA_VISIBLE_DEVICES"),
    )
    return LocalProcessPool(
        len(environments), grace=grace, environments=environments, preload=preload
    )


def _stop_pool(pool: cf.ProcessPoolExecutor, grace: float) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:  # a broken pool may fail to shut down cleanly
        log.debug("shutting down a process pool failed", exc_info=True)
    stop_processes(processes, grace=grace)
    if manager is not None:
        manager.join(5)
