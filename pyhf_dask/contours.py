"""Exclusion contours from a result Dataset: where CLs crosses ``1 - cl`` in a 2-D plane.

Method (as HistFitter's harvest-to-contour step, with library code only):

1. Select a plane: two grid labels as axes and a fixed value (or range) of the others
   (:func:`select_plane`). Failed points (``status == "failed"`` or non-finite CLs) are left
   out, not treated as numbers.
2. Transform CLs into a well-behaved variable: the significance
   ``Z = Φ⁻¹(1 - CLs) = scipy.stats.norm.isf(CLs)`` (default) or ``log(CLs)``; both are close to
   linear in the masses near the limit, unlike CLs itself.
3. Interpolate linearly on the Delaunay triangulation of the points
   (:class:`scipy.interpolate.LinearNDInterpolator` with ``rescale=True``, so axes in GeV with
   very different ranges are first scaled to the unit square) onto a regular mesh; the mesh is
   NaN outside the convex hull of the points, so nothing is extrapolated. Regular (rectangular)
   grids are the special case where every cell is split into two triangles.
4. Trace the level ``Z = Φ⁻¹(1 - cl)`` (or ``log(1 - cl)``) with :mod:`contourpy` (marching
   squares), which stops the lines at the hull.

Example:
    >>> import numpy as np, xarray as xr
    >>> m1, m2 = np.meshgrid(np.arange(0.0, 11.0), np.arange(0.0, 11.0))
    >>> cls = 0.05 * np.exp(-(np.hypot(m1.ravel(), m2.ravel()) - 5.0))
    >>> exp = np.repeat(cls[:, None], 5, axis=1)
    >>> ds = xr.Dataset(
    ...     {"CLs_obs": ("point", cls), "CLs_exp": (("point", "band"), exp),
    ...      "status": ("point", np.full(cls.size, "converged"))},
    ...     coords={"m1": ("point", m1.ravel()), "m2": ("point", m2.ravel()),
    ...             "band": [-2, -1, 0, 1, 2]}, attrs={"labels": "m1,m2", "cl": 0.95})
    >>> found = find_contours(ds, curves=("obs",))
    >>> radius = np.hypot(*found.get("obs").lines[0].T)
    >>> bool(np.all(np.abs(radius - 5.0) < 0.2))
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.exceptions import InvalidOption, NoUsableResults
from pyhf_dask.planes import (
    CURVES,
    Plane,
    Quantity,
    SliceValue,
    default_axes,
    default_slice,
    grid_labels,
    resolve_cl,
    select_plane,
)

__all__ = [
    "CURVES",
    "Contour",
    "Contours",
    "Mesh",
    "Plane",
    "SliceValue",
    "default_axes",
    "default_slice",
    "find_contours",
    "grid_labels",
    "interpolate",
    "level_of",
    "resolve_cl",
    "mesh_lines",
    "plane_mesh",
    "select_plane",
    "trace",
    "transform",
]

log = logging.getLogger(__name__)

_TINY = 1e-15

Transform = Literal["significance", "log"]


class Mesh(NamedTuple):
    """A transformed variable interpolated onto a regular mesh (NaN outside the hull)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray  # shape (len(y), len(x))
    level: float


class Contour(NamedTuple):
    """The lines where one curve crosses its level, in the units of the grid coordinates."""

    curve: str
    level: float
    x_name: str
    y_name: str
    lines: list[np.ndarray]  # each of shape (n, 2): columns x, y


class Contours(NamedTuple):
    """All contours of one plane, with what is needed to reproduce them."""

    x_name: str
    y_name: str
    selection: dict[str, SliceValue]
    cl: float
    quantity: str
    transform: str
    poi: float | None
    n_points: int
    n_failed: int
    contours: tuple[Contour, ...]
    #: Unit of each coordinate (axes and slice), ``None`` where unknown: a coordinate's
    #: ``units`` attribute, else GeV for mass-like names (``msb``, ``mn1``, ``m12``).
    units: Mapping[str, str | None] | None = None

    def get(self, curve: str) -> Contour:
        """The contour of ``curve`` (``"obs"``, ``"exp"``, ``"exp+1"``, ...)."""
        for contour in self.contours:
            if contour.curve == curve:
                return contour
        msg = f"no contour {curve!r} (have: {', '.join(c.curve for c in self.contours)})"
        raise KeyError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists and numbers) for JSON."""
        return {
            "x": self.x_name,
            "y": self.y_name,
            "slice": {k: list(v) if isinstance(v, tuple) else v for k, v in self.selection.items()},
            "cl": self.cl,
            "quantity": self.quantity,
            "transform": self.transform,
            "method": "scipy LinearNDInterpolator (Delaunay, rescaled) + contourpy",
            "poi": self.poi,
            "n_points": self.n_points,
            "n_failed": self.n_failed,
            "units": dict(self.units) if self.units is not None else _units(self),
            "contours": [
                {
                    "curve": c.curve,
                    "level": c.level,
                    "lines": [np.round(line, 6).tolist() for line in c.lines],
                }
                for c in self.contours
            ],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)


def transform(values: np.ndarray, how: Transform = "significance") -> np.ndarray:
    """CLs (or a limit) into the variable that is interpolated.

    ``"significance"``: ``Z = norm.isf(CLs)``, with CLs clipped to ``[1e-15, 1 - 1e-15]`` so
    that CLs of exactly 0 or 1 stay finite. ``"log"``: ``log(values)``.

    Example:
        >>> round(float(transform(np.array([0.05]))[0]), 4)
        1.6449
    """
    values = np.asarray(values, dtype=float)
    if how == "significance":
        from scipy.special import ndtri  # scipy is imported where needed: a scan needs none

        clipped = np.clip(values, _TINY, 1.0 - _TINY)
        return np.asarray(-ndtri(clipped))  # norm.isf(p) = -ndtri(p)
    if how == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.where(values > 0, values, np.nan))
    msg = f"unknown transform {how!r} (choose from: significance, log)"
    raise InvalidOption(msg)


def interpolate(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    level: float,
    resolution: int = 200,
    bounds: tuple[float, float, float, float] | None = None,
) -> Mesh:
    """Linear interpolation of ``z`` on the Delaunay triangulation of ``(x, y)`` onto a mesh.

    Uses :class:`scipy.interpolate.LinearNDInterpolator` with ``rescale=True``; the mesh
    spans ``bounds`` (``xmin, xmax, ymin, ymax``; default: the points' bounding box) with
    ``resolution`` nodes per axis and is NaN outside the convex hull of the points.
    """
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import QhullError

    keep = np.isfinite(z)
    x, y, z = x[keep], y[keep], z[keep]
    if z.size < 3:
        msg = f"a contour needs at least 3 usable points in the plane, found {z.size}"
        raise InvalidOption(msg)
    xmin, xmax, ymin, ymax = bounds or (x.min(), x.max(), y.min(), y.max())
    mesh_x = np.linspace(xmin, xmax, resolution)
    mesh_y = np.linspace(ymin, ymax, resolution)
    try:
        interp = LinearNDInterpolator(np.stack([x, y], axis=1), z, rescale=True)
    except (QhullError, ValueError) as exc:  # Qhull's own text is pages long: not shown
        msg = f"cannot triangulate the {z.size} usable points of the plane: they lie on one line"
        raise InvalidOption(msg) from exc
    grid_x, grid_y = np.meshgrid(mesh_x, mesh_y)
    return Mesh(mesh_x, mesh_y, np.asarray(interp(grid_x, grid_y)), float(level))


def mesh_lines(mesh: Mesh) -> list[np.ndarray]:
    """The lines of ``mesh.z == mesh.level``, traced by :func:`contourpy.contour_generator`."""
    contourpy = require("contourpy", "plot")
    generator = contourpy.contour_generator(
        mesh.x, mesh.y, np.ma.masked_invalid(mesh.z), line_type=contourpy.LineType.Separate
    )
    return [np.asarray(line, dtype=float) for line in generator.lines(mesh.level) if len(line) > 1]


def level_of(cl: float, quantity: Quantity, how: Transform) -> tuple[float, float]:
    """``(level, transformed level)``: CLs = 1 - cl, or an upper limit of 1."""
    level = round(1.0 - cl, 12) if quantity == "cls" else 1.0
    return level, float(transform(np.array([level]), how)[0])


def _check_usable(plane: Plane, curve: str, usable: np.ndarray) -> None:
    """One-line errors when failed points leave too few to draw a line through."""
    n, n_usable = plane.x.size, int(usable.sum())
    if n_usable >= 3:
        return
    at = f" at {plane.describe()}" if plane.selection else ""
    where = f"the {n} points of the {plane.x_name}-{plane.y_name} plane{at}"
    n_failed = int((plane.status == "failed").sum())
    hint = "see the 'message' variable of the result for why"
    if n_usable == 0 and n_failed == n:
        msg = f"all {where} failed: nothing to draw ({hint})"
    elif n_usable == 0:
        msg = f"none of {where} has a finite {curve} value ({n_failed} failed; {hint})"
    else:
        msg = (
            f"a contour needs at least 3 usable points, but only {n_usable} of {where} are "
            f"usable ({n_failed} failed; {hint})"
        )
    raise NoUsableResults(msg)


def plane_mesh(
    plane: Plane,
    curve: str,
    *,
    cl: float,
    quantity: Quantity = "cls",
    how: Transform = "significance",
    resolution: int = 200,
) -> Mesh:
    """The transformed ``curve`` of ``plane`` on a mesh over the whole plane's bounding box."""
    if quantity == "upper_limit" and how == "significance":
        msg = "upper-limit contours use the log transform"
        raise InvalidOption(msg)
    usable = plane.usable(curve)
    _check_usable(plane, curve, usable)
    bounds = (plane.x.min(), plane.x.max(), plane.y.min(), plane.y.max())
    _, target = level_of(cl, quantity, how)
    z = transform(plane.values[curve][usable], how)
    return interpolate(
        plane.x[usable], plane.y[usable], z, level=target, resolution=resolution, bounds=bounds
    )


def find_contours(
    ds: xr.Dataset,
    *,
    x: str | None = None,
    y: str | None = None,
    where: Mapping[str, SliceValue] | None = None,
    cl: float | None = None,
    curves: Sequence[str] = CURVES,
    poi: float | None = None,
    quantity: Quantity = "cls",
    how: Transform | None = None,
    resolution: int = 200,
    mix_slices: bool = False,
) -> Contours:
    """Exclusion contours of a computed result in one plane.

    Args:
        ds: a computed result Dataset (``pyhf_dask.scan(...).compute()`` or a read file).
        x, y, where, poi, mix_slices: the plane, as in :func:`select_plane`.
        cl: confidence level (default: the result's ``cl`` attribute, else 0.95); the contour
            is CLs = 1 - cl.
        curves: which of :data:`CURVES` to trace.
        quantity: ``"cls"``, or ``"upper_limit"`` for the line where the upper limit on the
            POI is 1 (POI scans only).
        how: ``"significance"`` (default for CLs) or ``"log"`` (default for limits).
        resolution: mesh nodes per axis.

    Returns:
        :class:`Contours`, one :class:`Contour` per curve (with no lines where it does not
        cross the level inside the hull of the points).

    Example:
        >>> found = find_contours(xr.open_dataset("regionA.nc"))  # doctest: +SKIP
        >>> found.x_name, found.y_name, found.selection           # doctest: +SKIP
        ('msb', 'mn2', {'mn1': 60.0})
    """
    cl = resolve_cl(ds, cl)
    plane = select_plane(
        ds, x=x, y=y, where=where, poi=poi, quantity=quantity, mix_slices=mix_slices
    )
    found = trace(plane, curves=curves, cl=cl, quantity=quantity, how=how, resolution=resolution)
    return found._replace(units=_units(found, ds))


def _units(found: Contours, ds: xr.Dataset | None = None) -> dict[str, str | None]:
    """The unit of the axes and the slice coordinates of ``found`` (see ``Contours.units``)."""
    from pyhf_dask.figures import unit_of

    names = dict.fromkeys([found.x_name, found.y_name, *found.selection])
    return {name: unit_of(name, ds) for name in names}


def trace(
    plane: Plane,
    *,
    curves: Sequence[str] = CURVES,
    cl: float = 0.95,
    quantity: Quantity = "cls",
    how: Transform | None = None,
    resolution: int = 200,
) -> Contours:
    """The contours of the curves of an already selected plane (see :func:`find_contours`)."""
    unknown = [c for c in curves if c not in CURVES]
    if unknown:
        msg = f"unknown curves {unknown} (choose from: {', '.join(CURVES)})"
        raise InvalidOption(msg)
    how = how or ("significance" if quantity == "cls" else "log")
    level, _ = level_of(cl, quantity, how)
    found = []
    for curve in curves:
        mesh = plane_mesh(plane, curve, cl=cl, quantity=quantity, how=how, resolution=resolution)
        found.append(Contour(curve, level, plane.x_name, plane.y_name, mesh_lines(mesh)))
    n_failed = int((~plane.usable("obs")).sum())
    log.debug(
        "contours in %s-%s at %s: %d points, %d failed",
        plane.x_name,
        plane.y_name,
        plane.describe(),
        plane.x.size,
        n_failed,
    )
    return Contours(
        plane.x_name,
        plane.y_name,
        plane.selection,
        cl,
        quantity,
        how,
        plane.poi,
        int(plane.x.size),
        n_failed,
        tuple(found),
    )
