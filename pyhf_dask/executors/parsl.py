"""Parsl: a user's Parsl configuration file, or a loopback-only local HighThroughputExecutor.

A Parsl configuration file is a Python file that defines ``config`` (a
``parsl.config.Config``), as in Parsl's documentation; see ``deploy/parsl_slurm.py``.

Example:
    >>> with open_parsl(workers=2) as scheduler:  # doctest: +SKIP
    ...     ds.compute(scheduler=scheduler)
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyhf_dask import config as settings
from pyhf_dask._optional import require
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors.adapter import ExecutorScheduler

__all__ = ["load_config", "local_config", "open_parsl", "own_processes"]

log = logging.getLogger(__name__)


def local_config(workers: int | None = None, run_dir: str | None = None) -> Any:
    """A Parsl ``Config``: one HighThroughputExecutor on this machine, loopback only.

    The interchange binds to 127.0.0.1 (``address``), its client side uses 127.0.0.1
    (``loopback_address``) and messages are CurveZMQ-encrypted (``encrypted=True``).
    Parsl's own retries are off: :class:`ExecutorScheduler` retries.
    """
    require("parsl", "parsl")
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    heartbeat = int(settings.get("executor.heartbeat"))
    htex = HighThroughputExecutor(
        label="pyhf-dask-htex",
        address="127.0.0.1",
        loopback_address="127.0.0.1",
        encrypted=True,
        max_workers_per_node=workers or os.cpu_count() or 1,
        heartbeat_period=heartbeat,
        heartbeat_threshold=3 * heartbeat,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
    )
    # Parsl starts its interchange and worker pool by command name: use the ones of this
    # environment when it is not on PATH (a virtualenv run without activating it)
    bindir = os.path.dirname(sys.executable)
    for name in ("interchange.py", "process_worker_pool.py"):
        beside = os.path.join(bindir, name)
        if shutil.which(name) is None and os.access(beside, os.X_OK):
            htex.interchange_launch_cmd = [
                beside if part == name else part for part in htex.interchange_launch_cmd
            ]
            htex.launch_cmd = htex.launch_cmd.replace(f"{name} ", f"{beside} ", 1)
    return Config(
        executors=[htex],
        retries=0,
        run_dir=run_dir or "runinfo",
        initialize_logging=False,
        strategy="none",
    )


def load_config(path: str | os.PathLike[str]) -> Any:
    """The ``config`` object defined by the Python file ``path``."""
    require("parsl", "parsl")
    from parsl.config import Config

    file = Path(path)
    if not file.is_file():
        msg = f"{file}: Parsl configuration file not found"
        raise InvalidOption(msg)
    namespace = runpy.run_path(str(file))
    config = namespace.get("config")
    if not isinstance(config, Config):
        msg = f"{file}: must define `config = parsl.config.Config(...)`"
        raise InvalidOption(msg)
    return config


@contextlib.contextmanager
def open_parsl(
    config: str | os.PathLike[str] | Any | None = None,
    *,
    workers: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    check_versions: bool | None = None,
) -> Iterator[ExecutorScheduler]:
    """Yield an :class:`ExecutorScheduler` over Parsl's ``ParslPoolExecutor``.

    Args:
        config: a Parsl ``Config``, a path to a Python file defining ``config``, or
            ``None`` for :func:`local_config` (run directory in a temporary folder).
        workers: workers of the local configuration.
        retries: extra attempts of a failed fit task.
        timeout: seconds per fit task.
        check_versions: compare pyhf_dask/pyhf versions with a worker first.
    """
    require("parsl", "parsl")
    from parsl.concurrent import ParslPoolExecutor

    tmp = None
    parsl_config: Any
    if config is None:
        tmp = tempfile.mkdtemp(prefix="pyhf-dask-parsl-")
        parsl_config = local_config(workers, run_dir=os.path.join(tmp, "runinfo"))
        own_processes(parsl_config, remove=tmp)
    elif isinstance(config, str | os.PathLike):
        parsl_config = load_config(config)
    else:
        parsl_config = config
    pool = None
    try:
        with _children_ignore_sigint():
            pool = ParslPoolExecutor(parsl_config)
        yield ExecutorScheduler(
            pool,
            retries=retries,
            timeout=timeout,
            check_versions=check_versions,
            name="Parsl",
            # the local HTEX runs one task per worker: no queue time counts against timeout
            max_in_flight=(workers or os.cpu_count() or 1) if tmp else None,
        )
    finally:
        # Parsl cannot cancel tasks (its futures raise NotImplementedError): the DFK's
        # cleanup stops the interchange and the worker pool, and open_scheduler kills
        # any process (a stopped worker) that outlives it
        started = _detached(tmp) if tmp else []
        if pool is not None:
            _shutdown(pool)
            _stop_poller(pool)
        if tmp:
            left = [*started, *_detached(tmp)]
            if left:
                from pyhf_dask.executors.local import stop_processes

                log.info("stopping %d Parsl processes left running", len(left))
                stop_processes(left, grace=float(settings.get("executor.stop-grace")))
            shutil.rmtree(tmp, ignore_errors=True)


def own_processes(config: Any, *, remove: str | None = None) -> None:
    """Make the local processes of ``config`` die with this process, however it ends.

    The interchange and the worker pool of each HighThroughputExecutor on a
    ``LocalProvider`` are started through the watcher of
    :mod:`pyhf_dask.executors.owned`: when this process ends first (SIGKILL, an
    out-of-memory kill), they and their workers are killed and ``remove`` (the run
    folder) is deleted.
    """
    from parsl.providers import LocalProvider

    from pyhf_dask.executors.owned import owned_command, owned_launch_cmd

    for executor in getattr(config, "executors", []):
        if not isinstance(getattr(executor, "provider", None), LocalProvider):
            continue
        launch = getattr(executor, "interchange_launch_cmd", None)
        if launch:
            executor.interchange_launch_cmd = owned_command(list(launch), remove=remove)
        if isinstance(getattr(executor, "launch_cmd", None), str):
            executor.launch_cmd = owned_launch_cmd(executor.launch_cmd)


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start Parsl's interchange with SIGINT ignored (inherited through exec): a terminal's
    Ctrl-C reaches the whole process group, and a dead interchange would leave the DFK's
    cleanup waiting for it forever. This process handles Ctrl-C and stops it instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _shutdown(pool: Any, timeout: float | None = None) -> None:
    """The DFK's cleanup, given up after ``timeout`` (it waits on the interchange)."""
    timeout = float(settings.resolve(timeout, "executor.shutdown-timeout"))

    def cleanup() -> None:
        try:
            pool.shutdown(wait=False)
        except Exception:  # teardown goes on
            log.warning("Parsl shutdown failed", exc_info=log.isEnabledFor(logging.DEBUG))

    if _interchange_dead(pool):  # the cleanup would wait for it forever
        log.info("Parsl's interchange is gone; stopping its processes directly")
        return
    thread = threading.Thread(target=cleanup, name="parsl-shutdown", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        log.warning("Parsl did not shut down within %g s; stopping its processes", timeout)


def _stop_poller(pool: Any) -> None:
    """Stop the DFK's job-status poller thread: after an interrupted shutdown it can still
    be polling the block's job files while the run directory is removed (a traceback
    from Parsl's thread on stderr, seen once in CI). Only the thread is stopped; the
    blocks are stopped by the cleanup and by the process sweep."""
    poller = getattr(getattr(pool, "_dfk", None), "job_status_poller", None)
    if poller is None:
        return
    from parsl.utils import Timer

    try:
        Timer.close(poller, timeout=5.0)  # the base class: no scaling in, only the thread
    except Exception:  # teardown goes on
        log.debug("stopping Parsl's job status poller failed", exc_info=True)


def _interchange_dead(pool: Any) -> bool:
    """Whether an interchange this process started has exited (killed by a signal)."""
    dfk = getattr(pool, "_dfk", None)
    for executor in getattr(dfk, "executors", {}).values():
        proc = getattr(executor, "interchange_proc", None)
        if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
            return True
    return False


def _detached(marker: str) -> list[Any]:
    """What Parsl started outside this process tree (the LocalProvider's worker pool runs
    in its own session): processes whose command line names our run directory, and their
    descendants (workers, which a stopped state keeps alive through the pool's SIGTERM)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with parsl
        return []
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
    found.pop(os.getpid(), None)
    return list(found.values())
