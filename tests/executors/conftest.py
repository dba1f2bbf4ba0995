"""Fixtures of the executor tests: a 20-point seed-model scan and a socket watcher."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import xarray as xr
from engine_checks import ListenWatcher

import pyhf_dask
from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace

N_POINTS = 20


@pytest.fixture(scope="session")
def seed_grid() -> SignalGrid:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    return SignalGrid.from_function(ws, scaled_signal, scale=list(np.linspace(0.2, 3.0, N_POINTS)))


@pytest.fixture
def lazy_scan(seed_grid: SignalGrid) -> xr.Dataset:
    return pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3)


@pytest.fixture(scope="session")
def reference(seed_grid: SignalGrid) -> xr.Dataset:
    """The scan computed by the synchronous scheduler."""
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3)
    return ds.compute(scheduler="synchronous")


@pytest.fixture
def listen_watch() -> Iterator[ListenWatcher]:
    pytest.importorskip("psutil")
    with ListenWatcher() as watcher:
        yield watcher


@pytest.fixture(autouse=True)
def _tmp_cwd(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines that write into the working directory (runinfo/, logs) write into tmp."""
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
