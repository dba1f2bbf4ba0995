"""Failures end with every point accounted for: retried to success or marked failed."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time

import numpy as np
import pytest
from engine_checks import converged, failed, scan_processes

import pyhf_dask
from pyhf_dask.exceptions import VersionMismatch
from pyhf_dask.executors import ExecutorScheduler

pytestmark = pytest.mark.filterwarnings("ignore")


class FlakyExecutor(cf.Executor):
    """Threads; the first ``lose`` submissions are 'lost' (never finish or fail)."""

    def __init__(self, lose: int = 0, hang: bool = False, versions: dict | None = None):
        self.pool = cf.ThreadPoolExecutor(2)
        self.lose, self.hang, self.versions = lose, hang, versions

    def submit(self, fn, /, *args, **kwargs):
        if fn.__name__ == "worker_versions" and self.versions is not None:
            fut = cf.Future()
            if isinstance(self.versions, Exception):
                fut.set_exception(self.versions)
            else:
                fut.set_result(self.versions)
            return fut
        if self.lose > 0:
            self.lose -= 1
            fut = cf.Future()
            if not self.hang:
                fut.set_exception(ConnectionError("worker lost"))
            return fut
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, **_):
        self.pool.shutdown(wait=wait)


def test_lost_tasks_are_retried(lazy_scan, reference):
    adapter = ExecutorScheduler(FlakyExecutor(lose=3), retries=2, check_versions=False)
    out = lazy_scan.compute(scheduler=adapter)
    np.testing.assert_array_equal(out.CLs_obs.values, reference.CLs_obs.values)
    assert adapter.stats["retried"] == 3 and adapter.stats["failed"] == 0


def test_timeout_then_success(lazy_scan, reference):
    adapter = ExecutorScheduler(FlakyExecutor(lose=2, hang=True), timeout=1.0, check_versions=False)
    out = lazy_scan.compute(scheduler=adapter)
    np.testing.assert_array_equal(out.CLs_obs.values, reference.CLs_obs.values)
    # the two lost tasks; under load a queued fit may also pass the 1 s and be retried
    assert adapter.stats["retried"] >= 2 and adapter.stats["failed"] == 0


def test_retries_exhausted_marks_failed(lazy_scan):
    adapter = ExecutorScheduler(FlakyExecutor(lose=1000), retries=1, check_versions=False)
    out = lazy_scan.compute(scheduler=adapter)
    assert failed(out.status).all()
    assert "worker lost" in out.message.values[0]


def test_version_mismatch(lazy_scan):
    remote = {"pyhf_dask": "0.0.1", "pyhf": "0.7.6", "python": "3.11"}
    with pytest.raises(VersionMismatch, match="pyhf_dask: client"):
        lazy_scan.compute(scheduler=ExecutorScheduler(FlakyExecutor(versions=remote)))
    missing = ModuleNotFoundError("No module named 'pyhf_dask'")
    with pytest.raises(VersionMismatch, match="not importable"):
        lazy_scan.compute(scheduler=ExecutorScheduler(FlakyExecutor(versions=missing)))


def _long_scan(seed_grid):
    grid = pyhf_dask.SignalGrid.from_function(
        seed_grid.workspace, pyhf_dask.grid.scaled_signal, scale=list(np.linspace(0.2, 3, 40))
    )
    return pyhf_dask.scan(grid, kernel="pyhf", chunk_size=2)


def _kill_when_running(adapter, pids, delay=0.5):
    def killer():
        while adapter.stats.get("submitted", 0) < 2:
            time.sleep(0.02)
        time.sleep(delay)
        os.kill(pids[0], signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def _accounted(out):
    good, bad = converged(out.status), failed(out.status)
    assert len(good) == 40 and (good | bad).all()
    assert np.isfinite(out.CLs_obs.values[good]).all()
    return int(good.sum())


def test_distributed_worker_killed(seed_grid):
    distributed = pytest.importorskip("distributed")
    from pyhf_dask.executors.distributed import local_cluster

    lazy = _long_scan(seed_grid)
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        adapter = ExecutorScheduler(client.get_executor(pure=False), retries=2)
        killer = _kill_when_running(adapter, pids)
        out = lazy.compute(scheduler=adapter)
        killer.join()
    assert _accounted(out) == 40


def test_parsl_worker_killed(seed_grid, tmp_path):
    pytest.importorskip("parsl")
    from pyhf_dask.executors.parsl import open_parsl

    lazy = _long_scan(seed_grid)
    with open_parsl(workers=2) as adapter:
        pids = {adapter.executor.submit(os.getpid).result() for _ in range(8)}
        pool = [p for p in scan_processes((str(tmp_path), "pyhf-dask-parsl-")) if p.pid in pids]
        assert pool, "Parsl worker processes not found"
        adapter.check_versions = False  # the killed worker must be running a fit task
        killer = _kill_when_running(adapter, [p.pid for p in pool])
        out = lazy.compute(scheduler=adapter)
        killer.join()
    assert _accounted(out) == 40
    assert adapter.stats["retried"] >= 1
