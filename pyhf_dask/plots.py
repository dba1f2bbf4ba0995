"""Plots of a result Dataset: the exclusion contours and the CLs map.

The plots of a POI scan (Brazil band, upper-limit map) are in :mod:`pyhf_dask.plots_poi`;
what they share (figures, labels, colours, :func:`save_figure`) in :mod:`pyhf_dask.figures`.

matplotlib is an optional extra (``pip install 'pyhf_dask[plot]'``), imported when a plot is
made. Every function draws on a new figure (no pyplot state) or on the ``ax`` it is given and
returns the Figure, which a notebook shows inline; ``save_figure=`` (or
:func:`save_figure`) writes it (.png, .pdf, .svg).

Colours, the same in every plot: observed limit red and solid, expected limit blue and
dashed, expected bands green (±1σ) and yellow (±2σ), as in the experiments' Brazil plots.

Example:
    >>> import xarray as xr
    >>> ds = xr.open_dataset("regionA.nc")                      # doctest: +SKIP
    >>> fig = plot_exclusion(ds, save_figure="exclusion.png")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.contours import (
    Plane,
    SliceValue,
    plane_mesh,
    resolve_cl,
    select_plane,
    trace,
)
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.figures import (
    BAND_COLORS,
    EXP_COLOR,
    OBS_COLOR,
    SYMBOLS,
    analysis_text,
    axis_label,
    coordinate_text,
    finish,
    legend,
    new_axes,
    poi_symbol,
    save_figure,
    slice_text,
    unit_of,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BAND_COLORS",
    "SYMBOLS",
    "axis_label",
    "plot_cls_map",
    "plot_exclusion",
    "save_figure",
    "unit_of",
]

log = logging.getLogger(__name__)

#: Margin around the points, as a fraction of their span: the axes are fitted to the points.
_MARGIN = 0.03


#: Points without a fit yet, or not in this region: status -> (legend text, hollow marker).
_NOT_FITTED = {"pending": ("Pending, not fitted yet", "o"), "missing": ("Missing", "s")}


def _mark_unusable(ax: Axes, plane: Plane, ok: np.ndarray, failed: str, *, label: bool) -> None:
    """Mark the points without a value: failed fits as crosses (``failed`` in the legend),
    pending points (a store being written, or interrupted) and missing ones as hollow
    markers, each with its count."""
    status = np.asarray(plane.status).astype(str)
    unfitted = np.isin(status, list(_NOT_FITTED))
    crosses = ~ok & ~unfitted
    if crosses.any():
        ax.scatter(
            plane.x[crosses],
            plane.y[crosses],
            s=28,
            c="black",
            marker="x",
            linewidths=1.0,
            zorder=5,
            label=f"{failed} ({int(crosses.sum())})" if label else None,
        )
    for kind, (text, marker) in _NOT_FITTED.items():
        mask = ~ok & (status == kind)
        if mask.any():
            ax.scatter(
                plane.x[mask],
                plane.y[mask],
                s=26,
                marker=marker,
                facecolors="none",
                edgecolors="0.35",
                linewidths=0.9,
                zorder=5,
                label=f"{text} ({int(mask.sum())})" if label else None,
            )


def _mark_points(ax: Axes, plane: Plane, *, label: bool = True) -> None:
    ok = plane.usable("obs")
    ax.scatter(
        plane.x[ok],
        plane.y[ok],
        s=9,
        c="0.45",
        marker="o",
        linewidths=0,
        zorder=4,
        label=f"Fitted points ({int(ok.sum())})" if label else None,
    )
    _mark_unusable(ax, plane, ok, "Failed fits", label=label)


def _band(ax: Axes, plane: Plane, sigma: int, *, cl: float, resolution: int) -> None:
    """Fill where the ``-sigma`` member excludes and the ``+sigma`` member does not."""
    lower = plane_mesh(plane, f"exp-{sigma}", cl=cl, resolution=resolution)
    upper = plane_mesh(plane, f"exp+{sigma}", cl=cl, resolution=resolution)
    inside = np.fmin(lower.z - lower.level, upper.level - upper.z)
    top = np.nanmax(inside) if np.isfinite(inside).any() else np.nan
    color = BAND_COLORS[sigma]
    label = rf"Expected $\pm {sigma}\sigma$"
    if not top > 0:
        ax.fill_between([], [], color=color, label=label)  # an empty band: still in the legend
        return
    ax.contourf(
        lower.x,
        lower.y,
        np.ma.masked_invalid(inside),
        levels=[0.0, top + 1.0],
        colors=[color],
        zorder=1,
    )
    ax.fill_between([], [], color=color, label=label)  # legend entry


def _lines(ax: Axes, lines: list[np.ndarray], label: str, **style: Any) -> None:
    for k, line in enumerate(lines):
        ax.plot(line[:, 0], line[:, 1], zorder=3, label=label if k == 0 else None, **style)


def plot_exclusion(
    ds: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    cl: float | None = None,
    poi: float | None = None,
    band2: bool = False,
    show_points: bool = True,
    symbols: bool = False,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    label: str | None = None,
    energy: float | None = None,
    lumi: float | None = None,
    kinematic_limit: float | None = None,
    mix_slices: bool = False,
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """The exclusion plot: observed line, expected line, its bands, the points.

    The contours are those of :func:`pyhf_dask.contours.find_contours` (significance transform,
    Delaunay interpolation, contourpy); the ±1σ band (green) is the region where the -1σ
    member excludes and the +1σ member does not, the ±2σ band (yellow) likewise. The axes
    span the points (3 % margin).

    Args:
        ds: a computed result Dataset.
        x, y, where, poi, mix_slices: the plane (default: first two labels, the slice holding
            most points), as in :func:`pyhf_dask.planes.select_plane`.
        cl: confidence level (default: the result's ``cl``).
        band2: also draw the ±2σ band.
        show_points: mark the fitted (and failed) points.
        symbols: label the axes with SUSY symbols (``m(b̃₁)``) instead of the names.
        xlabel, ylabel, title: override the default texts.
        label, energy, lumi: the analysis label at the head of the legend: a text, √s in
            TeV and the integrated luminosity in fb⁻¹.
        kinematic_limit: draw the line ``y = x - kinematic_limit`` (0: ``m(χ̃⁰₂) = m(b̃₁)``
            in the sbottom plane), beyond which decays are closed.
        resolution: interpolation mesh nodes per axis.
        ax: draw on these axes instead of a new figure.
        save_figure: path to write the figure to.

    Example:
        >>> fig = plot_exclusion(ds, where={"mn1": 60}, energy=13, lumi=139)  # doctest: +SKIP
    """
    cl = resolve_cl(ds, cl)
    plane = select_plane(ds, x=x, y=y, where=where, poi=poi, mix_slices=mix_slices)
    found = trace(plane, curves=("obs", "exp"), cl=cl, resolution=resolution)
    ax = new_axes(ax)
    for sigma in (2, 1) if band2 else (1,):
        _band(ax, plane, sigma, cl=cl, resolution=resolution)
    _lines(ax, found.get("exp").lines, "Expected limit", color=EXP_COLOR, ls="--", lw=2.0)
    observed = f"Observed limit ({cl:.0%} CL)"
    _lines(ax, found.get("obs").lines, observed, color=OBS_COLOR, ls="-", lw=2.5)
    if show_points:
        _mark_points(ax, plane)
    _dress_plane(
        ax,
        plane,
        ds,
        f"Exclusion at {cl:.0%} CL (CLs = {1 - cl:.2g})",
        symbols=symbols,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        kinematic_limit=kinematic_limit,
    )
    legend(ax, title=analysis_text(label, energy=energy, lumi=lumi))
    return finish(ax, save_figure)


def _dress_plane(
    ax: Axes,
    plane: Plane,
    ds: xr.Dataset,
    base_title: str,
    *,
    symbols: bool,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    kinematic_limit: float | None = None,
) -> None:
    """Axis labels, a title naming the slice (unless ``title`` is given), limits, the
    kinematic limit."""
    ax.set_xlabel(xlabel or axis_label(plane.x_name, ds, symbols=symbols))
    ax.set_ylabel(ylabel or axis_label(plane.y_name, ds, symbols=symbols))
    if title is None:
        title = base_title
        if plane.selection:
            title += f", {slice_text(plane, ds, symbols)}"
        if plane.poi is not None and ("poi" in ds.dims or not np.isclose(plane.poi, 1.0)):
            title += f", {poi_symbol(ds)} = {plane.poi:g}"  # the POI value of a POI scan
    ax.set_title(title, fontsize=11)
    _fit_axes(ax, plane)
    if kinematic_limit is not None:
        _kinematic_line(ax, plane, float(kinematic_limit), ds, symbols)


def _fit_axes(ax: Axes, plane: Plane) -> None:
    """Axis limits that span the points of the plane, with a small margin."""
    for points, setter in ((plane.x, ax.set_xlim), (plane.y, ax.set_ylim)):
        span = float(np.ptp(points)) or 1.0
        setter(points.min() - _MARGIN * span, points.max() + _MARGIN * span)


def _kinematic_line(ax: Axes, plane: Plane, offset: float, ds: xr.Dataset, symbols: bool) -> None:
    """The line ``y = x - offset`` across the axes, e.g. m(χ̃⁰₂) = m(b̃₁) for offset 0.

    Nothing is drawn (nor put in the legend) when the line does not cross the axes.
    """
    xs = np.array(ax.get_xlim())
    low, high = ax.get_ylim()
    if (xs - offset).max() < low or (xs - offset).min() > high:
        log.info("the kinematic limit lies outside the plotted range: not drawn")
        return
    unit = unit_of(plane.x_name, ds)
    shift = f" − {offset:g}{' ' + unit if unit else ''}" if offset else ""
    y_text = coordinate_text(plane.y_name, symbols=symbols)
    x_text = coordinate_text(plane.x_name, symbols=symbols)
    ax.plot(
        xs,
        xs - offset,
        color="0.4",
        ls=(0, (5, 2, 1, 2)),
        lw=1.2,
        zorder=2,
        scalex=False,
        scaley=False,
        label=f"Kinematic limit {y_text} = {x_text}{shift}",
    )


def _colour_points(
    ax: Axes,
    plane: Plane,
    ok: np.ndarray,
    values: np.ndarray,
    norm: Any,
    cmap: str,
    missing: str,
) -> Any:
    """Scatter the usable points coloured by ``values``; mark the others with a cross."""
    mappable = ax.scatter(
        plane.x[ok],
        plane.y[ok],
        c=values,
        norm=norm,
        cmap=cmap,
        s=40,
        edgecolors="none",
        zorder=2,
    )
    _mark_unusable(ax, plane, ok, missing, label=True)
    return mappable


def plot_cls_map(
    ds: xr.Dataset,
    *,
    curve: str = "obs",
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    cl: float | None = None,
    poi: float | None = None,
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
    """CLs per point as colour (log scale), with the ``CLs = 1 - cl`` line of the same curve.

    Options as in :func:`plot_exclusion`; ``curve`` is one of ``obs``, ``exp``, ``exp-1``,
    ``exp+1``, ``exp-2``, ``exp+2``.

    Example:
        >>> fig = plot_cls_map(ds, curve="exp")  # doctest: +SKIP
    """
    mpl = require("matplotlib", "plot")
    cl = resolve_cl(ds, cl)
    plane = select_plane(ds, x=x, y=y, where=where, poi=poi, mix_slices=mix_slices)
    if curve not in plane.values:
        msg = f"unknown curve {curve!r} (choose from: {', '.join(plane.values)})"
        raise InvalidOption(msg)
    found = trace(plane, curves=(curve,), cl=cl, resolution=resolution)
    ax = new_axes(ax)
    ok = plane.usable(curve)
    values = np.clip(plane.values[curve][ok], 1e-4, 1.0)
    norm = mpl.colors.LogNorm(vmin=min(1e-3, values.min(initial=1.0)), vmax=1.0)
    mappable = _colour_points(ax, plane, ok, values, norm, "viridis_r", "Failed fits")
    _lines(ax, found.contours[0].lines, f"CLs = {1 - cl:.2g}", color=OBS_COLOR, lw=2.0)
    name = "observed" if curve == "obs" else f"expected ({curve})"
    ax.get_figure(root=True).colorbar(mappable, ax=ax, label=f"CLs, {name}")  # type: ignore[union-attr]
    _dress_plane(ax, plane, ds, f"CLs {name}", symbols=symbols, kinematic_limit=kinematic_limit)
    legend(ax, title=analysis_text(label, energy=energy, lumi=lumi))
    return finish(ax, save_figure)
