"""Result assembly: the xarray Dataset of a scan, upper limits, unstacking, netCDF output.

Layout of a result Dataset:

- dimension ``point`` with coordinates ``patch`` (the point's name) and one coordinate per
  grid label (e.g. ``msb``, ``mn2``, ``mn1``);
- dimension ``band`` = ``[-2, -1, 0, 1, 2]`` for the expected band;
- ``poi``: a scalar coordinate for one POI value, a dimension for several;
- variables ``CLs_obs``, ``CLs_exp``, ``status``, ``message``, ``fit_time`` and, with a
  ``poi`` dimension, ``upper_limit_obs`` and ``upper_limit_exp``;
- flat provenance attributes (strings and numbers only, so netCDF can store them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from pyhf_dask.kernels import BAND

__all__ = ["ScanSummary", "as_str", "summarize", "to_netcdf", "unstack", "upper_limits"]


def upper_limits(
    cls_obs: np.ndarray, cls_exp: np.ndarray, poi_values: Sequence[float], *, cl: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Upper limits from a POI scan, as ``pyhf.infer.intervals.upper_limits`` derives them.

    pyhf interpolates linearly in the reversed scan where CLs crosses ``1 - cl``
    (``np.interp(alpha, CLs[::-1], poi[::-1])``); this does the same per point.

    Args:
        cls_obs: shape ``(n_points, n_poi)``.
        cls_exp: shape ``(n_points, n_poi, 5)``.
        poi_values: the scanned POI values, increasing.
        cl: confidence level.

    POI values whose CLs are not all finite (not certified) are left out of a point's
    scan, so that one failed value does not cost the point its limit; a point keeps NaN
    limits when fewer than two values are left.

    Returns:
        ``(obs, exp)`` of shapes ``(n_points,)`` and ``(n_points, 5)``.

    Example:
        >>> obs, exp = upper_limits(np.array([[0.5, 0.01]]), np.full((1, 2, 5), 0.5), [0, 1])
        >>> round(float(obs[0]), 4)
        0.9184
        >>> cls = np.array([[0.5, np.nan, 0.01]])
        >>> round(float(upper_limits(cls, np.full((1, 3, 5), 0.5), [0, 0.5, 1])[0][0]), 4)
        0.9184
    """
    alpha = 1.0 - cl
    scan = np.asarray(poi_values, dtype=np.float64)
    n_points = cls_obs.shape[0]
    obs = np.full(n_points, np.nan)
    exp = np.full((n_points, len(BAND)), np.nan)
    for i in range(n_points):
        curves = np.concatenate([cls_obs[i][None, :], cls_exp[i].T], axis=0)
        good = np.isfinite(curves).all(axis=0)
        if good.sum() < 2:
            continue
        curves, values = curves[:, good], scan[good]
        limits = [np.interp(alpha, curve[::-1], values[::-1]) for curve in curves]
        obs[i] = limits[0]
        exp[i] = limits[1:]
    return obs, exp


def unstack(ds: xr.Dataset) -> xr.Dataset:
    """Turn the grid labels of a regular grid into real dimensions.

    Points missing from the product of the label values become NaN.

    Example:
        >>> ds = xr.Dataset({"CLs_obs": ("point", [0.1, 0.2])},
        ...                 coords={"m1": ("point", [1, 2]), "m2": ("point", [5, 5])},
        ...                 attrs={"labels": "m1,m2"})
        >>> unstack(ds).CLs_obs.dims
        ('m1', 'm2')
    """
    labels = [label for label in str(ds.attrs.get("labels", "")).split(",") if label]
    if not labels:
        msg = "the Dataset has no 'labels' attribute naming its grid coordinates"
        raise ValueError(msg)
    dropped = ds.drop_vars([c for c in ("patch",) if c in ds.coords])
    return dropped.set_index(point=labels).unstack("point").transpose(*labels, ...)


class ScanSummary(NamedTuple):
    """Counts of a finished scan."""

    n_points: int
    n_converged: int
    n_fallback: int
    n_failed: int
    #: Points with some POI values certified and the others NaN.
    n_partial: int = 0

    def __str__(self) -> str:
        text = f"{self.n_points} points: {self.n_converged} converged, {self.n_failed} failed"
        if self.n_partial:
            text += f", {self.n_partial} partial (some POI values failed)"
        return text + (f", {self.n_fallback} by fallback kernel" if self.n_fallback else "")


def as_str(values: Any) -> np.ndarray:
    """A NumPy ``str`` array from strings of any storage (object, fixed, StringDType).

    Example:
        >>> as_str(np.array(["a", "bc"], dtype=object)).tolist()
        ['a', 'bc']
    """
    array = np.asarray(values)
    return np.array([str(v) for v in array.ravel()], dtype=str).reshape(array.shape)


def summarize(ds: xr.Dataset) -> ScanSummary:
    """Count converged, fallback and failed points of a computed result."""
    status = as_str(ds["status"].values)
    return ScanSummary(
        n_points=int(status.size),
        n_converged=int((status == "converged").sum()),
        n_fallback=int((status == "fallback").sum()),
        n_failed=int((status == "failed").sum()),
        n_partial=int((status == "partial").sum()),
    )


def to_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write a computed result to netCDF-4 (readable with ``xarray.open_dataset``)."""
    out = ds.copy()
    for name in ("message", "status", "patch"):
        if name in out.variables:
            out[name] = out[name].copy(data=as_str(out[name].values))
    encoding: dict[str, Any] = {}
    out.to_netcdf(path, engine="h5netcdf", encoding=encoding)
