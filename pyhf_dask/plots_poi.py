"""Plots of a POI scan: the Brazil band of one point and the map of upper limits.

Like :mod:`pyhf_dask.plots`, every function returns a :class:`matplotlib.figure.Figure`
(shown inline in a notebook) and needs the ``plot`` extra. The Brazil band has the colours
of every plot here, the experiments' convention: green ±1σ, yellow ±2σ.

Example:
    >>> import xarray as xr
    >>> ds = xr.open_dataset("poi_scan.nc")                     # doctest: +SKIP
    >>> fig = plot_brazil(ds, point=0, save_figure="brazil.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.contours import SliceValue, resolve_cl, select_plane, trace
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.figures import (
    BAND_COLORS,
    EXP_COLOR,
    OBS_COLOR,
    analysis_text,
    finish,
    legend,
    new_axes,
    poi_label,
    poi_symbol,
)
from pyhf_dask.plots import _colour_points, _dress_plane
from pyhf_dask.results import load_once, point_names

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_brazil", "plot_significance_map", "plot_upper_limits"]


def _point_index(ds: xr.Dataset, point: int | str) -> int:
    if isinstance(point, str):
        names = point_names(ds)
        found = np.flatnonzero(names == point)
        if not found.size:
            msg = f"no point named {point!r} in the result"
            raise InvalidOption(msg)
        return int(found[0])
    if not 0 <= point < ds.sizes["point"]:
        msg = f"point index {point} out of range (0..{ds.sizes['point'] - 1})"
        raise InvalidOption(msg)
    return int(point)


def _name(one: xr.Dataset, index: int) -> str:
    """The name of the one point left in ``one`` (its patch name, else its index)."""
    for coord in ("patch", "point"):
        if coord in one.coords:
            return str(one[coord].values)
    return f"point {index}"


def _all_failed(one: xr.Dataset, index: int) -> None:
    """One-line error for a point without any finite CLs, with the reason recorded."""
    name = _name(one, index)
    reason = ""
    if "message" in one:
        text = " ".join(str(np.ravel(np.asarray(one["message"].values))[0]).split())
        reason = f": {text[:120]}" if text else ""
    msg = (
        f"the fits of {name} failed at every POI value, nothing to draw (see the 'message' "
        f"variable{reason})"
    )
    raise InvalidOption(msg)


def plot_brazil(
    ds: xr.Dataset,
    *,
    point: int | str = 0,
    cl: float | None = None,
    log_y: bool = False,
    xlabel: str | None = None,
    label: str | None = None,
    energy: float | None = None,
    lumi: float | None = None,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """The Brazil band of one point of a POI scan: CLs against the POI, upper limits marked.

    The expected CLs is dashed, with its ±1σ band green and ±2σ band yellow; the observed CLs
    is black with markers; the vertical lines are the observed and expected upper limits.

    Args:
        ds: a result with a ``poi`` dimension (a lazy one: the point's chunk is computed).
        point: index or name (patch name) of the point.
        cl: confidence level of the horizontal line (default: the result's ``cl``).
        log_y: logarithmic CLs axis.
        xlabel: the POI axis label (default: the POI's symbol and name, e.g.
            ``Signal strength μ_SIG (mu_SIG)``).
        label, energy, lumi: the analysis label at the head of the legend.
        ax: draw on these axes instead of a new figure.
        save_figure: path to write the figure to.

    Example:
        >>> fig = plot_brazil(ds, point="sbottom_1300_205_60")  # doctest: +SKIP
    """
    if "poi" not in ds.dims or ds.sizes["poi"] < 2:
        msg = "a Brazil band needs a POI scan (a result with several POI values)"
        raise InvalidOption(msg)
    cl = resolve_cl(ds, cl)
    index = _point_index(ds, point)
    one = load_once(ds.isel(point=index))  # a lazy result: only this point's chunk, once
    mu = np.asarray(ds["poi"].values, dtype=float)
    obs = np.asarray(one["CLs_obs"].values, dtype=float)
    exp = {
        int(b): np.asarray(one["CLs_exp"].sel(band=b).values, dtype=float)
        for b in ds["band"].values
    }
    if not (np.isfinite(obs).any() or np.isfinite(exp[0]).any()):
        _all_failed(one, index)
    ax = new_axes(ax)
    for sigma in (2, 1):
        ax.fill_between(
            mu,
            exp[-sigma],
            exp[sigma],
            color=BAND_COLORS[sigma],
            lw=0,
            label=rf"Expected $\pm {sigma}\sigma$",
        )
    ax.plot(mu, exp[0], color="black", ls="--", label="Expected CLs")
    ax.plot(mu, obs, color="black", marker="o", ms=4, label="Observed CLs")
    ax.axhline(1 - cl, color=OBS_COLOR, lw=1.5, label=f"CLs = {1 - cl:.2g}")
    if "upper_limit_obs" in one:
        limit = float(one["upper_limit_obs"].values)
        expected = float(one["upper_limit_exp"].sel(band=0).values)
        if np.isfinite(limit):
            ax.axvline(limit, color=OBS_COLOR, ls=":", lw=1.5, label=f"Observed limit: {limit:.3g}")
        else:  # outside the scan: said as such, never drawn at the grid's end
            good = obs[np.isfinite(obs)]
            side = (
                f"above {mu.max():g}"
                if good.size and (good > 1 - cl).all()
                else f"below {mu.min():g}"
                if good.size and (good < 1 - cl).all()
                else "none"
            )
            ax.plot([], [], " ", label=f"Observed limit: {side}")
        if np.isfinite(expected):
            ax.axvline(
                expected, color="0.3", ls=":", lw=1.5, label=f"Expected limit: {expected:.3g}"
            )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or poi_label(ds))
    ax.set_ylabel("CLs")
    name = _name(one, index)
    ax.set_title(f"{name}: upper limit at {cl:.0%} CL", fontsize=11)
    ax.set_xlim(mu.min(), mu.max())
    legend(ax, title=analysis_text(label, energy=energy, lumi=lumi), loc="upper right")
    return finish(ax, save_figure)


def plot_upper_limits(
    ds: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    symbols: bool = False,
    label: str | None = None,
    energy: float | None = None,
    lumi: float | None = None,
    kinematic_limit: float | None = None,
    mix_slices: bool = False,
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """Map of the observed upper limit on the POI per point, with the lines where it is 1.

    Options as in :func:`pyhf_dask.plots.plot_exclusion`.

    Example:
        >>> fig = plot_upper_limits(ds)  # doctest: +SKIP
    """
    mpl = require("matplotlib", "plot")
    plane = select_plane(ds, x=x, y=y, where=where, quantity="upper_limit", mix_slices=mix_slices)
    cl = resolve_cl(ds, None)
    found = trace(
        plane, curves=("obs", "exp"), cl=cl, quantity="upper_limit", resolution=resolution
    )
    ax = new_axes(ax)
    ok = plane.usable("obs") & (plane.values["obs"] > 0)
    limits = plane.values["obs"][ok]
    mappable = _colour_points(ax, plane, ok, limits, mpl.colors.LogNorm(), "viridis", "No limit")
    styles: dict[str, dict[str, Any]] = {
        "obs": {"color": OBS_COLOR, "ls": "-", "label": "Observed limit = 1"},
        "exp": {"color": EXP_COLOR, "ls": "--", "label": "Expected limit = 1"},
    }
    for contour in found.contours:
        style = dict(styles[contour.curve])
        for line in contour.lines:
            ax.plot(line[:, 0], line[:, 1], lw=2.0, zorder=3, **style)
            style["label"] = None
    fig = ax.get_figure(root=True)
    label_text = f"Observed {cl:.0%} CL upper limit on {poi_symbol(ds)}"
    fig.colorbar(mappable, ax=ax, label=label_text)  # type: ignore[union-attr]
    _dress_plane(
        ax,
        plane,
        ds,
        f"Upper limits on {ds.attrs.get('poi_name') or 'the POI'!s}",
        symbols=symbols,
        kinematic_limit=kinematic_limit,
    )
    legend(ax, title=analysis_text(label, energy=energy, lumi=lumi))
    return finish(ax, save_figure)


def plot_significance_map(
    ds: xr.Dataset,
    *,
    curve: str = "obs",
    levels: tuple[float, ...] = (3.0, 5.0),
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    symbols: bool = False,
    label: str | None = None,
    energy: float | None = None,
    lumi: float | None = None,
    kinematic_limit: float | None = None,
    mix_slices: bool = False,
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """Map of the discovery significance ``Z = Phi^-1(1 - p0)`` of a ``test_stat="q0"`` scan.

    The colour is each point's Z (``curve``: ``obs`` or an expected curve, ``exp``,
    ``exp-1``, ...); the lines are where Z equals each of ``levels`` (3 and 5 sigma), found
    as the exclusion contours are (Z interpolated on the Delaunay triangulation of the
    points; nothing is drawn outside their hull). Other options as in
    :func:`pyhf_dask.plots.plot_exclusion`.

    Example:
        >>> fig = plot_significance_map(pyhf_dask.scan(grid, test_stat="q0"))  # doctest: +SKIP
    """
    mpl = require("matplotlib", "plot")
    from scipy.stats import norm

    if "p0_obs" not in ds:
        msg = "a significance map needs a discovery scan (--test-stat q0)"
        raise InvalidOption(msg)
    plane = select_plane(ds, x=x, y=y, where=where, mix_slices=mix_slices)
    if curve not in plane.values:
        msg = f"unknown curve {curve!r} (choose from: {', '.join(plane.values)})"
        raise InvalidOption(msg)
    ax = new_axes(ax)
    ok = plane.usable(curve)
    z = norm.isf(plane.values[curve][ok])
    norm_z = mpl.colors.Normalize(vmin=0.0, vmax=max(5.0, float(np.nanmax(z, initial=0.0))))
    mappable = _colour_points(ax, plane, ok, z, norm_z, "magma_r", "Failed fits")
    styles = ("-", "--", ":", "-.")
    for k, level in enumerate(levels):
        found = trace(plane, curves=(curve,), cl=float(norm.cdf(level)), resolution=resolution)
        for i, line in enumerate(found.contours[0].lines):
            ax.plot(
                line[:, 0],
                line[:, 1],
                color=OBS_COLOR if curve == "obs" else EXP_COLOR,
                ls=styles[k % len(styles)],
                lw=2.0,
                zorder=3,
                label=f"Z = {level:g}" if i == 0 else None,
            )
    name = "observed" if curve == "obs" else f"expected ({curve})"
    fig = ax.get_figure(root=True)
    fig.colorbar(mappable, ax=ax, label=f"Z, {name}")  # type: ignore[union-attr]
    _dress_plane(
        ax,
        plane,
        ds,
        f"Discovery significance, {name}",
        symbols=symbols,
        kinematic_limit=kinematic_limit,
    )
    legend(ax, title=analysis_text(label, energy=energy, lumi=lumi))
    return finish(ax, save_figure)
