"""The resolved plan of a scan: settings read at call time, one-line errors, frozen, re-chunked."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import dask
import numpy as np
import pytest
from dask.callbacks import Callback

from pyhf_dask import kernels
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.graph import default_chunk_size, scan_token
from pyhf_dask.grid import SignalGrid, scaled_signal
from pyhf_dask.kernels import FitOptions, fit_chunk
from pyhf_dask.plan import ScanPlan, resolve_plan

#: Every setting resolve_plan reads, a non-default value, and where the plan keeps it.
SETTINGS = {
    "test-stat": ("q", lambda p: p.options.test_stat),
    "normsys-interpcode": ("code1", lambda p: p.options.normsys_interpcode),
    "histosys-interpcode": ("code0", lambda p: p.options.histosys_interpcode),
    "calctype": ("asymptotics", lambda p: p.options.calctype),
    "gradient-tolerance": (0.25, lambda p: p.options.gradient_tolerance),
    "kernel": ("pyhf", lambda p: p.kernel),
    "cl": (0.9, lambda p: p.cl),
    "chunk-size": (3, lambda p: p.chunk_size),
    "workers": (5, lambda p: p.workers),
}


@pytest.fixture
def grid(seed_workspace) -> SignalGrid:
    scale = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5]
    return SignalGrid.from_function(seed_workspace, scaled_signal, scale=scale)


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_none_follows_the_setting_at_call_time(grid, key):
    """The module was imported long before: a setting changed now is what the plan gets."""
    value, read = SETTINGS[key]
    with dask.config.set({f"pyhf-dask.{key}": value}):
        assert read(resolve_plan(grid)) == value
    default = dask.config.get(f"pyhf-dask.{key}")
    if default not in (None, "auto"):
        assert read(resolve_plan(grid)) == default


def test_arguments_win_over_settings(grid):
    with dask.config.set({"pyhf-dask.test-stat": "q", "pyhf-dask.chunk-size": 3}):
        plan = resolve_plan(grid, kernel="pyhf", test_stat="qtilde", chunk_size=2, workers=4)
    assert (plan.options.test_stat, plan.chunk_size, plan.workers) == ("qtilde", 2, 4)


def test_auto_chunks_are_sized_for_the_workers(grid):
    with dask.config.set({"pyhf-dask.chunk-size": "auto"}):
        plan = resolve_plan(grid, kernel="pyhf", workers=3)
        assert plan.chunk_size == default_chunk_size("pyhf", len(grid), 3)
        with ThreadPoolExecutor(2) as pool:  # no workers given: the scheduler's
            assert resolve_plan(grid, kernel="pyhf", scheduler=pool).workers == 2
        with dask.config.set({"pyhf-dask.workers": 4}):  # no scheduler: the setting
            assert resolve_plan(grid, kernel="pyhf").workers == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_stat": "qmu"}, "unknown test statistic 'qmu'"),  # q0: issue 21
        ({"normsys_interpcode": "code2"}, "unknown normsys interpolation code"),
        ({"histosys_interpcode": "code1"}, "unknown histosys interpolation code"),
        ({"calctype": "hybrid"}, "unknown calculator"),  # toybased: issue 20
        ({"kernel": "numba"}, "unknown kernel 'numba'"),
        ({"cl": 1.5}, "confidence level must be between 0 and 1"),
        ({"chunk_size": 0}, "chunk size must be a positive integer"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"poi_value": [2.0, 1.0]}, "strictly increasing"),
        ({"poi_value": [np.nan]}, "finite"),
        ({"poi_value": []}, "at least one POI value"),
        ({"measurement": "other"}, "no measurement 'other'"),
        ({"scipy_tolerance": -1.0}, "must be positive"),
    ],
)
def test_invalid_settings_are_one_line_invalid_option(grid, kwargs, match):
    with pytest.raises(InvalidOption, match=match) as info:
        resolve_plan(grid, **kwargs)
    assert "\n" not in str(info.value)


def test_a_bad_setting_is_refused_like_a_bad_argument(grid):
    with dask.config.set({"pyhf-dask.test-stat": "qmu"}), pytest.raises(InvalidOption):
        resolve_plan(grid)


def test_the_plan_is_frozen_and_hashable(grid):
    plan = resolve_plan(grid, kernel="pyhf", chunk_size=2, workers=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.chunk_size = 3  # type: ignore[misc]
    again = resolve_plan(grid, kernel="pyhf", chunk_size=2, workers=2)
    assert plan == again and hash(plan) == hash(again)
    assert {plan: "cached"}[again] == "cached"
    assert plan != resolve_plan(grid, kernel="pyhf", chunk_size=3, workers=2)
    assert isinstance(plan.options, FitOptions) and isinstance(plan.bounds, tuple)


def test_for_points_keeps_the_options_and_rechunks(grid):
    plan = resolve_plan(grid, kernel="pyhf", poi_value=[0.5, 1.0], test_stat="q", chunk_size=3)
    assert plan.bounds == ((0, 3), (3, 6), (6, 7))
    sub = plan.for_points([1, 4, 5, 6])
    assert sub.options == plan.options and sub.options.test_stat == "q"
    assert (sub.kernel, sub.cl, sub.chunk_size, sub.squeeze) == ("pyhf", plan.cl, 3, False)
    assert list(sub.grid.names) == [grid.names[i] for i in (1, 4, 5, 6)]
    assert sub.bounds == ((0, 3), (3, 4))
    assert sub.token != plan.token
    assert sub.token == scan_token(sub.grid, "pyhf", plan.options.to_dict(), 3)
    assert set(sub.chunk_of_key()) == {sub.fit_key(0), sub.fit_key(3)}


class _Keys(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self.keys.add(str(key))


def test_the_store_writes_under_the_plans_keys(grid, tmp_path):
    from pyhf_dask.results import status_names
    from pyhf_dask.store import scan_to_store, store_plan

    plan = resolve_plan(grid, kernel="pyhf", chunk_size=3, workers=1)
    path = tmp_path / "plan.zarr"
    with _Keys() as seen:
        ds = store_plan(plan, path, scheduler="synchronous")
    assert set(plan.chunk_of_key()) <= seen.keys
    assert int(ds.attrs["chunk_size"]) == 3 and ds.attrs["scan_token"] == plan.token
    assert (status_names(ds.status) == "converged").all()

    # resume: the points left are fitted under the keys of plan.for_points
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    status = group["status"][:]
    status[[2, 5]] = 4  # "pending"
    group["status"][:] = status
    written: list[int] = []
    with _Keys() as seen:
        scan_to_store(
            grid,
            path,
            resume=True,
            kernel="pyhf",
            scheduler="synchronous",
            on_write=written.append,
        )
    sub = plan.for_points([2, 5])
    assert set(sub.chunk_of_key()) <= seen.keys
    assert not set(plan.chunk_of_key()) & seen.keys
    assert sum(written) == 2


def test_fit_chunk_fills_defaults_and_refuses_unknown_options(seed_workspace, monkeypatch):
    received: list[dict] = []

    def probe(workspace, patches, options):
        received.append(options)
        return kernels.empty_result(len(patches), len(options["poi_values"]))

    monkeypatch.setattr(kernels, "get_kernel", lambda name: probe)
    fit_chunk("probe", seed_workspace, [[]], {"poi_values": [1.0, 2.0], "test_stat": "q"})
    assert received[0] == {**FitOptions().to_dict(), "poi_values": [1.0, 2.0], "test_stat": "q"}
    with pytest.raises(InvalidOption, match=r"unknown fit option.*'poi_value'") as info:
        fit_chunk("probe", seed_workspace, [[]], {"poi_value": 1.0})
    assert "\n" not in str(info.value)
    assert len(received) == 1


def test_plan_fields_are_documented():
    doc = ScanPlan.__doc__ or ""
    for field in dataclasses.fields(ScanPlan):
        assert f"{field.name}:" in doc
