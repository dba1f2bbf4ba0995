"""dask.distributed: an existing cluster by address, or a loopback-only ``LocalCluster``.

Fit tasks go through :class:`~pyhf_dask.executors.adapter.ExecutorScheduler` over
``Client.get_executor(pure=False)``, so a failing or lost task is retried and finally
marked failed instead of aborting the scan.

Example:
    >>> with open_distributed(workers=1) as scheduler:  # doctest: +SKIP
    ...     ds.compute(scheduler=scheduler)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from pyhf_dask._optional import require
from pyhf_dask.executors.adapter import ExecutorScheduler

__all__ = ["local_cluster", "open_distributed"]

log = logging.getLogger(__name__)


def local_cluster(workers: int | None = None, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` that listens on 127.0.0.1 only.

    Scheduler, workers, nannies and dashboard bind to loopback (a default LocalCluster
    serves its dashboard on 0.0.0.0:8787). One single-threaded worker process per core.
    """
    distributed = require("distributed", "distributed")
    options: dict[str, Any] = {
        "n_workers": workers or os.cpu_count() or 1,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "worker_dashboard_address": "127.0.0.1:0",
        "scheduler_port": 0,
    }
    options.update(kwargs)
    return distributed.LocalCluster(**options)


@contextlib.contextmanager
def open_distributed(
    scheduler_address: str | None = None,
    *,
    workers: int | None = None,
    retries: int = 2,
    timeout: float | None = None,
    check_versions: bool = True,
) -> Iterator[ExecutorScheduler]:
    """Yield an :class:`ExecutorScheduler` over a dask.distributed cluster.

    Args:
        scheduler_address: ``tcp://host:port`` of a running scheduler (e.g. one started by
            dask-jobqueue); ``None`` starts a loopback-only ``LocalCluster``.
        workers: worker processes of the local cluster.
        retries: extra attempts of a failed fit task.
        timeout: seconds per fit task.
        check_versions: compare pyhf_dask/pyhf versions with a worker first.
    """
    distributed = require("distributed", "distributed")
    cluster = None
    client = None
    try:
        if scheduler_address:
            client = distributed.Client(scheduler_address)
        else:
            cluster = local_cluster(workers)
            client = distributed.Client(cluster)
        log.info("dask.distributed scheduler at %s", client.scheduler.address)
        yield ExecutorScheduler(
            client.get_executor(pure=False),
            retries=retries,
            timeout=timeout,
            check_versions=check_versions,
            name="dask.distributed",
        )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
