"""Plots of a result Dataset: the exclusion contours and the CLs map.

The plots of a POI scan (Brazil band, upper-limit map) are in :mod:`pyhf_dask.plots_poi`.

matplotlib is an optional extra (``pip install 'pyhf_dask[plot]'``), imported when a plot is
made. Every function draws on a new :class:`matplotlib.figure.Figure` (no pyplot state) or on
the ``ax`` it is given, and returns the Figure; ``save_figure`` writes it (.png, .pdf, .svg).

Example:
    >>> import xarray as xr
    >>> ds = xr.open_dataset("regionA.nc")                      # doctest: +SKIP
    >>> fig = plot_exclusion(ds, save_figure="exclusion.png")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
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

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "SYMBOLS",
    "axis_label",
    "plot_cls_map",
    "plot_exclusion",
    "unit_of",
]

log = logging.getLogger(__name__)

#: Symbols of common SUSY mass labels, used with ``symbols=True``.
SYMBOLS = {
    "msb": r"$m(\tilde{b}_1)$",
    "mst": r"$m(\tilde{t}_1)$",
    "mgl": r"$m(\tilde{g})$",
    "msq": r"$m(\tilde{q})$",
    "mn1": r"$m(\tilde{\chi}^0_1)$",
    "mn2": r"$m(\tilde{\chi}^0_2)$",
    "mc1": r"$m(\tilde{\chi}^\pm_1)$",
    "mslep": r"$m(\tilde{\ell})$",
}
_MASS = re.compile(r"^m[a-z]*\d*$", re.IGNORECASE)
_OBS_COLOR, _EXP_COLOR = "#cc0000", "#1f3a93"
_BAND1_COLOR, _BAND2_COLOR = "#ffd700", "#9be39b"
_LEGEND_ORDER = ("Observed", "Expected limit", r"1\sigma", r"2\sigma", "Fitted", "Failed")


def _legend_rank(label: str) -> int:
    ranks = [k for k, key in enumerate(_LEGEND_ORDER) if key in label]
    return ranks[0] if ranks else len(_LEGEND_ORDER)


def unit_of(name: str, ds: xr.Dataset | None = None) -> str | None:
    """The unit of a grid coordinate: its ``units`` attribute, else GeV for mass-like names.

    Example:
        >>> unit_of("msb"), unit_of("scale")
        ('GeV', None)
    """
    if ds is not None and name in ds.coords and ds[name].attrs.get("units"):
        return str(ds[name].attrs["units"])
    return "GeV" if _MASS.match(name) else None


def axis_label(name: str, ds: xr.Dataset | None = None, *, symbols: bool = False) -> str:
    """Axis label of a coordinate: its name (or symbol) and unit.

    Example:
        >>> axis_label("msb"), axis_label("msb", symbols=True)
        ('msb [GeV]', '$m(\\\\tilde{b}_1)$ [GeV]')
    """
    text = SYMBOLS.get(name, name) if symbols else name
    unit = unit_of(name, ds)
    return f"{text} [{unit}]" if unit else text


def _value_text(name: str, value: SliceValue, ds: xr.Dataset | None, symbols: bool) -> str:
    text = SYMBOLS.get(name, name) if symbols else name
    unit = unit_of(name, ds)
    suffix = f" {unit}" if unit else ""
    if isinstance(value, tuple):
        return f"{value[0]:g} ≤ {text} ≤ {value[1]:g}{suffix}"
    return f"{text} = {value:g}{suffix}"


def _slice_text(plane: Plane, ds: xr.Dataset, symbols: bool) -> str:
    return ", ".join(_value_text(k, v, ds, symbols) for k, v in plane.selection.items())


def _new_axes(ax: Axes | None, *, figsize: tuple[float, float] = (6.4, 5.2)) -> Axes:
    require("matplotlib", "plot")
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _finish(ax: Axes, save_figure: str | os.PathLike[str] | None) -> Figure:
    fig = ax.get_figure(root=True)
    assert fig is not None
    if save_figure is not None:
        fig.savefig(save_figure, dpi=150)
        log.info("wrote %s", save_figure)
    return fig


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
    if (~ok).any():
        ax.scatter(
            plane.x[~ok],
            plane.y[~ok],
            s=28,
            c="black",
            marker="x",
            linewidths=1.0,
            zorder=5,
            label=f"Failed fits ({int((~ok).sum())})" if label else None,
        )


def _band(
    ax: Axes,
    plane: Plane,
    low: str,
    high: str,
    *,
    cl: float,
    resolution: int,
    color: str,
    label: str,
) -> None:
    """Fill where the ``low`` member excludes and the ``high`` member does not."""
    lower = plane_mesh(plane, low, cl=cl, resolution=resolution)
    upper = plane_mesh(plane, high, cl=cl, resolution=resolution)
    inside = np.fmin(lower.z - lower.level, upper.level - upper.z)
    top = np.nanmax(inside) if np.isfinite(inside).any() else np.nan
    if not top > 0:
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
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """The exclusion plot: observed line, expected line, ±1 sigma band, the points.

    The contours are those of :func:`pyhf_dask.contours.find_contours` (significance transform,
    Delaunay interpolation, contourpy); the band is the region where the -1 sigma member
    excludes and the +1 sigma member does not.

    Args:
        ds: a computed result Dataset.
        x, y, where, poi: the plane (default: first two labels, the slice holding most points).
        cl: confidence level (default: the result's ``cl``).
        band2: also draw the ±2 sigma band.
        show_points: mark the fitted (and failed) points.
        symbols: label the axes with SUSY symbols (``m(b̃₁)``) instead of the names.
        xlabel, ylabel, title: override the default texts.
        resolution: interpolation mesh nodes per axis.
        ax: draw on these axes instead of a new figure.
        save_figure: path to write the figure to.

    Example:
        >>> fig = plot_exclusion(ds, where={"mn1": 60})  # doctest: +SKIP
    """
    cl = resolve_cl(ds, cl)
    plane = select_plane(ds, x=x, y=y, where=where, poi=poi)
    curves = ("obs", "exp", "exp-1", "exp+1", "exp-2", "exp+2") if band2 else ("obs", "exp")
    found = trace(plane, curves=curves, cl=cl, resolution=resolution)
    ax = _new_axes(ax)
    if band2:
        _band(
            ax,
            plane,
            "exp-2",
            "exp+2",
            cl=cl,
            resolution=resolution,
            color=_BAND2_COLOR,
            label=r"Expected $\pm 2\sigma$",
        )
    _band(
        ax,
        plane,
        "exp-1",
        "exp+1",
        cl=cl,
        resolution=resolution,
        color=_BAND1_COLOR,
        label=r"Expected $\pm 1\sigma$",
    )
    for k, line in enumerate(found.get("exp").lines):
        ax.plot(
            line[:, 0],
            line[:, 1],
            color=_EXP_COLOR,
            ls="--",
            lw=2.0,
            zorder=3,
            label="Expected limit" if k == 0 else None,
        )
    for k, line in enumerate(found.get("obs").lines):
        ax.plot(
            line[:, 0],
            line[:, 1],
            color=_OBS_COLOR,
            ls="-",
            lw=2.5,
            zorder=3,
            label=f"Observed limit ({cl:.0%} CL)" if k == 0 else None,
        )
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
    )
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: _legend_rank(labels[i]))
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper left",
        frameon=False,
        fontsize=9,
    )
    return _finish(ax, save_figure)


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
) -> None:
    """Axis labels, a title naming the slice (unless ``title`` is given), padded limits."""
    ax.set_xlabel(xlabel or axis_label(plane.x_name, ds, symbols=symbols))
    ax.set_ylabel(ylabel or axis_label(plane.y_name, ds, symbols=symbols))
    if title is None:
        title = base_title
        if plane.selection:
            title += f", {_slice_text(plane, ds, symbols)}"
    ax.set_title(title, fontsize=11)
    _pad(ax, plane)


def _pad(ax: Axes, plane: Plane) -> None:
    span_x = np.ptp(plane.x) or 1.0
    span_y = np.ptp(plane.y) or 1.0
    ax.set_xlim(plane.x.min() - 0.03 * span_x, plane.x.max() + 0.03 * span_x)
    ax.set_ylim(plane.y.min() - 0.03 * span_y, plane.y.max() + 0.25 * span_y)  # room for legend


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
    if (~ok).any():
        ax.scatter(
            plane.x[~ok],
            plane.y[~ok],
            s=30,
            c="black",
            marker="x",
            zorder=3,
            label=f"{missing} ({int((~ok).sum())})",
        )
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
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """CLs per point as colour (log scale), with the ``CLs = 1 - cl`` line of the same curve.

    Example:
        >>> fig = plot_cls_map(ds, curve="exp")  # doctest: +SKIP
    """
    mpl = require("matplotlib", "plot")
    cl = resolve_cl(ds, cl)
    plane = select_plane(ds, x=x, y=y, where=where, poi=poi)
    if curve not in plane.values:
        msg = f"unknown curve {curve!r} (choose from: {', '.join(plane.values)})"
        raise InvalidOption(msg)
    ax = _new_axes(ax)
    ok = plane.usable(curve)
    values = np.clip(plane.values[curve][ok], 1e-4, 1.0)
    norm = mpl.colors.LogNorm(vmin=min(1e-3, values.min(initial=1.0)), vmax=1.0)
    mappable = _colour_points(ax, plane, ok, values, norm, "viridis_r", "Failed fits")
    found = trace(plane, curves=(curve,), cl=cl, resolution=resolution)
    for k, line in enumerate(found.contours[0].lines):
        ax.plot(
            line[:, 0],
            line[:, 1],
            color=_OBS_COLOR,
            lw=2.0,
            zorder=3,
            label=f"CLs = {1 - cl:.2g}" if k == 0 else None,
        )
    name = "observed" if curve == "obs" else f"expected ({curve})"
    ax.get_figure(root=True).colorbar(mappable, ax=ax, label=f"CLs, {name}")  # type: ignore[union-attr]
    _dress_plane(ax, plane, ds, f"CLs {name}", symbols=symbols)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    return _finish(ax, save_figure)
