"""dask.distributed: a task's timeout counts from a worker taking it, not from submission.

A real LocalCluster that has no worker yet (a cluster still starting, or a batch queue):
tasks wait on the scheduler, and a timeout shorter than the wait must not fail them.
"""

from __future__ import annotations

import threading
import time

import dask
import pytest

distributed = pytest.importorskip("distributed")

from pyhf_dask.executors import wrap  # noqa: E402
from pyhf_dask.executors.distributed import AvoidingExecutor  # noqa: E402


def _slow_double(x: int) -> int:
    time.sleep(0.2)
    return 2 * x


@pytest.fixture
def empty_cluster():
    """An in-process cluster (no network) with no worker (the test adds one)."""
    cluster = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_started_at_is_when_a_worker_takes_the_task(empty_cluster) -> None:
    cluster, client = empty_cluster
    executor = AvoidingExecutor(client)
    fut = executor.submit(_slow_double, 21)
    time.sleep(1.0)
    assert executor.started_at(fut) is None  # queued: no worker yet
    cluster.scale(1)
    _wait(lambda: executor.started_at(fut) is not None or fut.done())
    assert fut.result(timeout=60) == 42
    assert executor.started_at(fut) is None  # forgotten once done


def test_queue_time_does_not_count_against_the_timeout(empty_cluster) -> None:
    cluster, client = empty_cluster
    scheduler = wrap(
        AvoidingExecutor(client), retries=0, timeout=1.5, check_versions=False, remote="all"
    )
    late = threading.Timer(4.0, cluster.scale, args=(1,))  # the worker comes after 4 s
    late.start()
    try:
        tasks = [dask.delayed(_slow_double)(i) for i in range(3)]
        assert dask.compute(*tasks, scheduler=scheduler) == (0, 2, 4)
    finally:
        late.cancel()
