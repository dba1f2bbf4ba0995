"""Result assembly: the xarray Dataset of a scan, upper limits, unstacking, netCDF output.

Layout of a result Dataset:

- dimension ``point`` indexed by the point's name (the patch name), so that ``xr.concat`` or
  ``xr.merge`` of several regions aligns by mass point, with one coordinate per grid label
  (e.g. ``msb``, ``mn2``, ``mn1``);
- dimension ``band`` = ``[-2, -1, 0, 1, 2]`` for the expected band;
- ``poi``: a scalar coordinate for one POI value, a dimension for several;
- variables ``CLs_obs``, ``CLs_exp``, ``status``, ``message``, ``fit_time`` and, with a
  ``poi`` dimension, ``upper_limit_obs`` and ``upper_limit_exp``;
- ``status`` is a CF flag variable (``int8`` with ``flag_values`` and ``flag_meanings``:
  :data:`STATUS_FLAGS`; :func:`status_names` turns it into names), ``message`` a
  variable-length string array (:data:`TEXT`), so a lazy ``to_zarr``/``to_netcdf`` never has
  to load a variable to choose its type (every fit runs once), and both round trips are
  ``identical``;
- flat provenance attributes (strings and numbers only, so netCDF can store them).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from pyhf_dask import accessor as _accessor  # noqa: F401 (datasets made here have ds.pyhf_dask)
from pyhf_dask.kernels import BAND, STATUS

__all__ = [
    "STATUS_FLAGS",
    "TEXT",
    "ScanSummary",
    "as_str",
    "as_text",
    "encode_status",
    "is_lazy",
    "load_once",
    "natural_key",
    "natural_order",
    "point_names",
    "status_attrs",
    "status_names",
    "summarize",
    "to_netcdf",
    "unstack",
    "upper_limits",
]

log = logging.getLogger(__name__)

#: Meanings of the ``status`` flag values 0, 1, ...: the kernels' statuses, then
#: ``pending`` (a store's point not fitted yet) and ``missing`` (a combined Dataset's point
#: that this region does not have).
STATUS_FLAGS = (*STATUS, "pending", "missing")
#: Variable-length strings as xarray marks them (``object`` with ``element_type=str``): known
#: to be strings before computing (xarray loads a plain ``object`` array to choose a type),
#: written lazily as netCDF-4 ``string`` and as Zarr v3's stable ``string`` type (fixed-width
#: ``<U`` strings raise Zarr's ``UnstableSpecificationWarning``).
TEXT = np.dtype("O", metadata={"element_type": str})


def upper_limits(
    cls_obs: np.ndarray,
    cls_exp: np.ndarray,
    poi_values: Sequence[float],
    *,
    cl: float = 0.95,
    return_status: bool = False,
) -> Any:
    """Upper limits from a POI scan, as ``pyhf.infer.intervals.upper_limits`` derives them.

    pyhf interpolates linearly in the reversed scan where CLs crosses ``1 - cl``
    (``np.interp(alpha, CLs[::-1], poi[::-1])``); this does the same per point, except
    where the scan does not cross ``1 - cl``: np.interp would return the grid's end
    (``CLs > 1 - cl`` at every value: the limit lies above the grid; ``CLs < 1 - cl`` at
    every value: below it). Such a limit is NaN, and ``limit_status`` says which
    (:data:`pyhf_dask.kernels.LIMIT_STATUS`: 1 ``above_range``, 2 ``below_range``).

    Args:
        cls_obs: shape ``(n_points, n_poi)``.
        cls_exp: shape ``(n_points, n_poi, 5)``.
        poi_values: the scanned POI values, increasing.
        cl: confidence level.
        return_status: also return the ``(n_points,)`` ``int8`` ``limit_status``: the
            worst of the point's six curves (0 found, 1 above, 2 below, 3 fewer than two
            certified POI values).

    POI values whose CLs are not all finite (not certified) are left out of a point's
    scan, so that one failed value does not cost the point its limit; a point keeps NaN
    limits when fewer than two values are left.

    Returns:
        ``(obs, exp)`` of shapes ``(n_points,)`` and ``(n_points, 5)`` (and the status).

    Example:
        >>> obs, exp = upper_limits(np.array([[0.5, 0.01]]), np.full((1, 2, 5), 0.5), [0, 1])
        >>> round(float(obs[0]), 4), exp[0].tolist()  # expected CLs 0.5 everywhere: above
        (0.9184, [nan, nan, nan, nan, nan])
        >>> cls = np.array([[0.5, np.nan, 0.01]])
        >>> round(float(upper_limits(cls, np.full((1, 3, 5), 0.5), [0, 0.5, 1])[0][0]), 4)
        0.9184
    """
    alpha = 1.0 - cl
    scan = np.asarray(poi_values, dtype=np.float64)
    n_points = cls_obs.shape[0]
    obs = np.full(n_points, np.nan)
    exp = np.full((n_points, len(BAND)), np.nan)
    status = np.full(n_points, 3, dtype=np.int8)
    for i in range(n_points):
        curves = np.concatenate([cls_obs[i][None, :], cls_exp[i].T], axis=0)
        good = np.isfinite(curves).all(axis=0)
        if good.sum() < 2:
            continue
        curves, values = curves[:, good], scan[good]
        limits = np.array([np.interp(alpha, curve[::-1], values[::-1]) for curve in curves])
        above = (curves > alpha).all(axis=1)
        below = (curves < alpha).all(axis=1)
        limits[above | below] = np.nan
        obs[i] = limits[0]
        exp[i] = limits[1:]
        status[i] = 1 if above.any() else 2 if below.any() else 0
    if return_status:
        return obs, exp, status
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


def as_text(values: Any) -> np.ndarray:
    """A :data:`TEXT` (variable-length string) array from strings of any storage.

    Example:
        >>> as_text(np.array(["a", "bc"])).dtype.metadata["element_type"]
        <class 'str'>
    """
    return np.asarray(as_str(values), dtype=TEXT)


def status_attrs() -> dict[str, Any]:
    """CF flag attributes of the ``status`` variable.

    Example:
        >>> status_attrs()["flag_meanings"]
        'converged partial failed fallback pending missing'
    """
    return {
        "long_name": "fit status",
        "flag_values": np.arange(len(STATUS_FLAGS), dtype=np.int8),
        "flag_meanings": " ".join(STATUS_FLAGS),
    }


def encode_status(names: Any) -> np.ndarray:
    """Status names (``"converged"``, ...) as their ``int8`` flag values.

    Example:
        >>> encode_status(["failed", "converged"]).tolist()
        [2, 0]
    """
    text = as_str(names)
    codes = np.full(text.shape, -1, dtype=np.int8)
    for value, meaning in enumerate(STATUS_FLAGS):
        codes[text == meaning] = value
    if (codes < 0).any():
        unknown = sorted(set(text[codes < 0].tolist()))
        msg = f"unknown status {unknown} (known: {', '.join(STATUS_FLAGS)})"
        raise ValueError(msg)
    return codes


def status_names(status: xr.DataArray | np.ndarray) -> np.ndarray:
    """Names of a ``status`` variable: flag values decoded, strings (older files) kept.

    Args:
        status: the ``status`` variable (its ``flag_meanings`` are used when present) or
            its values.

    Example:
        >>> status_names(np.array([0, 2], dtype=np.int8)).tolist()
        ['converged', 'failed']
    """
    values = np.asarray(status.values if isinstance(status, xr.DataArray) else status)
    if values.dtype.kind not in "iu":
        return as_str(values)
    attrs = status.attrs if isinstance(status, xr.DataArray) else {}
    meanings = str(attrs.get("flag_meanings", " ".join(STATUS_FLAGS))).split()
    flags = np.asarray(attrs.get("flag_values", np.arange(len(meanings))))
    lookup = dict(zip(flags.tolist(), meanings, strict=True))
    names = [lookup.get(int(v), f"flag {int(v)}") for v in values.ravel()]
    return np.array(names, dtype=str).reshape(values.shape)


def natural_key(name: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a point name with its numbers compared as numbers.

    The one order of points everywhere (the index of a scan of patch files, combined
    regions, the command line's table): ``sbottom_300_...`` before ``sbottom_1000_...``;
    ``100p5`` is 100.5, as in HEPData's names.

    Example:
        >>> sorted(["sbottom_1000_5", "sbottom_300_5", "a_10p5", "a_9"], key=natural_key)
        ['a_9', 'a_10p5', 'sbottom_300_5', 'sbottom_1000_5']
    """
    return tuple(
        (0, float(part.replace("p", ".")), "") if part[:1].isdigit() else (1, 0.0, part)
        for part in re.findall(r"\d+(?:[.p]\d+)?|\D+", str(name))
    )


def natural_order(names: Sequence[str]) -> list[int]:
    """The indices that put ``names`` in :func:`natural_key` order (ties: as text).

    Example:
        >>> natural_order(["p_10", "p_9", "p_100"])
        [1, 0, 2]
    """
    return sorted(range(len(names)), key=lambda i: (natural_key(names[i]), str(names[i])))


def point_names(ds: xr.Dataset) -> np.ndarray:
    """The points' names: the ``point`` index (a ``patch`` coordinate in older files).

    Example:
        >>> point_names(xr.Dataset(coords={"point": ["a_1", "a_2"]})).tolist()
        ['a_1', 'a_2']
    """
    if "patch" in ds.coords:
        return as_str(ds["patch"].values)
    return as_str(ds["point"].values)


def is_lazy(ds: xr.Dataset) -> bool:
    """Whether any variable of ``ds`` is dask-backed (computing it runs fits).

    Example:
        >>> is_lazy(xr.Dataset({"a": ("x", [1.0])}))
        False
    """
    return any(var.chunks is not None for var in ds.variables.values())


def load_once(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` computed in one pass when it is lazy (every fit runs once), else ``ds``.

    Reading the variables of a lazy result one by one would run its fits once per variable.

    Example:
        >>> load_once(xr.Dataset({"a": ("x", [1.0])})).a.values.tolist()
        [1.0]
    """
    if not is_lazy(ds):
        return ds
    n_tasks = len(ds.__dask_graph__() or {})
    log.info("computing the lazy result once (%d tasks): pass a computed one to reuse it", n_tasks)
    return ds.compute()


def summarize(ds: xr.Dataset) -> ScanSummary:
    """Count converged, fallback and failed points of a computed result."""
    status = status_names(ds["status"])
    return ScanSummary(
        n_points=int(status.size),
        n_converged=int((status == "converged").sum()),
        n_fallback=int((status == "fallback").sum()),
        n_failed=int((status == "failed").sum()),
        n_partial=int((status == "partial").sum()),
    )


def to_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write a result, computed or lazy, to netCDF-4 (``xarray.open_dataset`` reads it).

    A lazy result is computed once, while it is written (every fit runs once).

    Example:
        >>> to_netcdf(ds, "regionA.nc")  # doctest: +SKIP
    """
    out = ds.copy()
    for name in ("message", "patch"):  # older results: object or fixed-width strings
        if name in out.variables and out[name].dtype != TEXT and out[name].chunks is None:
            out[name] = out[name].copy(data=as_text(out[name].values))
    out.to_netcdf(path, engine="h5netcdf")
