"""Several signal regions in one Dataset, and the best expected region of every mass point.

Analyses scan several signal regions over the same mass points and, per point, quote the
region with the best expected sensitivity. Results are indexed by point name (the patch
name), so :func:`combine_regions` (or plain ``xr.concat``/``xr.merge``) lines the regions up
by mass point; :func:`best_expected` then picks, per point, the region with the lowest
median expected CLs (the lowest expected upper limit for a POI scan) and reports its
observed CLs. Both stay lazy on lazy inputs: writing the result runs every fit once.

Example:
    >>> import pyhf_dask
    >>> from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
    >>> def region(bkg, scales):
    ...     ws = simple_workspace([12.0, 11.0], [bkg, 52.0], [3.0, 7.0], [bkg + 1, 48.0])
    ...     grid = SignalGrid.from_function(ws, scaled_signal, scale=scales)
    ...     return pyhf_dask.scan(grid, kernel="pyhf")
    >>> both = combine_regions({"A": region(50.0, [1.0, 2.0]), "B": region(30.0, [2.0, 3.0])})
    >>> both.sizes["region"], both.sizes["point"]
    (2, 3)
    >>> best = best_expected(both).compute(scheduler="synchronous")
    >>> best.best_region.values.tolist()
    ['A', 'B', 'B']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.results import STATUS_FLAGS, TEXT, as_text, natural_order

__all__ = ["best_expected", "combine_regions", "uniform_chunks"]

log = logging.getLogger(__name__)

#: Provenance attributes that may differ between regions: kept per region as coordinates.
_PER_REGION = ("source", "workspace_digest", "patches_digest", "scan_token", "created")


def _labels(ds: xr.Dataset) -> list[str]:
    return [label for label in str(ds.attrs.get("labels", "")).split(",") if label]


def _fill_values(ds: xr.Dataset) -> dict[str, Any]:
    """What a point that a region does not have gets: NaN, ``"missing"``, ``""``."""
    fill: dict[Any, Any] = {}
    for name, var in ds.data_vars.items():
        if name == "status":
            fill[name] = np.int8(STATUS_FLAGS.index("missing"))
        elif var.dtype.kind in "OTSU":
            fill[name] = ""
        else:
            fill[name] = np.nan
    return fill


def _point_chunk(datasets: list[xr.Dataset]) -> int | None:
    """The largest chunk along ``point`` of the lazy inputs (``None``: none is lazy)."""
    sizes = [
        max(var.chunksizes["point"])
        for ds in datasets
        for var in ds.data_vars.values()
        if var.chunks is not None and "point" in var.dims
    ]
    return max(sizes) if sizes else None


def _text(var: xr.DataArray) -> xr.DataArray:
    """``var`` as variable-length strings (:data:`TEXT`), lazily where it is lazy.

    ``xr.align``, ``xr.concat`` and ``apply_ufunc`` drop the dtype's ``element_type`` mark,
    and a lazy ``object`` variable without it is computed by ``to_zarr``/``to_netcdf`` to
    choose its type: every fit would run once more.
    """
    if var.chunks is None:
        return var.copy(data=as_text(var.values))
    return var.copy(data=var.data.map_blocks(as_text, dtype=TEXT))


def uniform_chunks(ds: xr.Dataset, size: int | None) -> xr.Dataset:
    """Every lazy variable of ``ds`` in chunks of ``size`` points and whole along its other
    dimensions; text variables marked as :data:`TEXT`.

    Zarr needs chunks of one size (the last may be smaller); aligning regions of other
    points or chunk sizes gives uneven ones. Rechunking adds no fit task.

    Example:
        >>> ds = xr.Dataset({"a": ("point", np.arange(5.0))}).chunk({"point": (1, 3, 1)})
        >>> uniform_chunks(ds, 2).a.chunks
        ((2, 2, 1),)
    """
    out = ds.copy()
    for name, var in ds.data_vars.items():
        new = var
        if new.chunks is not None and size is not None and "point" in new.dims:
            new = new.chunk({dim: size if dim == "point" else -1 for dim in new.dims})
        if new.dtype.kind == "O" and name in ("message", "best_region"):
            new = _text(new)
        out[name] = new
    return out


def _union_labels(aligned: list[xr.Dataset], names: list[str]) -> dict[str, xr.DataArray]:
    """Each grid label over the union of points; regions must agree where they overlap."""
    out: dict[str, xr.DataArray] = {}
    for label in dict.fromkeys(label for ds in aligned for label in _labels(ds)):
        merged: xr.DataArray | None = None
        for ds, name in zip(aligned, names, strict=True):
            if label not in ds.coords:
                continue
            value = ds[label].reset_coords(drop=True)
            if merged is not None:
                both = np.isfinite(merged.values) & np.isfinite(value.values)
                if not np.array_equal(merged.values[both], value.values[both]):
                    msg = f"region {name!r} gives other {label} values to points of the same name"
                    raise InvalidOption(msg)
                value = merged.combine_first(value)
            merged = value
        if merged is not None:
            out[label] = merged
    return out


def combine_regions(regions: Mapping[str, xr.Dataset], *, dim: str = "region") -> xr.Dataset:
    """The results of several regions along a new dimension, aligned by point name.

    A point that a region does not have gets NaN results, ``status`` ``"missing"`` and an
    empty message in that region. Attributes that all regions share are kept; the
    provenance that differs (source, digests, token, creation time) becomes coordinates
    along ``dim``. Lazy inputs stay lazy.

    Args:
        regions: region name -> result Dataset of :func:`pyhf_dask.scan` (lazy or not).
        dim: name of the new dimension.

    Returns:
        One Dataset with dimensions ``dim`` and ``point`` (the union of the points).

    Raises:
        InvalidOption: no regions, or regions that disagree on a point's grid labels.

    Example:
        >>> a = xr.Dataset({"CLs_obs": ("point", [0.1, 0.2])}, coords={"point": ["p1", "p2"]})
        >>> b = xr.Dataset({"CLs_obs": ("point", [0.3])}, coords={"point": ["p2"]})
        >>> combine_regions({"A": a, "B": b}).CLs_obs.values.tolist()
        [[0.1, 0.2], [nan, 0.3]]
    """
    names = [str(name) for name in regions]
    if not names:
        msg = "no regions to combine"
        raise InvalidOption(msg)
    datasets = list(regions.values())
    fill = {}
    for ds in datasets:
        fill.update(_fill_values(ds))
    aligned = list(xr.align(*datasets, join="outer", fill_value=fill))
    union = aligned[0].indexes.get("point")
    if union is not None:  # pandas sorts the union as text: numbers as numbers instead
        order = natural_order(union.astype(str).tolist())
        aligned = [ds.isel(point=order) for ds in aligned]
    labels = _union_labels(aligned, names)
    aligned = [ds.assign_coords(labels) for ds in aligned]
    combined = xr.concat(
        aligned,
        dim=dim,
        data_vars="all",
        coords="minimal",
        compat="override",
        join="exact",
        combine_attrs="drop_conflicts",
    )
    # object strings, as the point names: Zarr v3 stores fixed-width ones with a warning
    combined = combined.assign_coords({dim: np.array(names, dtype=object)})
    for key in _PER_REGION:
        values = [ds.attrs.get(key) for ds in datasets]
        if all(isinstance(v, str) for v in values) and len(set(values)) > 1:
            combined = combined.assign_coords({key: (dim, np.array(values, dtype=object))})
    if "status" in combined:
        combined["status"] = combined["status"].astype(np.int8)
    return uniform_chunks(combined, _point_chunk(datasets))


def _score(combined: xr.Dataset) -> xr.DataArray:
    """Lower is better: the median expected upper limit of a POI scan, else the median
    expected CLs; a region without a result never wins."""
    if "upper_limit_exp" in combined:
        score = combined["upper_limit_exp"].sel(band=0, drop=True)
    else:
        score = combined["CLs_exp"].sel(band=0, drop=True)
        if "poi" in score.dims:
            msg = "the best region of a POI scan needs its upper limits (several POI values)"
            raise InvalidOption(msg)
    return score.fillna(np.inf)


def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[..., index]`` along the last axis, ``index`` broadcast over the others."""
    index = np.broadcast_to(np.asarray(index)[..., None], (*values.shape[:-1], 1))
    return np.take_along_axis(values, index, axis=-1)[..., 0]


def _argmin(score: np.ndarray) -> np.ndarray:
    return np.argmin(score, axis=-1)


def best_expected(combined: xr.Dataset, *, dim: str = "region") -> xr.Dataset:
    """Per point, the results of the region with the best expected sensitivity.

    The best region has the lowest median expected CLs (``CLs_exp`` at ``band = 0``), or
    for a POI scan the lowest median expected upper limit; the point's observed CLs (and
    every other variable) is that region's. Points that no region fitted keep the first
    region's (failed or missing) values. Lazy inputs stay lazy.

    Args:
        combined: a Dataset of :func:`combine_regions` (or ``xr.concat`` of results along
            ``dim``).
        dim: the region dimension.

    Returns:
        A result Dataset over ``point``, with ``best_region`` (the chosen region's name).

    Example:
        >>> both = xr.Dataset(
        ...     {"CLs_obs": (("region", "point"), [[0.1, 0.2], [0.3, 0.4]]),
        ...      "CLs_exp": (("region", "point", "band"), np.array([[0.5, 0.2], [0.3, 0.6]])
        ...                  [..., None].repeat(5, axis=-1))},
        ...     coords={"region": ["A", "B"], "point": ["p1", "p2"], "band": [-2, -1, 0, 1, 2]})
        >>> best = best_expected(both)
        >>> best.best_region.values.tolist(), best.CLs_obs.values.tolist()
        (['B', 'A'], [0.3, 0.2])
    """
    if dim not in combined.dims:
        msg = f"no {dim!r} dimension: combine the regions first (combine_regions)"
        raise InvalidOption(msg)
    gufunc = {"allow_rechunk": True}
    index = xr.apply_ufunc(
        _argmin,
        _score(combined),
        input_core_dims=[[dim]],
        dask="parallelized",
        output_dtypes=[np.intp],
        dask_gufunc_kwargs=gufunc,
    )
    out: dict[str, xr.DataArray] = {}
    for name, var in combined.data_vars.items():
        if dim not in var.dims:
            out[str(name)] = var
            continue
        out[str(name)] = xr.apply_ufunc(
            _pick,
            var,
            index,
            input_core_dims=[[dim], []],
            dask="parallelized",
            output_dtypes=[var.dtype],
            dask_gufunc_kwargs=gufunc,
            keep_attrs=True,
        )
    regions = np.asarray(combined[dim].values, dtype=object)
    out["best_region"] = xr.apply_ufunc(
        lambda i: np.asarray(regions[i], dtype=TEXT),
        index,
        dask="parallelized",
        output_dtypes=[TEXT],
    )
    out["best_region"].attrs["long_name"] = "region with the best expected sensitivity"
    coords = {k: v for k, v in combined.coords.items() if dim not in v.dims}
    best = xr.Dataset(out, coords=coords, attrs=combined.attrs)
    best.attrs["selection"] = "per point, the region with the best expected sensitivity"
    return uniform_chunks(best, _point_chunk([combined]))
