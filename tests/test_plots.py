"""Plots are rendered (Agg) and checked for what they show: lines, labels, legend entries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import xarray as xr
from scipy.stats import norm

import pyhf_dask.accessor  # noqa: F401  (registers ds.pyhf_dask)
from pyhf_dask import plots, plots_poi
from pyhf_dask.contours import find_contours
from pyhf_dask.exceptions import InvalidOption, MissingDependency

if TYPE_CHECKING:
    from matplotlib.figure import Figure

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def region_a() -> xr.Dataset:
    with xr.open_dataset(DATA / "regionA_pyhf.nc") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def poi_scan() -> xr.Dataset:
    with xr.open_dataset(DATA / "regionA_poi_scan.nc") as ds:
        return ds.load()


def synthetic_poi_scan() -> xr.Dataset:
    """A 2-D grid with a POI dimension; the upper limit is 1 on the circle r = 500."""
    gx, gy = np.meshgrid(np.arange(0.0, 1001.0, 100.0), np.arange(0.0, 1001.0, 100.0))
    x, y = gx.ravel(), gy.ravel()
    mu = np.array([0.5, 1.0, 2.0, 4.0])
    limit = np.exp((np.hypot(x, y) - 500.0) / 300.0)  # upper limit per point
    z = norm.isf(0.05) * mu[None, :] / limit[:, None]  # CLs = 0.05 where mu = limit
    cls = norm.sf(z)
    exp = np.repeat(cls[:, :, None], 5, axis=2)
    return xr.Dataset(
        {
            "CLs_obs": (("point", "poi"), cls),
            "CLs_exp": (("point", "poi", "band"), exp),
            "upper_limit_obs": ("point", limit),
            "upper_limit_exp": (("point", "band"), np.repeat(limit[:, None], 5, axis=1)),
            "status": ("point", np.full(x.size, "converged")),
        },
        coords={
            "ma": ("point", x),
            "mb": ("point", y),
            "poi": mu,
            "band": [-2, -1, 0, 1, 2],
            "patch": ("point", [f"p_{i}" for i in range(x.size)]),
        },
        attrs={"labels": "ma,mb", "cl": 0.95, "poi_name": "mu_SIG"},
    )


def legend_texts(fig: Figure) -> list[str]:
    legend = fig.axes[0].get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def test_exclusion_plot_of_region_a(region_a: xr.Dataset, tmp_path: Path) -> None:
    fig = plots.plot_exclusion(region_a, save_figure=tmp_path / "exclusion.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "msb [GeV]"
    assert ax.get_ylabel() == "mn2 [GeV]"
    assert "mn1 = 60 GeV" in ax.get_title()
    n_points = int(((region_a.mn1 == 60) & (region_a.status != "failed")).sum())
    assert legend_texts(fig) == [
        "Observed limit (95% CL)",
        "Expected limit",
        r"Expected $\pm 1\sigma$",
        f"Fitted points ({n_points})",
    ]
    # the drawn lines are the contours: observed solid red, expected dashed
    found = find_contours(region_a, curves=("obs", "exp"))
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(solid) == len(found.get("obs").lines)
    assert len(dashed) == len(found.get("exp").lines)
    np.testing.assert_allclose(np.asarray(solid[0].get_xydata()), found.get("obs").lines[0])
    # the band is a filled contour and the points are marked
    assert any(type(c).__name__ in ("QuadContourSet", "ContourSet") for c in ax.collections)
    offsets = [np.asarray(c.get_offsets()) for c in ax.collections]
    assert max(len(o) for o in offsets) == n_points
    assert (tmp_path / "exclusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_exclusion_plot_options_and_formats(region_a: xr.Dataset, tmp_path: Path) -> None:
    fig = plots.plot_exclusion(
        region_a,
        band2=True,
        show_points=False,
        symbols=True,
        title="RegionA",
        save_figure=tmp_path / "ex.pdf",
    )
    ax = fig.axes[0]
    assert ax.get_title() == "RegionA"
    assert ax.get_xlabel() == r"$m(\tilde{b}_1)$ [GeV]"
    assert legend_texts(fig) == [
        "Observed limit (95% CL)",
        "Expected limit",
        r"Expected $\pm 1\sigma$",
        r"Expected $\pm 2\sigma$",
    ]
    assert (tmp_path / "ex.pdf").read_bytes()[:5] == b"%PDF-"
    fig.savefig(tmp_path / "ex.svg")
    assert b"<svg" in (tmp_path / "ex.svg").read_bytes()[:500]


@pytest.mark.slow
def test_failed_points_are_marked(region_a: xr.Dataset) -> None:
    ds = region_a.copy(deep=True)
    index = int(np.flatnonzero((ds.mn1 == 60).values)[0])
    ds["status"][index] = "failed"
    ds["CLs_obs"][index] = np.nan
    fig = plots.plot_exclusion(ds)
    assert "Failed fits (1)" in legend_texts(fig)


def test_cls_map(region_a: xr.Dataset) -> None:
    fig = plots.plot_cls_map(region_a, curve="exp")
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == "CLs, expected (exp)"
    assert legend_texts(fig) == ["CLs = 0.05"]
    assert ax.get_title().startswith("CLs expected (exp), mn1 = 60 GeV")
    assert len(ax.get_lines()) == len(find_contours(region_a, curves=("exp",)).contours[0].lines)
    with pytest.raises(InvalidOption, match="unknown curve"):
        plots.plot_cls_map(region_a, curve="median")


def test_brazil_band_of_a_real_poi_scan(poi_scan: xr.Dataset) -> None:
    name = "sbottom_1300_205_60"
    fig = plots_poi.plot_brazil(poi_scan, point=name)
    ax = fig.axes[0]
    limit = float(poi_scan.upper_limit_obs.sel(point=poi_scan.patch == name).values[0])
    assert 1.0 < limit < 3.0  # CLs(mu = 1) = 0.244: not excluded at mu = 1
    texts = legend_texts(fig)
    assert texts[:2] == ["Observed CLs", f"Observed limit: {limit:.3g}"]
    assert texts.index(r"Expected $\pm 1\sigma$") < texts.index(r"Expected $\pm 2\sigma$")
    assert "CLs = 0.05" in texts
    assert f"Observed limit: {limit:.3g}" in texts
    vertical = [
        line for line in ax.get_lines() if str(line.get_label()).startswith("Observed limit")
    ]
    assert np.asarray(vertical[0].get_xdata())[0] == pytest.approx(limit)
    assert ax.get_xlabel() == r"Signal strength $\mu_{\mathrm{SIG}}$ (mu_SIG)"
    assert poi_scan.attrs["poi_name"] == "mu_SIG"
    assert ax.get_ylabel() == "CLs"
    assert name in ax.get_title()
    with pytest.raises(InvalidOption, match="no point named"):
        plots_poi.plot_brazil(poi_scan, point="nope")


def test_brazil_needs_a_poi_scan(region_a: xr.Dataset) -> None:
    with pytest.raises(InvalidOption, match="POI scan"):
        plots_poi.plot_brazil(region_a)


def test_upper_limit_map() -> None:
    ds = synthetic_poi_scan()
    fig = plots_poi.plot_upper_limits(ds)
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == r"Observed 95% CL upper limit on $\mu_{\mathrm{SIG}}$"
    assert legend_texts(fig) == ["Observed limit = 1", "Expected limit = 1"]
    line = np.asarray(ax.get_lines()[0].get_xydata())
    assert np.all(np.abs(np.hypot(line[:, 0], line[:, 1]) - 500.0) < 100.0)


def test_accessor(region_a: xr.Dataset) -> None:
    found = region_a.pyhf_dask.contour(curves=("obs",))
    direct = find_contours(region_a, curves=("obs",))
    np.testing.assert_allclose(found.get("obs").lines[0], direct.get("obs").lines[0])
    assert region_a.pyhf_dask.labels == ["msb", "mn2", "mn1"]
    assert region_a.pyhf_dask.plane().selection == {"mn1": 60.0}
    fig = region_a.pyhf_dask.plot_exclusion(where={"mn1": 60})
    assert isinstance(fig, matplotlib.figure.Figure)
    assert isinstance(region_a.pyhf_dask.plot_cls_map(), matplotlib.figure.Figure)


def test_missing_matplotlib_names_the_extra(
    region_a: xr.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependency, match=r"pyhf_dask\[plot\]"):
        plots.plot_exclusion(region_a)


def _band_colours(ax: object) -> dict[str, tuple[float, ...]]:
    """Legend label -> face colour of the band entries."""
    legend = ax.get_legend()  # type: ignore[attr-defined]
    return {
        text.get_text(): tuple(handle.get_facecolor()[:3])
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
        if "sigma" in text.get_text()
    }


def test_one_band_colour_convention_green_1sigma_yellow_2sigma(
    region_a: xr.Dataset, poi_scan: xr.Dataset
) -> None:
    to_rgb = matplotlib.colors.to_rgb
    green, yellow = to_rgb(plots.BAND_COLORS[1]), to_rgb(plots.BAND_COLORS[2])
    assert green[1] > 0.7 > green[0]  # green
    assert yellow[0] > 0.9 and yellow[1] > 0.8 and yellow[2] < 0.2  # yellow
    expected = {r"Expected $\pm 1\sigma$": green, r"Expected $\pm 2\sigma$": yellow}
    exclusion = plots.plot_exclusion(region_a, band2=True)
    brazil = plots_poi.plot_brazil(poi_scan, point="sbottom_1300_205_60")
    for fig in (exclusion, brazil):
        colours = _band_colours(fig.axes[0])
        assert set(colours) == set(expected)
        for name, colour in expected.items():
            assert colours[name] == pytest.approx(colour)
    # the filled bands themselves (not only their legend entries) have these colours
    contour_sets = [c for c in exclusion.axes[0].collections if "ContourSet" in type(c).__name__]
    filled = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in contour_sets}
    assert filled == {tuple(np.round(green, 3)), tuple(np.round(yellow, 3))}


def test_axes_are_fitted_to_the_points(region_a: xr.Dataset) -> None:
    ax = plots.plot_exclusion(region_a).axes[0]
    plane = region_a.pyhf_dask.plane()
    for points, (low, high) in ((plane.x, ax.get_xlim()), (plane.y, ax.get_ylim())):
        span = np.ptp(points)
        assert points.min() - 0.05 * span <= low < points.min()
        assert points.max() < high <= points.max() + 0.05 * span


def test_analysis_label_and_kinematic_limit(region_a: xr.Dataset) -> None:
    fig = plots.plot_exclusion(
        region_a, symbols=True, label="ATLAS sbottom", energy=13, lumi=139, kinematic_limit=0
    )
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "ATLAS sbottom\n$\\sqrt{s}$ = 13 TeV, 139 fb$^{-1}$"
    texts = legend_texts(fig)
    kinematic = r"Kinematic limit $m(\tilde{\chi}^0_2)$ = $m(\tilde{b}_1)$"
    assert kinematic in texts
    line = next(ln for ln in ax.get_lines() if ln.get_label() == kinematic)
    xs, ys = (np.asarray(v, dtype=float) for v in line.get_data())
    np.testing.assert_allclose(ys, xs)  # m(chi2) = m(b1)
    assert tuple(xs) == ax.get_xlim()
    shifted = plots.plot_cls_map(region_a, kinematic_limit=130.0).axes[0]
    line = next(ln for ln in shifted.get_lines() if "Kinematic" in str(ln.get_label()))
    xs, ys = (np.asarray(v, dtype=float) for v in line.get_data())
    np.testing.assert_allclose(ys, xs - 130.0)
    assert str(line.get_label()) == "Kinematic limit mn2 = msb − 130 GeV"


def test_figures_render_inline_in_jupyter(region_a: xr.Dataset, poi_scan: xr.Dataset) -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    figures = [
        plots.plot_exclusion(region_a),
        plots.plot_cls_map(region_a),
        plots_poi.plot_brazil(poi_scan),
        plots_poi.plot_upper_limits(synthetic_poi_scan()),
    ]
    for fig in figures:
        data, _ = formatters.DisplayFormatter().format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_save_figure_creates_the_folder(region_a: xr.Dataset, tmp_path: Path) -> None:
    fig = plots.plot_exclusion(region_a)
    path = plots.save_figure(fig, tmp_path / "figures" / "exclusion.pdf")
    assert path == tmp_path / "figures" / "exclusion.pdf"
    assert path.read_bytes()[:5] == b"%PDF-"


def test_brazil_of_a_failed_point_says_so(poi_scan: xr.Dataset) -> None:
    ds = poi_scan.copy(deep=True)
    ds["CLs_obs"][0] = np.nan
    ds["CLs_exp"][0] = np.nan
    ds["status"][0] = "failed"
    ds["message"][0] = "fit did not converge"
    name = str(ds.patch.values[0])
    with pytest.raises(InvalidOption) as error:
        plots_poi.plot_brazil(ds, point=0)
    assert str(error.value) == (
        f"the fits of {name} failed at every POI value, nothing to draw "
        "(see the 'message' variable: fit did not converge)"
    )
