"""Contours: analytic surfaces land where they should; RegionA reference points are separated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.stats import norm

from pyhf_dask.contours import (
    CURVES,
    default_slice,
    find_contours,
    interpolate,
    select_plane,
    transform,
)
from pyhf_dask.exceptions import InputError, InvalidOption

DATA = Path(__file__).parent / "data"
REGION_A = DATA / "regionA_pyhf.nc"
Z95 = float(norm.isf(0.05))
# Radius of the CLs = 0.05 circle per curve: the band members shift it by 40 units per sigma.
RADIUS = {
    "obs": 500.0,
    "exp": 520.0,
    "exp-1": 560.0,
    "exp+1": 480.0,
    "exp-2": 600.0,
    "exp+2": 440.0,
}


def result(
    x: np.ndarray,
    y: np.ndarray,
    *,
    extra: dict[str, np.ndarray] | None = None,
    center: tuple[float, float] = (0.0, 0.0),
    scale: tuple[float, float] = (1.0, 1.0),
    labels: tuple[str, ...] = ("ma", "mb"),
) -> xr.Dataset:
    """A result whose CLs falls with the (scaled) distance r from ``center``.

    ``Z = norm.isf(CLs) = 1.645 + (r - R) / 100`` per curve, so CLs = 0.05 exactly on the
    circle r = R of that curve (:data:`RADIUS`): points farther out are excluded.
    """
    r = np.hypot((x - center[0]) / scale[0], (y - center[1]) / scale[1])
    cls = {c: norm.sf(Z95 + (r - radius) / 100.0) for c, radius in RADIUS.items()}
    exp = np.stack([cls[c] for c in ("exp-2", "exp-1", "exp", "exp+1", "exp+2")], axis=1)
    coords = {
        labels[0]: ("point", x),
        labels[1]: ("point", y),
        "band": [-2, -1, 0, 1, 2],
        "patch": ("point", [f"p_{a:g}_{b:g}" for a, b in zip(x, y, strict=True)]),
        "poi": 1.0,
    }
    for name, values in (extra or {}).items():
        coords[name] = ("point", values)
    return xr.Dataset(
        {
            "CLs_obs": ("point", cls["obs"]),
            "CLs_exp": (("point", "band"), exp),
            "status": ("point", np.full(x.size, "converged")),
        },
        coords=coords,
        attrs={"labels": ",".join([*labels, *(extra or {})]), "cl": 0.95},
    )


def radii(lines: list[np.ndarray], scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    points = np.concatenate(lines)
    return np.hypot(points[:, 0] / scale[0], points[:, 1] / scale[1])


def test_regular_grid_circles_land_within_grid_spacing() -> None:
    spacing = 50.0
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, spacing), np.arange(0.0, 1001.0, spacing))
    found = find_contours(result(gx.ravel(), gy.ravel()))
    assert found.x_name == "ma"
    assert found.y_name == "mb"
    assert [c.curve for c in found.contours] == list(CURVES)
    for contour in found.contours:
        assert contour.level == pytest.approx(0.05)
        assert len(contour.lines) == 1
        r = radii(contour.lines)
        assert np.all(np.abs(r - RADIUS[contour.curve]) < spacing), contour.curve
        # the arc spans the quadrant, from one axis to the other
        assert r.size > 20
        assert np.min(contour.lines[0][:, 0]) < spacing
        assert np.min(contour.lines[0][:, 1]) < spacing


def test_irregular_grid_with_very_different_axis_ranges() -> None:
    # A triangle of scattered points (y < x), y in units 100 times smaller than x.
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1000.0, 600)
    y = rng.uniform(0.0, 10.0, 600)
    keep = y * 100.0 < x + 200.0
    found = find_contours(result(x[keep], y[keep], scale=(1.0, 0.01)), curves=("obs", "exp+2"))
    for contour in found.contours:
        r = radii(contour.lines, scale=(1.0, 0.01))
        assert np.all(np.abs(r - RADIUS[contour.curve]) < 60.0)  # ~ mean point spacing
        assert np.all(contour.lines[0][:, 1] * 100.0 < contour.lines[0][:, 0] + 200.0 + 1e-6)


def test_log_transform_gives_the_same_line() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 50.0), np.arange(0.0, 1001.0, 50.0))
    found = find_contours(result(gx.ravel(), gy.ravel()), curves=("obs",), how="log")
    assert found.transform == "log"
    assert np.all(np.abs(radii(found.get("obs").lines) - 500.0) < 50.0)


def test_failed_points_are_left_out_not_used_as_numbers() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    ds = result(gx.ravel(), gy.ravel())
    near = int(np.argmin(np.abs(np.hypot(gx.ravel(), gy.ravel()) - 500.0)))
    good = find_contours(ds, curves=("obs",)).get("obs").lines
    # a failed fit with a (meaningless) number: ignoring the status would bend the line
    ds["status"][near] = "failed"
    ds["CLs_obs"][near] = 0.999
    found = find_contours(ds, curves=("obs",))
    assert found.n_failed == 1
    assert np.all(np.abs(radii(found.get("obs").lines) - 500.0) < 100.0)
    assert not np.allclose(np.concatenate(good), np.concatenate(found.get("obs").lines))
    ds["status"][near] = "converged"
    ds["CLs_obs"][near] = np.nan  # NaN without a failed status is left out too
    assert find_contours(ds, curves=("obs",)).n_failed == 1


def test_default_slice_holds_most_points_and_where_overrides() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    x, y = gx.ravel(), gy.ravel()
    third = np.where(np.arange(x.size) % 3 == 0, 100.0, 60.0)
    ds = result(x, y, extra={"mc": third})
    assert default_slice(ds, "ma", "mb") == {"mc": 60.0}
    plane = select_plane(ds)
    assert plane.selection == {"mc": 60.0}
    assert plane.x.size == int((third == 60.0).sum())
    assert plane.describe() == "mc = 60"
    assert select_plane(ds, where={"mc": 100}).x.size == int((third == 100.0).sum())
    # axes may be any pair; the remaining label is sliced
    assert select_plane(ds, x="mb", y="mc", where={"ma": 500}).selection == {"ma": 500.0}


def test_bad_planes_raise_input_errors() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 501.0, 100.0), np.arange(0.0, 501.0, 100.0))
    ds = result(gx.ravel(), gy.ravel(), extra={"mc": np.where(gx.ravel() > 200, 1.0, 2.0)})
    with pytest.raises(InvalidOption, match="unknown grid coordinate 'mz'"):
        find_contours(ds, x="mz")
    with pytest.raises(InvalidOption, match="no points in the slice"):
        find_contours(ds, where={"mc": 7})
    twice = result(
        np.tile(gx.ravel(), 2), np.tile(gy.ravel(), 2), extra={"mc": np.repeat([1.0, 2.0], gx.size)}
    )
    with pytest.raises(InvalidOption, match="share the same"):
        find_contours(twice, where={"mc": (0, 3)}, mix_slices=True)
    with pytest.raises(InvalidOption, match="must be two different"):
        find_contours(ds, x="ma", y="ma")
    with pytest.raises(InvalidOption, match="unknown curves"):
        find_contours(ds, curves=("median",))
    with pytest.raises(InvalidOption, match="at least 3 usable points"):
        interpolate(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1.0, 2.0]), level=1.0)
    with pytest.raises(InvalidOption, match="cannot triangulate"):
        interpolate(np.arange(4.0), np.arange(4.0), np.arange(4.0), level=1.0)
    with pytest.raises(InputError, match="not a pyhf_dask result"):
        find_contours(xr.Dataset({"x": ("point", [1.0])}))
    with pytest.raises(InvalidOption, match="two or more coordinates"):
        find_contours(result(np.arange(4.0), np.zeros(4)).assign_attrs(labels="ma"))


def test_poi_dimension_uses_poi_one() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    one = result(gx.ravel(), gy.ravel())
    scan = xr.concat(
        [one.assign(CLs_obs=one.CLs_obs * 0 + 0.5, CLs_exp=one.CLs_exp * 0 + 0.5), one],
        dim=xr.DataArray([0.5, 1.0], dims="poi", name="poi"),
        data_vars=["CLs_obs", "CLs_exp"],
    )
    found = find_contours(scan, curves=("obs",))
    assert found.poi == 1.0
    assert np.all(np.abs(radii(found.get("obs").lines) - 500.0) < 100.0)
    assert find_contours(scan, curves=("obs",), poi=0.5).get("obs").lines == []
    with pytest.raises(InvalidOption, match="was not scanned"):
        find_contours(scan, poi=2.0)


def test_json_export_is_plain_data() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    found = find_contours(result(gx.ravel(), gy.ravel()), curves=("obs", "exp"))
    data = json.loads(found.to_json())
    assert data["x"] == "ma"
    assert data["y"] == "mb"
    assert data["cl"] == 0.95
    assert [c["curve"] for c in data["contours"]] == ["obs", "exp"]
    line = np.array(data["contours"][0]["lines"][0])
    assert line.shape[1] == 2
    np.testing.assert_allclose(line, found.get("obs").lines[0], atol=1e-6)


def test_transform_is_the_significance() -> None:
    np.testing.assert_allclose(transform(np.array([0.5, 0.05])), [0.0, Z95])
    assert np.isfinite(transform(np.array([0.0, 1.0]))).all()


# --- the sbottom RegionA scan (tests/data/regionA_pyhf.nc, see benchmarks/make_regionA_result.py)

REFERENCE = {  # CLs_obs from pyhf's regression tests; True where excluded
    "sbottom_1300_205_60": (0.24443627759085326, False),
    "sbottom_1400_950_60": (0.021373283911064852, True),
    "sbottom_1500_850_60": (0.045367205665400624, True),
}


@pytest.fixture(scope="module")
def region_a() -> xr.Dataset:
    with xr.open_dataset(REGION_A) as ds:
        return ds.load()


def _crossings(a: np.ndarray, b: np.ndarray, lines: list[np.ndarray]) -> int:
    """How often the segment a-b crosses the polylines (proper intersections)."""

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.sign(
            (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
            - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
        )

    count = 0
    for line in lines:
        p, q = line[:-1], line[1:]
        hit = (side(a, b, p) != side(a, b, q)) & (side(p, q, a) != side(p, q, b))
        count += int(hit.sum())
    return count


def test_region_a_file_matches_the_reference_values(region_a: xr.Dataset) -> None:
    assert region_a.sizes["point"] == 217
    assert region_a.attrs["labels"] == "msb,mn2,mn1"
    for name, (cls, _) in REFERENCE.items():
        value = float(region_a.CLs_obs.where(region_a.patch == name, drop=True).values[0])
        assert value == pytest.approx(cls, rel=1e-5)


@pytest.mark.slow
def test_region_a_observed_contour_separates_the_reference_points(region_a: xr.Dataset) -> None:
    found = find_contours(region_a)
    assert (found.x_name, found.y_name, found.selection) == ("msb", "mn2", {"mn1": 60.0})
    obs = found.get("obs").lines
    assert obs
    plane = select_plane(region_a)
    where = {
        str(n): np.array([x, y]) for n, x, y in zip(plane.patch, plane.x, plane.y, strict=True)
    }
    allowed = where["sbottom_1300_205_60"]
    for name in ("sbottom_1400_950_60", "sbottom_1500_850_60"):
        # an odd number of crossings: the two points are on opposite sides of the line
        assert _crossings(allowed, where[name], obs) % 2 == 1, name
    assert _crossings(where["sbottom_1400_950_60"], where["sbottom_1500_850_60"], obs) % 2 == 0
    # and the points themselves are on the sides their CLs says
    for name, (_, excluded) in REFERENCE.items():
        cls = plane.values["obs"][plane.patch == name][0]
        assert (transform(np.array([cls]))[0] > Z95) == excluded


def test_a_slice_that_is_a_line_names_the_slices_with_a_grid() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    plane = result(gx.ravel(), gy.ravel(), extra={"mc": np.full(gx.size, 60.0)})
    line = result(
        np.arange(0.0, 1001.0, 100.0), np.full(11, 300.0), extra={"mc": np.full(11, 100.0)}
    )
    ds = xr.concat([plane, line], dim="point")
    with pytest.raises(InvalidOption) as error:
        find_contours(ds, where={"mc": 100})
    message = str(error.value)
    assert message == (
        "the slice mc = 100 holds 11 points on a line of the ma-mb plane, not a 2-D grid; "
        "slices of ma-mb with a 2-D grid: mc = 60 (121 points)"
    )
    with pytest.raises(InvalidOption, match=r"no points in the slice mc = 7; .*mc = 60 \(121"):
        find_contours(ds, where={"mc": 7})
    assert find_contours(ds, where={"mc": 60}, curves=("obs",)).get("obs").lines


def test_a_range_over_several_slices_is_refused_unless_asked_for() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    x, y = gx.ravel(), gy.ravel()
    ds = result(x, y, extra={"mc": np.where(x > 400, 60.0, 70.0)})  # each slice half the plane
    with pytest.raises(InvalidOption, match=r"mc = 50:80 mixes 2 slices \(mc = 60, 70\)") as error:
        find_contours(ds, where={"mc": (50, 80)})
    assert "--mix-slices" in str(error.value)
    assert "\n" not in str(error.value)
    mixed = find_contours(ds, where={"mc": (50, 80)}, curves=("obs",), mix_slices=True)
    assert mixed.n_points == x.size
    # a range holding a single value of its label is one slice: accepted
    assert find_contours(ds, where={"mc": (55, 65)}, curves=("obs",)).n_points == (x > 400).sum()


def test_all_failed_points_say_so_and_point_to_the_message() -> None:
    gx, gy = np.meshgrid(np.arange(0.0, 501.0, 100.0), np.arange(0.0, 501.0, 100.0))
    ds = result(gx.ravel(), gy.ravel())
    ds["status"][:] = "failed"
    ds["CLs_obs"][:] = np.nan
    ds["CLs_exp"][:] = np.nan
    with pytest.raises(InvalidOption) as error:
        find_contours(ds)
    assert str(error.value) == (
        "all the 36 points of the ma-mb plane failed: nothing to draw "
        "(see the 'message' variable of the result for why)"
    )
    ds["status"][:2] = "converged"
    ds["CLs_obs"][:2] = 0.5
    ds["CLs_exp"][:2] = 0.5
    with pytest.raises(InvalidOption, match=r"only 2 of the 36 points .* \(34 failed; see the"):
        find_contours(ds, curves=("obs",))


def test_collinear_points_give_a_short_message() -> None:
    with pytest.raises(InvalidOption) as error:
        interpolate(np.arange(5.0), np.arange(5.0), np.arange(5.0), level=1.0)
    assert len(str(error.value)) < 120
    assert "one line" in str(error.value)
