"""Default chunks follow the workers that will run the fits: a cluster's, an executor's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dask
import pytest

import pyhf_dask
from pyhf_dask.grid import SignalGrid, scaled_signal
from pyhf_dask.scan import active_workers


def _n_tasks(ds) -> int:
    return len(ds.CLs_obs.chunks[0])


@pytest.fixture
def grid(seed_workspace: dict) -> SignalGrid:
    return SignalGrid.from_function(
        seed_workspace, scaled_signal, scale=[0.2 * k for k in range(1, 25)]
    )


@pytest.mark.parametrize("kernel", ["pyhf", "jax"])
def test_a_distributed_client_sets_the_number_of_fit_tasks(grid, kernel) -> None:
    distributed = pytest.importorskip("distributed")
    n_workers = 3
    with (
        dask.config.set({"pyhf-dask.workers": 1}),  # the cluster wins over the setting
        distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert active_workers() == n_workers
        ds = pyhf_dask.scan(grid, kernel=kernel)
        assert _n_tasks(ds) >= n_workers
        ds = pyhf_dask.scan(grid, kernel=kernel, scheduler=client)
        assert _n_tasks(ds) >= n_workers
        assert active_workers(client.get_executor()) == n_workers
    with dask.config.set({"pyhf-dask.workers": 1}):  # no client any more: the setting
        assert _n_tasks(pyhf_dask.scan(grid, kernel="jax")) == 1


def test_an_executor_sets_the_number_of_fit_tasks(grid) -> None:
    with (
        dask.config.set({"pyhf-dask.workers": 1}),
        ThreadPoolExecutor(max_workers=5) as pool,
    ):
        assert _n_tasks(pyhf_dask.scan(grid, kernel="jax", scheduler=pool)) == 5
        wrapped = pyhf_dask.executors.wrap(pool, check_versions=False)
        assert _n_tasks(pyhf_dask.scan(grid, kernel="jax", scheduler=wrapped)) == 5
        assert _n_tasks(pyhf_dask.scan(grid, kernel="pyhf", scheduler=pool)) >= 5
