"""The same 20-point scan on every engine gives identical CLs; engines listen on loopback."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from engine_checks import assert_same_cls, converged

from pyhf_dask.executors import ExecutorScheduler, open_scheduler

pytestmark = pytest.mark.filterwarnings("ignore")


def test_synchronous(lazy_scan, seed_grid):
    """Against plain ``pyhf.infer.hypotest`` of each point, computed here without pyhf_dask."""
    with open_scheduler("synchronous") as scheduler:
        out = lazy_scan.compute(scheduler=scheduler)
    assert converged(out.status).all(), out.message.values
    assert list(out.point.values) == list(seed_grid.names)
    scales = seed_grid.values[:, 0]
    np.testing.assert_array_equal(scales, np.linspace(0.2, 3.0, 20))
    obs, exp = _plain_pyhf(scales)
    np.testing.assert_allclose(out.CLs_obs.values.ravel(), obs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out.CLs_exp.values.reshape(exp.shape), exp, rtol=1e-12, atol=0)


def _plain_pyhf(scales):
    """CLs_obs and the expected band at POI = 1, as a pyhf user computes them.

    The seed model built by pyhf itself (``uncorrelated_background``, observed [51, 48])
    with the signal [12, 11] times each scale: nothing of pyhf_dask is used.
    """
    import pyhf

    pyhf.set_backend("numpy", "scipy")
    obs, exp = [], []
    for scale in scales:
        model = pyhf.simplemodels.uncorrelated_background(
            [12.0 * scale, 11.0 * scale], [50.0, 52.0], [3.0, 7.0]
        )
        data = [51.0, 48.0, *model.config.auxdata]
        o, e = pyhf.infer.hypotest(1.0, data, model, return_expected_set=True)
        obs.append(float(o))
        exp.append([float(v) for v in e])
    return np.array(obs), np.array(exp)


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
