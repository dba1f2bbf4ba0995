"""Regions combined by mass point, the best expected region, and their file round trips."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from reference_values import SBOTTOM_SETTINGS

import pyhf_dask
from pyhf_dask.combine import best_expected, combine_regions
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
from pyhf_dask.results import status_names

LABELS = ["msb", "mn2", "mn1"]
#: Compared per point (``fit_time`` differs between two runs of the same fit).
VALUES = ("CLs_obs", "CLs_exp", "status", "message")


def _region(background: float, scales: list[float]) -> xr.Dataset:
    """A made-up signal region of the seed model: its own background, points by name."""
    ws = simple_workspace([12.0, 11.0], [background, 52.0], [3.0, 7.0], [background + 1.0, 48.0])
    grid = SignalGrid.from_function(ws, scaled_signal, scale=scales)
    return pyhf_dask.scan(grid, kernel="pyhf", chunk_size=2)


@pytest.fixture(scope="module")
def regions() -> dict[str, xr.Dataset]:
    # names scale_0.5 ... scale_3: A and C share scale_1 and scale_2, in another order
    return {"A": _region(50.0, [0.5, 1.0, 2.0]), "C": _region(30.0, [2.0, 3.0, 1.0])}


@pytest.fixture(scope="module")
def alone(regions: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    return {name: ds.compute(scheduler="synchronous") for name, ds in regions.items()}


def _check_lines_up(combined: xr.Dataset, alone: dict[str, xr.Dataset]) -> None:
    assert sorted(combined.point.values.tolist()) == [
        "scale_0.5",
        "scale_1",
        "scale_2",
        "scale_3",
    ]
    for region, ds in alone.items():
        for point in ds.point.values:
            mine = combined.sel(region=region, point=point)
            theirs = ds.sel(point=point)
            for name in VALUES:
                np.testing.assert_array_equal(mine[name].values, theirs[name].values)
            assert float(mine.scale) == float(theirs.scale)
        others = sorted(set(combined.point.values.tolist()) - set(ds.point.values.tolist()))
        absent = combined.sel(region=region, point=others)
        assert (status_names(absent.status) == "missing").all()
        assert np.isnan(absent.CLs_obs.values).all()


def test_combined_regions_line_up_by_mass_point(regions, alone) -> None:
    combined = combine_regions(regions)
    assert combined.CLs_obs.chunks is not None  # still lazy
    assert combined.status.dtype == np.int8
    _check_lines_up(combined.compute(scheduler="synchronous"), alone)


def test_plain_xarray_concat_and_merge_align_by_point(regions, alone) -> None:
    joined = xr.concat(
        [regions["A"], regions["C"]],
        dim="region",
        join="outer",
        coords="minimal",
        compat="override",
        combine_attrs="drop_conflicts",
    ).assign_coords(region=["A", "C"])
    computed = joined.compute(scheduler="synchronous")
    for region, ds in alone.items():
        for point in ds.point.values:
            assert float(computed.CLs_obs.sel(region=region, point=point)) == float(
                ds.CLs_obs.sel(point=point)
            )
    merged = xr.merge(
        [alone["A"].CLs_obs.rename("obs_A"), alone["C"].CLs_obs.rename("obs_C")],
        compat="override",
        join="outer",
    )
    for point in ("scale_1", "scale_2"):
        assert float(merged.obs_A.sel(point=point)) == float(alone["A"].CLs_obs.sel(point=point))
        assert float(merged.obs_C.sel(point=point)) == float(alone["C"].CLs_obs.sel(point=point))
    assert np.isnan(float(merged.obs_A.sel(point="scale_3")))


def test_combined_round_trips_through_zarr_and_netcdf(regions, tmp_path) -> None:
    combined = combine_regions(regions).compute(scheduler="synchronous")
    combined.to_zarr(tmp_path / "both.zarr", consolidated=False)
    with xr.open_zarr(tmp_path / "both.zarr", consolidated=False) as back:
        xr.testing.assert_identical(back.load(), combined)
    pyhf_dask.to_netcdf(combined, tmp_path / "both.nc")
    with xr.open_dataset(tmp_path / "both.nc") as back:
        xr.testing.assert_identical(back.load(), combined)
    combined.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    with xr.open_dataset(tmp_path / "plain.nc") as back:
        xr.testing.assert_identical(back.load(), combined)


def test_best_expected_region_per_point(regions, alone) -> None:
    best = best_expected(combine_regions(regions))
    assert best.CLs_obs.chunks is not None  # still lazy
    best = best.compute(scheduler="synchronous")
    for point in best.point.values:
        candidates = {
            name: float(ds.CLs_exp.sel(point=point, band=0))
            for name, ds in alone.items()
            if point in ds.point.values
        }
        chosen = min(candidates, key=candidates.__getitem__)
        assert str(best.best_region.sel(point=point).values) == chosen
        expected = float(alone[chosen].CLs_obs.sel(point=point))
        assert float(best.CLs_obs.sel(point=point)) == expected
        assert status_names(best.status.sel(point=point)).item() == "converged"


def test_best_expected_of_a_poi_scan_uses_expected_limits() -> None:
    ds = xr.Dataset(
        {
            "CLs_obs": (("region", "point", "poi"), np.full((2, 2, 2), 0.5)),
            "upper_limit_obs": (("region", "point"), [[1.0, 2.0], [3.0, 4.0]]),
            "upper_limit_exp": (
                ("region", "point", "band"),
                np.array([[1.5, 0.5], [1.0, np.nan]])[..., None].repeat(5, axis=-1),
            ),
        },
        coords={"region": ["A", "B"], "point": ["p", "q"], "band": [-2, -1, 0, 1, 2]},
    )
    best = best_expected(ds)
    assert best.best_region.values.tolist() == ["B", "A"]
    assert best.upper_limit_obs.values.tolist() == [3.0, 2.0]


def test_regions_that_disagree_on_a_point_are_refused() -> None:
    a = xr.Dataset(coords={"point": ["p"], "m": ("point", [1.0])}, attrs={"labels": "m"})
    b = xr.Dataset(coords={"point": ["p"], "m": ("point", [2.0])}, attrs={"labels": "m"})
    with pytest.raises(InvalidOption, match="other m values"):
        combine_regions({"A": a, "B": b})
    with pytest.raises(InvalidOption, match="combine the regions first"):
        best_expected(a)


def test_sbottom_regions_a_and_c_line_up_by_mass_point(sbottom_archive) -> None:
    """Two regions of the real archive, two points each, one of them shared.

    One ``dask.compute`` of the combination and of each region alone: the fits are the same
    tasks (run once), so any difference is the combination putting a value elsewhere.
    """
    picks = {
        "RegionA": ["sbottom_1300_450_60", "sbottom_1400_850_60"],
        "RegionC": ["sbottom_1400_850_60", "sbottom_1300_850_60"],
    }
    lazy = {
        region: pyhf_dask.scan(
            SignalGrid.from_path(sbottom_archive, region=region, labels=LABELS).select(names),
            kernel="pyhf",
            chunk_size=1,
            **SBOTTOM_SETTINGS,
        )
        for region, names in picks.items()
    }
    combined, *computed = dask.compute(
        combine_regions(lazy), *lazy.values(), scheduler="synchronous"
    )
    alone = dict(zip(lazy, computed, strict=True))
    assert dict(combined.sizes) == {"region": 2, "point": 3, "band": 5}
    for region, ds in alone.items():
        assert sorted(ds.point.values.tolist()) == sorted(picks[region])
        for point in ds.point.values:
            mine, theirs = combined.sel(region=region, point=point), ds.sel(point=point)
            for name in (*VALUES, "fit_time"):
                np.testing.assert_array_equal(mine[name].values, theirs[name].values)
            assert [float(mine[c]) for c in LABELS] == [float(theirs[c]) for c in LABELS]
    # the regions differ: the shared point has other CLs in each
    shared = combined.sel(point="sbottom_1400_850_60").CLs_obs.values
    assert shared[0] != shared[1]
    absent = combined.sel(region="RegionC", point="sbottom_1300_450_60")
    assert status_names(absent.status).item() == "missing"
