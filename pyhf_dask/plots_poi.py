"""Plots of a POI scan: the Brazil band of one point and the map of upper limits.

Like :mod:`pyhf_dask.plots`, every function returns a :class:`matplotlib.figure.Figure` and
needs the ``plot`` extra.

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
from pyhf_dask.plots import (
    _BAND1_COLOR,
    _EXP_COLOR,
    _OBS_COLOR,
    _colour_points,
    _dress_plane,
    _finish,
    _new_axes,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_brazil", "plot_upper_limits"]


def _point_index(ds: xr.Dataset, point: int | str) -> int:
    if isinstance(point, str):
        names = np.asarray(ds["patch"].values).astype(str)
        found = np.flatnonzero(names == point)
        if not found.size:
            msg = f"no point named {point!r} in the result"
            raise InvalidOption(msg)
        return int(found[0])
    if not 0 <= point < ds.sizes["point"]:
        msg = f"point index {point} out of range (0..{ds.sizes['point'] - 1})"
        raise InvalidOption(msg)
    return int(point)


def plot_brazil(
    ds: xr.Dataset,
    *,
    point: int | str = 0,
    cl: float | None = None,
    log_y: bool = False,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """The Brazil band of one point of a POI scan: CLs against the POI, upper limits marked.

    Args:
        ds: a computed result with a ``poi`` dimension.
        point: index or patch name of the point.
        cl: confidence level of the horizontal line (default: the result's ``cl``).
        log_y: logarithmic CLs axis.

    Example:
        >>> fig = plot_brazil(ds, point="sbottom_1300_205_60")  # doctest: +SKIP
    """
    if "poi" not in ds.dims or ds.sizes["poi"] < 2:
        msg = "a Brazil band needs a POI scan (a result with several POI values)"
        raise InvalidOption(msg)
    cl = resolve_cl(ds, cl)
    index = _point_index(ds, point)
    one = ds.isel(point=index)
    mu = np.asarray(ds["poi"].values, dtype=float)
    obs = np.asarray(one["CLs_obs"].values, dtype=float)
    exp = {
        int(b): np.asarray(one["CLs_exp"].sel(band=b).values, dtype=float)
        for b in ds["band"].values
    }
    ax = _new_axes(ax)
    ax.fill_between(mu, exp[-2], exp[2], color=_BAND1_COLOR, label=r"Expected $\pm 2\sigma$")
    ax.fill_between(mu, exp[-1], exp[1], color="#00cc00", label=r"Expected $\pm 1\sigma$")
    ax.plot(mu, exp[0], color="black", ls="--", label="Expected CLs")
    ax.plot(mu, obs, color="black", marker="o", ms=4, label="Observed CLs")
    ax.axhline(1 - cl, color=_OBS_COLOR, lw=1.5, label=f"CLs = {1 - cl:.2g}")
    if "upper_limit_obs" in one:
        limit = float(one["upper_limit_obs"].values)
        expected = float(one["upper_limit_exp"].sel(band=0).values)
        if np.isfinite(limit):
            ax.axvline(
                limit, color=_OBS_COLOR, ls=":", lw=1.5, label=f"Observed limit: {limit:.3g}"
            )
        if np.isfinite(expected):
            ax.axvline(
                expected, color="0.3", ls=":", lw=1.5, label=f"Expected limit: {expected:.3g}"
            )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(str(ds.attrs.get("poi_name") or "POI"))
    ax.set_ylabel("CLs")
    name = str(one["patch"].values) if "patch" in one.coords else f"point {index}"
    ax.set_title(f"{name}: upper limit at {cl:.0%} CL", fontsize=11)
    ax.set_xlim(mu.min(), mu.max())
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    return _finish(ax, save_figure)


def plot_upper_limits(
    ds: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    symbols: bool = False,
    resolution: int = 200,
    ax: Axes | None = None,
    save_figure: str | os.PathLike[str] | None = None,
) -> Figure:
    """Map of the observed upper limit on the POI per point, with the lines where it is 1.

    Example:
        >>> fig = plot_upper_limits(ds)  # doctest: +SKIP
    """
    mpl = require("matplotlib", "plot")
    plane = select_plane(ds, x=x, y=y, where=where, quantity="upper_limit")
    cl = resolve_cl(ds, None)
    ax = _new_axes(ax)
    ok = plane.usable("obs") & (plane.values["obs"] > 0)
    limits = plane.values["obs"][ok]
    mappable = _colour_points(ax, plane, ok, limits, mpl.colors.LogNorm(), "viridis", "No limit")
    found = trace(
        plane, curves=("obs", "exp"), cl=cl, quantity="upper_limit", resolution=resolution
    )
    styles: dict[str, dict[str, Any]] = {
        "obs": {"color": _OBS_COLOR, "ls": "-", "label": "Observed limit = 1"},
        "exp": {"color": _EXP_COLOR, "ls": "--", "label": "Expected limit = 1"},
    }
    for contour in found.contours:
        style = dict(styles[contour.curve])
        for line in contour.lines:
            ax.plot(line[:, 0], line[:, 1], lw=2.0, zorder=3, **style)
            style["label"] = None
    poi_name = str(ds.attrs.get("poi_name") or "POI")
    fig = ax.get_figure(root=True)
    fig.colorbar(mappable, ax=ax, label=f"Observed {cl:.0%} CL upper limit on {poi_name}")  # type: ignore[union-attr]
    _dress_plane(ax, plane, ds, f"Upper limits on {poi_name}", symbols=symbols)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    return _finish(ax, save_figure)
