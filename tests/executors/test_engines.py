"""The same 20-point scan on every engine gives identical CLs; engines listen on loopback."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from engine_checks import assert_same_cls

from pyhf_dask.executors import ExecutorScheduler, open_scheduler

pytestmark = pytest.mark.filterwarnings("ignore")


def test_synchronous(lazy_scan, reference):
    with open_scheduler("synchronous") as scheduler:
        assert_same_cls(lazy_scan.compute(scheduler=scheduler), reference)


def test_adapter_process_pool(lazy_scan, reference, listen_watch):
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        adapter = ExecutorScheduler(pool)
        out = lazy_scan.compute(scheduler=adapter)
    assert_same_cls(out, reference)
    assert adapter.stats["submitted"] == 7  # 20 points in chunks of 3: one task per chunk
    listen_watch.assert_loopback_only()


def test_distributed_local_cluster(lazy_scan, reference, listen_watch):
    pytest.importorskip("distributed")
    with open_scheduler("distributed", workers=2) as scheduler:
        out = lazy_scan.compute(scheduler=scheduler)
    assert_same_cls(out, reference)
    listen_watch.assert_loopback_only()
    assert listen_watch.seen, "the LocalCluster scheduler should have been seen listening"


def test_parsl_htex(lazy_scan, reference, listen_watch, tmp_path):
    pytest.importorskip("parsl")
    listen_watch.markers = (str(tmp_path),)
    with open_scheduler("parsl", workers=2) as scheduler:
        out = lazy_scan.compute(scheduler=scheduler)
    assert_same_cls(out, reference)
    listen_watch.assert_loopback_only()


@pytest.mark.parametrize("engine", ["globus", "process"])
def test_local_globus_compute_endpoint(lazy_scan, reference, listen_watch, engine):
    pytest.importorskip("globus_compute_endpoint")
    listen_watch.markers = ("pyhf-dask-endpoint-",)
    with open_scheduler("endpoint-local", engine=engine, workers=2) as scheduler:
        out = lazy_scan.compute(scheduler=scheduler)
        assert scheduler.stats["failed"] == 0
    assert_same_cls(out, reference)
    listen_watch.assert_loopback_only()
