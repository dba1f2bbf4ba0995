"""Workers die or stop, the scan goes on: real CLI scans, real SIGKILL and SIGSTOP.

Each scan writes a .zarr store of 64 seed-model points (16 chunks) with two workers;
the fault is injected once a few chunks are stored, and the finished store must equal a
clean run with every point converged, with no process of the scan left behind.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_faults_support import (
    FAST,
    N,
    assert_all_gone,
    assert_same,
    done,
    scan_tree,
    start,
    wait_for,
    workers,
)

from pyhf_dask.store import open_store

pytestmark = pytest.mark.filterwarnings("ignore")


def _fault_scan(fault_inputs, store, sig, *extra, executor="local"):
    """Scan, send ``sig`` to one worker after 8 points are stored; return the result."""
    args = [
        *fault_inputs,
        *FAST,
        "--workers",
        "2",
        "--executor",
        executor,
        "-o",
        str(store),
        *extra,
    ]
    proc = start(*args, tmp=store.parent)
    wait_for(lambda: done(store) >= 8, proc)
    victims = workers(proc.pid, store.parent)
    assert victims, "no worker process found"
    tree = scan_tree(proc.pid, store.parent)
    started = time.monotonic()
    os.kill(victims[-1].pid, sig)
    _, err = proc.communicate(timeout=240)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    assert_all_gone(tree)
    return open_store(store), err, time.monotonic() - started


def test_sigkill_local_worker_pool_is_replaced(fault_inputs, fault_clean, tmp_path):
    ds, err, _ = _fault_scan(fault_inputs, tmp_path / "k.zarr", signal.SIGKILL)
    assert_same(ds, fault_clean)  # 120 of 120 converged: the lost chunks were retried
    assert "starting a new pool" in err
    assert f"{N} points: {N} converged, 0 failed" in err


def test_sigstop_local_worker_is_killed_and_its_task_retried(fault_inputs, fault_clean, tmp_path):
    # no hang in shutdown on the stopped worker: _fault_scan's communicate() is bounded
    ds, err, _ = _fault_scan(fault_inputs, tmp_path / "s.zarr", signal.SIGSTOP, "--timeout", "5")
    assert_same(ds, fault_clean)
    # the stopped worker was killed: after 5 s of running, or, on a loaded machine, by the
    # check for a pool where nothing starts (the stopped worker may hold the pool's queue)
    assert "killing worker(s)" in err
    assert (
        "no result within 5 s of running" in err
        or "not started by any worker" in err
        or ("(task timed out)" in err)
    )


def test_timeout_counts_running_time_not_queue_time(fault_inputs, fault_clean, tmp_path):
    """16 chunks on 2 workers: each runs well under 3 s, but most wait longer in line."""
    store = tmp_path / "t.zarr"
    proc = start(
        *fault_inputs, *FAST, "--workers", "2", "--timeout", "3", "-o", str(store), tmp=tmp_path
    )
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "TimeoutError" not in err and "retrying" not in err
    assert_same(open_store(store), fault_clean)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["distributed", "parsl"])
def test_sigstop_remote_worker_then_scan_finishes(fault_inputs, fault_clean, tmp_path, executor):
    pytest.importorskip(executor)
    store = tmp_path / f"{executor}.zarr"
    # a remote executor's timeout counts from submission (worker start-up and queueing
    # included): generous, so that a loaded machine does not time out healthy tasks
    ds, err, _ = _fault_scan(
        fault_inputs, store, signal.SIGSTOP, "--timeout", "30", executor=executor
    )
    assert_same(ds, fault_clean)
    assert "NotImplementedError" not in err  # Parsl cannot cancel a task: no error for it
    if executor == "distributed":
        assert "avoiding worker" in err
