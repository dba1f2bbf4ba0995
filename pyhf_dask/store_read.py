"""Reading result stores: a store (complete or not) as a Dataset, and what is a store.

Example:
    >>> is_result_store("/")
    False
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.results import STATUS_FLAGS

__all__ = ["PENDING", "STORE_FORMAT", "escape_text", "is_result_store", "open_store"]

log = logging.getLogger(__name__)

PENDING = "pending"
#: The store layout written now (the ``store_format`` attribute): the status fill value
#: is ``pending`` and every chunk is written, so a missing chunk file is damage. Stores
#: without the attribute (format 1) are read as before, with only the CLs check.
STORE_FORMAT = 2


def open_store(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a result store (complete or not) as an in-memory Dataset.

    A chunk's ``status`` is written last: points still ``pending`` show no numbers and
    no message, even where a scan stopped between writing a chunk's values and its status.

    A store is checked before it is trusted: the points of a chunk file that is missing
    (deleted, lost with a disk) in any variable of a store of :data:`STORE_FORMAT`, and
    ``converged`` points without an observed CLs (in any store), read as ``pending``, with
    a warning, so that ``--resume`` fits them again.
    """
    require("zarr", "zarr")
    with xr.open_zarr(os.fspath(path), consolidated=False) as ds:
        loaded = ds.load(scheduler="synchronous")  # a local read, never on remote workers
    if "status" not in loaded or loaded.status.dtype.kind in "OSUT":
        return loaded  # a store of an older version (text status): read as it is
    damaged = _damaged_points(Path(path), loaded)
    if damaged.any():
        log.warning(
            "%s: %d point(s) are damaged (a chunk file is missing, or converged without "
            "CLs) and read as pending; --resume fits them again",
            path,
            int(damaged.sum()),
        )
        code = STATUS_FLAGS.index(PENDING)
        loaded["status"] = loaded.status.where(~xr.DataArray(damaged, dims="point"), code).astype(
            loaded.status.dtype
        )
    pending = loaded.status == STATUS_FLAGS.index(PENDING)
    if not bool(pending.any()):
        return loaded
    for name, var in loaded.data_vars.items():
        if name == "status" or "point" not in var.dims:
            continue
        if var.dtype.kind == "f":
            loaded[name] = var.where(~pending)
        elif name == "message":
            loaded[name] = var.where(~pending, "")
    return loaded


def _damaged_points(path: Path, loaded: xr.Dataset) -> np.ndarray:
    """Points whose chunk file of some variable is missing (stores of
    :data:`STORE_FORMAT`: every chunk is written), or ``converged`` without ``CLs_obs``."""
    n_points = loaded.sizes.get("point", 0)
    damaged = np.zeros(n_points, dtype=bool)
    if "CLs_obs" in loaded and loaded.CLs_obs.dims[:1] == ("point",):
        converged = np.asarray(loaded.status.values == STATUS_FLAGS.index("converged"))
        values = np.asarray(loaded.CLs_obs.values, dtype=float).reshape(n_points, -1)
        damaged |= converged & np.isnan(values).all(axis=1)
    if int(loaded.attrs.get("store_format", 1)) < STORE_FORMAT or not n_points:
        return damaged
    zarr = require("zarr", "zarr")
    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except Exception:  # not a local group: nothing to check
        return damaged
    for name, var in loaded.data_vars.items():
        if var.dims[:1] != ("point",) or name not in group:
            continue
        array = group[name]
        encode = getattr(getattr(array, "metadata", None), "encode_chunk_key", None)
        if encode is None:
            continue
        size = int(array.chunks[0])
        for index in np.ndindex(*array.cdata_shape):
            if not (path / str(name) / encode(index)).is_file():
                damaged[index[0] * size : (index[0] + 1) * size] = True
    return damaged


def _escape(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def escape_text(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every text (coordinates, variables, attributes) writable as UTF-8.

    File names are data: a byte that is not UTF-8 in a patch file name comes from the file
    system as a surrogate (``surrogateescape``) and is written as a backslash escape
    (``\\xff``), never lost with the scan.

    Example:
        >>> ds = xr.Dataset(coords={"point": [os.fsdecode(b"sb\\xff_1")]})
        >>> escape_text(ds).point.values.tolist()
        ['sb\\\\xff_1']
    """
    out = ds.copy()
    for name in [*out.coords, *out.data_vars]:
        var = out[name].variable
        if var.dtype.kind not in "OUT" or not var.size:
            continue
        values = np.asarray(var.values)
        flat = [_escape(v) if isinstance(v, str) else v for v in values.ravel()]
        if all(x is y for x, y in zip(flat, values.ravel(), strict=True)):
            continue
        fixed = np.array(flat, dtype=object).reshape(values.shape)
        if values.dtype.kind == "U":
            fixed = fixed.astype(str)
        if name in out.coords:
            out = out.assign_coords({name: (var.dims, fixed, var.attrs)})
        else:
            out[name] = (var.dims, fixed, var.attrs)
    holders: list[Any] = [out, *out.variables.values()]
    for holder in holders:
        for key, value in list(holder.attrs.items()):
            if isinstance(value, str):
                holder.attrs[key] = _escape(value)
    return out


def is_result_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Zarr group made by pyhf_dask (the only kind ``overwrite`` deletes).

    Example:
        >>> is_result_store("/")
        False
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    for meta, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            data = json.loads((path / meta).read_text())
        except (OSError, ValueError):
            continue
        attrs = data.get(key, {}) if key else data
        if isinstance(attrs, dict) and {"pyhf_dask_version", "workspace_digest"} <= set(attrs):
            return True
    return False
