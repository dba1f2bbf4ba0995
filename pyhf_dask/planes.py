"""The plane of a result Dataset in which contours are traced and points are plotted.

Two grid labels are the axes; the other labels are fixed to a value or a range (the
default: the value that holds the most points). Failed points stay in the plane, marked
not usable, so that plots can show them; contours leave them out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, NamedTuple

import numpy as np
import xarray as xr

from pyhf_dask.exceptions import InputError, InvalidOption

__all__ = [
    "CURVES",
    "Plane",
    "Quantity",
    "SliceValue",
    "default_axes",
    "default_slice",
    "grid_labels",
    "resolve_cl",
    "select_plane",
]

log = logging.getLogger(__name__)

#: Curves of a contour set: observed, expected median and the expected band members.
CURVES = ("obs", "exp", "exp-1", "exp+1", "exp-2", "exp+2")
_BAND = {"exp": 0, "exp-1": -1, "exp+1": 1, "exp-2": -2, "exp+2": 2}

Quantity = Literal["cls", "upper_limit"]
SliceValue = float | tuple[float, float]


class Plane(NamedTuple):
    """The points of a result that lie in one 2-D plane of the grid.

    ``values`` holds one array per curve (CLs, or upper limits), NaN where a point failed.
    """

    x_name: str
    y_name: str
    selection: dict[str, SliceValue]
    x: np.ndarray
    y: np.ndarray
    patch: np.ndarray
    status: np.ndarray
    values: dict[str, np.ndarray]
    poi: float | None

    def usable(self, curve: str = "obs") -> np.ndarray:
        """Mask of the points whose fit did not fail and whose value is finite."""
        return (self.status != "failed") & np.isfinite(self.values[curve])

    def describe(self) -> str:
        """The slice as text, e.g. ``"mn1 = 60"`` (empty for a 2-D grid)."""
        parts = []
        for name, value in self.selection.items():
            if isinstance(value, tuple):
                parts.append(f"{value[0]:g} ≤ {name} ≤ {value[1]:g}")
            else:
                parts.append(f"{name} = {value:g}")
        return ", ".join(parts)


def grid_labels(ds: xr.Dataset) -> list[str]:
    """The grid coordinate names of a result (its ``labels`` attribute, in order)."""
    labels = [label for label in str(ds.attrs.get("labels", "")).split(",") if label]
    if not labels:
        labels = [
            str(n)
            for n, c in ds.coords.items()
            if c.dims == ("point",)
            and n not in ("patch", "point")
            and np.issubdtype(c.dtype, np.number)
        ]
    return labels


def default_axes(ds: xr.Dataset) -> tuple[str, str]:
    """The first two grid labels, the axes of a plot made without options."""
    labels = grid_labels(ds)
    if len(labels) < 2:
        msg = f"a contour needs a grid with two or more coordinates, this one has {labels}"
        raise InvalidOption(msg)
    return labels[0], labels[1]


def default_slice(
    ds: xr.Dataset, x: str, y: str, *, where: Mapping[str, SliceValue] | None = None
) -> dict[str, float]:
    """The values of the labels not in ``x``, ``y`` or ``where`` that hold the most points.

    Ties go to the smallest values. For the sbottom archive this is ``{"mn1": 60.0}``.
    """
    where = dict(where or {})
    rest = [label for label in grid_labels(ds) if label not in (x, y, *where)]
    if not rest:
        return {}
    mask = _where_mask(ds, where)
    table = np.stack([np.asarray(ds[label].values, dtype=float)[mask] for label in rest], axis=1)
    if table.size == 0:
        return {}
    combos, counts = np.unique(table, axis=0, return_counts=True)
    best = combos[int(np.argmax(counts))]
    return {label: float(value) for label, value in zip(rest, best, strict=True)}


def _where_mask(ds: xr.Dataset, where: Mapping[str, SliceValue]) -> np.ndarray:
    mask = np.ones(ds.sizes["point"], dtype=bool)
    for name, value in where.items():
        coord = np.asarray(ds[name].values, dtype=float)
        if isinstance(value, tuple):
            mask &= (coord >= value[0]) & (coord <= value[1])
        else:
            mask &= np.isclose(coord, float(value), rtol=1e-9, atol=1e-9)
    return mask


def _check_result(ds: xr.Dataset) -> None:
    missing = [v for v in ("CLs_obs", "CLs_exp") if v not in ds]
    if missing or "point" not in ds.dims:
        msg = f"not a pyhf_dask result: missing {', '.join(missing) or 'the point dimension'}"
        raise InputError(msg)


def _pick_poi(ds: xr.Dataset, poi: float | None) -> tuple[xr.Dataset, float | None]:
    if "poi" not in ds.dims:
        value = float(ds["poi"].values) if "poi" in ds.coords else None
        if poi is not None and value is not None and not np.isclose(poi, value):
            msg = f"the scan was made at {ds.attrs.get('poi_name', 'POI')} = {value:g}, not {poi:g}"
            raise InvalidOption(msg)
        return ds, value
    values = np.asarray(ds["poi"].values, dtype=float)
    target = 1.0 if poi is None else float(poi)
    index = int(np.argmin(np.abs(values - target)))
    if not np.isclose(values[index], target):
        if poi is not None:
            scanned = ", ".join(f"{v:g}" for v in values)
            msg = f"POI value {poi:g} was not scanned (values: {scanned})"
            raise InvalidOption(msg)
        log.info("no POI value 1 in the scan; using the nearest, %g", values[index])
    return ds.isel(poi=index), float(values[index])


def select_plane(
    ds: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    poi: float | None = None,
    quantity: Quantity = "cls",
) -> Plane:
    """The points of ``ds`` in the plane of ``x`` and ``y`` at the slice ``where``.

    Args:
        ds: a computed result Dataset.
        x: horizontal coordinate (default: the first grid label).
        y: vertical coordinate (default: the second grid label).
        where: fixed value (``{"mn1": 60}``) or inclusive range (``{"mn1": (50, 70)}``) of
            the other labels; labels not given take the value holding most points.
        poi: the POI value of a POI scan (default: 1, or the nearest scanned value).
        quantity: ``"cls"`` (CLs per curve) or ``"upper_limit"`` (needs a POI scan).

    Raises:
        InvalidOption: unknown coordinates, an empty slice, or points that coincide in the plane.
    """
    _check_result(ds)
    default_x, default_y = default_axes(ds)
    x, y = x or default_x, y or default_y
    labels = grid_labels(ds)
    where = {
        k: (tuple(map(float, v)) if isinstance(v, tuple | list) else float(v))  # type: ignore[misc]
        for k, v in (where or {}).items()
    }
    for name in (x, y, *where):
        if name not in labels:
            msg = f"unknown grid coordinate {name!r} (coordinates: {', '.join(labels)})"
            raise InvalidOption(msg)
    if x == y or x in where or y in where:
        msg = f"the axes ({x}, {y}) must be two different coordinates not fixed by the slice"
        raise InvalidOption(msg)
    selection: dict[str, SliceValue] = {**where, **default_slice(ds, x, y, where=where)}
    selection = {k: selection[k] for k in labels if k in selection}
    mask = _where_mask(ds, selection)
    if not mask.any():
        msg = f"no points in the slice {selection}"
        raise InvalidOption(msg)
    if quantity == "upper_limit":
        if "upper_limit_obs" not in ds:
            msg = "upper limits need a result of a POI scan (several --poi-value)"
            raise InvalidOption(msg)
        chosen, poi_value = ds, None
        obs, exp = ds["upper_limit_obs"], ds["upper_limit_exp"]
    else:
        chosen, poi_value = _pick_poi(ds, poi)
        obs, exp = chosen["CLs_obs"], chosen["CLs_exp"]
    values = {"obs": np.asarray(obs.values, dtype=float)[mask]}
    for curve, band in _BAND.items():
        values[curve] = np.asarray(exp.sel(band=band).values, dtype=float)[mask]
    xs = np.asarray(ds[x].values, dtype=float)[mask]
    ys = np.asarray(ds[y].values, dtype=float)[mask]
    if len(np.unique(np.stack([xs, ys], axis=1), axis=0)) < xs.size:
        msg = f"several points share the same ({x}, {y}) in the slice {selection}; narrow it"
        raise InvalidOption(msg)
    n = ds.sizes["point"]
    status = np.asarray(chosen["status"].values).astype(str) if "status" in ds else np.full(n, "")
    if status.ndim > 1:  # a status per POI value: failed if any failed
        status = np.where(
            (status == "failed").any(axis=tuple(range(1, status.ndim))),
            "failed",
            status.reshape(n, -1)[:, 0],
        )
    patch = np.asarray(ds["patch"].values).astype(str) if "patch" in ds.coords else np.arange(n)
    return Plane(x, y, selection, xs, ys, patch[mask], status[mask], values, poi_value)


def resolve_cl(ds: xr.Dataset, cl: float | None) -> float:
    cl = float(ds.attrs.get("cl", 0.95) if cl is None else cl)
    if not 0.0 < cl < 1.0:
        msg = f"confidence level must be between 0 and 1, got {cl}"
        raise InvalidOption(msg)
    return cl
