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
from pyhf_dask.results import load_once, point_names, status_names

__all__ = [
    "CURVES",
    "Plane",
    "Quantity",
    "SliceValue",
    "default_axes",
    "default_slice",
    "grid_labels",
    "is_two_dimensional",
    "planes_with_grid",
    "resolve_cl",
    "select_plane",
]

log = logging.getLogger(__name__)

#: Curves of a contour set: observed, expected median and the expected band members.
CURVES = ("obs", "exp", "exp-1", "exp+1", "exp-2", "exp+2")
_BAND = {"exp": 0, "exp-1": -1, "exp+1": 1, "exp-2": -2, "exp+2": 2}
#: Statuses of points without a result (failed, not fitted yet, not in this region).
_NO_FIT = ("failed", "pending", "missing")

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
        return ~np.isin(self.status, _NO_FIT) & np.isfinite(self.values[curve])

    def describe(self) -> str:
        """The slice as text, e.g. ``"mn1 = 60"`` (empty for a 2-D grid)."""
        return _slice_text(self.selection)


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


def is_two_dimensional(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the points span a plane: at least 3 distinct points, not all on one line.

    Example:
        >>> is_two_dimensional(np.array([0.0, 1, 2]), np.array([0.0, 1, 2]))
        False
        >>> is_two_dimensional(np.array([0.0, 1, 0]), np.array([0.0, 0, 1]))
        True
    """
    points = np.unique(np.stack([np.asarray(x, float), np.asarray(y, float)], axis=1), axis=0)
    if len(points) < 3:
        return False
    span = np.ptp(points, axis=0)
    if not np.all(span > 0):
        return False
    centred = (points - points.mean(axis=0)) / span
    singular = np.linalg.svd(centred, compute_uv=False)
    return bool(singular[1] > 1e-9 * singular[0])


def planes_with_grid(ds: xr.Dataset, x: str, y: str) -> list[tuple[dict[str, float], int]]:
    """The slices of the other labels in which the ``x``-``y`` points form a 2-D grid.

    Returns ``(slice, number of points)`` pairs, most points first.
    """
    rest = [label for label in grid_labels(ds) if label not in (x, y)]
    xs = np.asarray(ds[x].values, dtype=float)
    ys = np.asarray(ds[y].values, dtype=float)
    if not rest:
        return [({}, xs.size)] if is_two_dimensional(xs, ys) else []
    table = np.stack([np.asarray(ds[label].values, dtype=float) for label in rest], axis=1)
    combos, inverse = np.unique(table, axis=0, return_inverse=True)
    found = []
    for k, combo in enumerate(combos):
        members = np.asarray(inverse).ravel() == k
        if is_two_dimensional(xs[members], ys[members]):
            found.append(
                (
                    {label: float(v) for label, v in zip(rest, combo, strict=True)},
                    int(members.sum()),
                )
            )
    return sorted(found, key=lambda item: -item[1])


def _slice_text(selection: Mapping[str, SliceValue]) -> str:
    parts = []
    for name, value in selection.items():
        if isinstance(value, tuple):
            parts.append(f"{value[0]:g} ≤ {name} ≤ {value[1]:g}")
        else:
            parts.append(f"{name} = {value:g}")
    return ", ".join(parts)


def _grid_hint(ds: xr.Dataset, x: str, y: str, *, limit: int = 6) -> str:
    """``"slices with a 2-D grid: mn1 = 60 (150 points), ..."`` for one-line messages."""
    found = planes_with_grid(ds, x, y)
    if found:
        shown = [f"{_slice_text(sel) or 'the whole grid'} ({n} points)" for sel, n in found]
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        return f"slices of {x}-{y} with a 2-D grid: {', '.join(shown[:limit])}{more}"
    labels = grid_labels(ds)
    others = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if {a, b} != {x, y}:
                planes = planes_with_grid(ds, a, b)
                if planes:
                    sel, n = planes[0]
                    where = f" at {_slice_text(sel)}" if sel else ""
                    others.append(f"-x {a} -y {b}{where} ({n} points)")
    if others:
        return f"no slice of {x}-{y} holds a 2-D grid; try {'; '.join(others[:limit])}"
    return f"no slice of {x}-{y} holds a 2-D grid"


def _check_slices(
    ds: xr.Dataset, x: str, y: str, where: Mapping[str, SliceValue], *, mix_slices: bool
) -> None:
    """Refuse a range that takes points of several slices into one plane (unless asked for)."""
    if mix_slices:
        return
    for name, value in where.items():
        if not isinstance(value, tuple):
            continue
        inside = _where_mask(ds, {name: value})
        values, counts = np.unique(
            np.asarray(ds[name].values, dtype=float)[inside], return_counts=True
        )
        if values.size > 1:
            most = values[int(np.argmax(counts))]
            listed = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
            msg = (
                f"the range {name} = {value[0]:g}:{value[1]:g} mixes {values.size} slices "
                f"({name} = {listed}) in one {x}-{y} plane, which makes zig-zag contours; give "
                f"one value (--where {name}={most:g}) or allow it (mix_slices=True, --mix-slices)"
            )
            raise InvalidOption(msg)


def _check_result(ds: xr.Dataset) -> None:
    missing = [v for v in ("CLs_obs", "CLs_exp") if v not in ds]
    if {"p0_obs", "p0_exp"} <= set(ds.data_vars):  # a discovery scan (q0): p0 per curve
        missing = []
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
    mix_slices: bool = False,
) -> Plane:
    """The points of ``ds`` in the plane of ``x`` and ``y`` at the slice ``where``.

    Args:
        ds: a result Dataset (a lazy one is computed first, once).
        x: horizontal coordinate (default: the first grid label).
        y: vertical coordinate (default: the second grid label).
        where: fixed value (``{"mn1": 60}``) or inclusive range (``{"mn1": (50, 70)}``) of
            the other labels; labels not given take the value holding most points.
        poi: the POI value of a POI scan (default: 1, or the nearest scanned value).
        quantity: ``"cls"`` (CLs per curve) or ``"upper_limit"`` (needs a POI scan).
        mix_slices: accept a range in ``where`` that holds several values of its label
            (points of several slices drawn in one plane); refused by default.

    Raises:
        InvalidOption: unknown coordinates, an empty slice, a range over several slices, a
            slice whose points do not span a plane (the message lists those that do), or
            points that coincide in the plane.
    """
    _check_result(ds)
    ds = load_once(ds)
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
    _check_slices(ds, x, y, where, mix_slices=mix_slices)
    selection: dict[str, SliceValue] = {**where, **default_slice(ds, x, y, where=where)}
    selection = {k: selection[k] for k in labels if k in selection}
    mask = _where_mask(ds, selection)
    if not mask.any():
        msg = f"no points in the slice {_slice_text(selection)}; {_grid_hint(ds, x, y)}"
        raise InvalidOption(msg)
    if quantity == "upper_limit":
        if "upper_limit_obs" not in ds:
            msg = "upper limits need a result of a POI scan (several --poi-value)"
            raise InvalidOption(msg)
        chosen, poi_value = ds, None
        obs, exp = ds["upper_limit_obs"], ds["upper_limit_exp"]
    else:
        chosen, poi_value = _pick_poi(ds, poi)
        if "CLs_obs" in chosen:
            obs, exp = chosen["CLs_obs"], chosen["CLs_exp"]
        else:  # a discovery scan (q0): p0 takes the place of CLs
            obs, exp = chosen["p0_obs"], chosen["p0_exp"]
    values = {"obs": np.asarray(obs.values, dtype=float)[mask]}
    for curve, band in _BAND.items():
        values[curve] = np.asarray(exp.sel(band=band).values, dtype=float)[mask]
    xs = np.asarray(ds[x].values, dtype=float)[mask]
    ys = np.asarray(ds[y].values, dtype=float)[mask]
    if len(np.unique(np.stack([xs, ys], axis=1), axis=0)) < xs.size:
        msg = (
            f"several points share the same ({x}, {y}) in the slice {_slice_text(selection)}; "
            "narrow it"
        )
        raise InvalidOption(msg)
    if not is_two_dimensional(xs, ys):
        at = f"the slice {_slice_text(selection)}" if selection else "the grid"
        if xs.size > 2:
            holds = f"{xs.size} points on a line"
        else:
            holds = f"only {xs.size} point" + ("s" if xs.size > 1 else "")
        msg = f"{at} holds {holds} of the {x}-{y} plane, not a 2-D grid; {_grid_hint(ds, x, y)}"
        raise InvalidOption(msg)
    n = ds.sizes["point"]
    status = status_names(chosen["status"]) if "status" in ds else np.full(n, "")
    if status.ndim > 1:  # a status per POI value: failed if any failed
        status = np.where(
            (status == "failed").any(axis=tuple(range(1, status.ndim))),
            "failed",
            status.reshape(n, -1)[:, 0],
        )
    names = point_names(ds)
    return Plane(x, y, selection, xs, ys, names[mask], status[mask], values, poi_value)


def resolve_cl(ds: xr.Dataset, cl: float | None) -> float:
    cl = float(ds.attrs.get("cl", 0.95) if cl is None else cl)
    if not 0.0 < cl < 1.0:
        msg = f"confidence level must be between 0 and 1, got {cl}"
        raise InvalidOption(msg)
    return cl
