"""Every public way of computing a scan sends each fit to the executor exactly once.

A counting executor behind the adapter counts submissions and the points in them; the
fit task's own ``__call__`` (what would run in the client) is counted too and must never
run. Dask's optimisation fuses the fit into its extraction when one variable is computed
alone: the adapter must find it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from conftest import N_POINTS
from engine_checks import CountingExecutor

import pyhf_dask
from pyhf_dask.executors import ExecutorScheduler, wrap
from pyhf_dask.graph import FitTask
from pyhf_dask.tasks import RemoteTaskInClient, client_side

pytestmark = pytest.mark.filterwarnings("ignore")

N_CHUNKS = 7  # 20 points in chunks of 3


@pytest.fixture
def local_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fits run by ``FitTask.__call__``: in the client, never on a worker."""
    calls: list[int] = []
    original = FitTask.__call__

    def counted(self: FitTask, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(FitTask, "__call__", counted)
    return calls


@pytest.fixture
def counting() -> Iterator[tuple[CountingExecutor, ExecutorScheduler]]:
    ex = CountingExecutor()
    try:
        yield ex, wrap(ex, check_versions=False)
    finally:
        ex.shutdown()


def _assert_sent_once(ex: CountingExecutor, n_scans: int = 1) -> None:
    assert ex.calls["fit_chunk"] == n_scans * N_CHUNKS
    assert ex.points == n_scans * N_POINTS


def test_dataset_compute(counting, lazy_scan, reference, local_fits) -> None:
    ex, adapter = counting
    out = lazy_scan.compute(scheduler=adapter)
    _assert_sent_once(ex)
    assert not local_fits
    xr.testing.assert_identical(out.CLs_obs, reference.CLs_obs)


def test_one_variable_fused_fit_is_found(counting, lazy_scan, reference, local_fits) -> None:
    ex, adapter = counting
    out = lazy_scan.CLs_obs.compute(scheduler=adapter)
    _assert_sent_once(ex)
    assert not local_fits
    np.testing.assert_array_equal(out.values, reference.CLs_obs.values)


def test_dask_compute_of_several_collections(
    counting, seed_grid, lazy_scan, reference, local_fits
) -> None:
    ex, adapter = counting
    other_scan = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3, test_stat="q")
    other_work = dask.delayed(sum)([1, 2, 3])
    a, b, total = dask.compute(lazy_scan, other_scan.CLs_exp, other_work, scheduler=adapter)
    _assert_sent_once(ex, n_scans=2)
    assert not local_fits
    assert total == 6  # builtins: Dask's plumbing, run in the client
    assert ex.calls["sum"] == 0
    xr.testing.assert_identical(a.CLs_obs, reference.CLs_obs)
    expected = other_scan.CLs_exp.compute(scheduler="synchronous")
    np.testing.assert_array_equal(b.values, expected.values)


def test_persist_then_compute(counting, lazy_scan, reference, local_fits) -> None:
    ex, adapter = counting
    kept = lazy_scan.persist(scheduler=adapter)
    _assert_sent_once(ex)
    out = kept.compute()  # Dask's default scheduler: nothing left to fit
    again = kept.CLs_obs.compute(scheduler=adapter)
    _assert_sent_once(ex)
    assert not local_fits
    xr.testing.assert_identical(out.CLs_obs, reference.CLs_obs)
    xr.testing.assert_identical(again, reference.CLs_obs)


def test_adapter_as_configured_scheduler(counting, lazy_scan, reference, local_fits) -> None:
    ex, adapter = counting
    with dask.config.set(scheduler=adapter):
        out = lazy_scan.CLs_exp.compute()
    _assert_sent_once(ex)
    assert not local_fits
    np.testing.assert_array_equal(out.values, reference.CLs_exp.values)


def test_unoptimised_graph(counting, lazy_scan, reference, local_fits) -> None:
    ex, adapter = counting
    (out,) = dask.compute(lazy_scan.CLs_obs, scheduler=adapter, optimize_graph=False)
    _assert_sent_once(ex)
    assert not local_fits
    np.testing.assert_array_equal(out.values, reference.CLs_obs.values)


def test_fit_refuses_to_run_in_the_client(seed_grid) -> None:
    args = ("pyhf", seed_grid.workspace, seed_grid.chunk(0, 1), {"poi_values": [1.0]})
    with client_side("an endpoint"), pytest.raises(RemoteTaskInClient, match="an endpoint"):
        FitTask()(*args)


def test_fit_hidden_in_arguments_is_an_error(seed_grid) -> None:
    """A fit nested inside another task's arguments cannot be sent: a clear error."""
    from dask.task_spec import Task

    from pyhf_dask.kernels import FitOptions

    args = ("pyhf", seed_grid.workspace, seed_grid.chunk(0, 1), FitOptions().to_dict())
    inner = Task(None, FitTask(), *args)
    graph = {"out": Task("out", len, inner)}
    with pytest.raises(RuntimeError, match="inside its arguments"):
        wrap(CountingExecutor(1), check_versions=False)(graph, ["out"])
