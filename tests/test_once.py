"""A lazy result is computed in one pass: every fit runs once per write, contour or plot."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator

import dask
import numpy as np
import pytest
import xarray as xr

import pyhf_dask
from pyhf_dask import kernels
from pyhf_dask.grid import SignalGrid, signal_patch

N_TASKS = 3  # 12 points in chunks of 4


def _signal(m1: float, m2: float) -> list[dict]:
    """A signal strong at low masses, weak at high ones: the grid has an exclusion line."""
    scale = 2.5 * np.exp(-(m1 - 200.0) / 150.0) * (1.0 - m2 / (m1 + 1.0))
    return signal_patch([12.0 * scale, 11.0 * scale])


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts kernel calls (one per fit task), with the synchronous scheduler."""
    calls: list[int] = []
    original: Callable = kernels.get_kernel

    def counting(name: str) -> Callable:
        kernel = original(name)

        def run(*args, **kwargs):
            calls.append(len(args[1]))
            return kernel(*args, **kwargs)

        return run

    monkeypatch.setattr(kernels, "get_kernel", counting)
    with dask.config.set(scheduler="synchronous"):
        yield calls


@pytest.fixture
def lazy(seed_workspace: dict) -> xr.Dataset:
    grid = SignalGrid.from_function(
        seed_workspace, _signal, m1=[200.0, 300.0, 400.0, 500.0], m2=[0.0, 50.0, 100.0]
    )
    return pyhf_dask.scan(grid, kernel="pyhf", chunk_size=4)


def test_lazy_writes_run_every_fit_once(lazy, fits, tmp_path) -> None:
    assert lazy.status.dtype == np.int8 and lazy.message.chunks is not None
    lazy.to_zarr(tmp_path / "a.zarr", consolidated=False)
    assert len(fits) == N_TASKS and sum(fits) == 12
    lazy.to_netcdf(tmp_path / "a.nc", engine="h5netcdf")
    assert len(fits) == 2 * N_TASKS
    pyhf_dask.to_netcdf(lazy, tmp_path / "b.nc")
    assert len(fits) == 3 * N_TASKS
    with (
        xr.open_zarr(tmp_path / "a.zarr", consolidated=False) as a,
        xr.open_dataset(tmp_path / "b.nc") as b,
    ):
        computed = a.load()
        # every variable but the timing is the same in both writes
        xr.testing.assert_identical(b.load().drop_vars("fit_time"), computed.drop_vars("fit_time"))
    assert len(fits) == 3 * N_TASKS


def test_accessor_computes_a_lazy_result_once(lazy, fits, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="pyhf_dask.accessor"):
        found = lazy.pyhf_dask.contour()
    assert len(fits) == N_TASKS
    assert "computing the lazy Dataset once" in caplog.text
    assert found.get("obs").lines  # the grid has an exclusion line
    lazy.pyhf_dask.plot_exclusion()
    lazy.pyhf_dask.plot_cls_map()
    lazy.pyhf_dask.contour(curves=["exp"])
    assert len(fits) == N_TASKS
    assert lazy.pyhf_dask.computed.CLs_obs.chunks is None


def test_functions_on_a_lazy_result_compute_it_once(lazy, fits) -> None:
    pyhf_dask.find_contours(lazy)
    assert len(fits) == N_TASKS


def test_executors_is_a_lazy_attribute() -> None:
    code = (
        "import sys, pyhf_dask; "
        "assert 'pyhf_dask.executors' not in sys.modules; "
        "assert callable(pyhf_dask.executors.wrap); "
        "assert 'pyhf_dask.executors' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = pyhf_dask.nothing  # type: ignore[attr-defined]


def test_a_lazy_write_through_a_wrapped_executor_submits_each_fit_once(lazy, tmp_path) -> None:
    """The same on an executor (``pyhf_dask.executors.wrap``): one submission per fit task."""
    from concurrent.futures import ThreadPoolExecutor

    class Counting(ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(max_workers=2)
            self.submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            self.submitted += 1
            return super().submit(fn, *args, **kwargs)

    with Counting() as pool:
        scheduler = pyhf_dask.executors.wrap(pool, check_versions=False)
        lazy.to_zarr(tmp_path / "a.zarr", consolidated=False, compute=False).compute(
            scheduler=scheduler
        )
        assert pool.submitted == N_TASKS
        with dask.config.set(scheduler=scheduler):
            pyhf_dask.to_netcdf(lazy, tmp_path / "a.nc")
        assert pool.submitted == 2 * N_TASKS
