"""Reading result stores: a store (complete or not) as a Dataset, and what is a store.

Example:
    >>> is_result_store("/")
    False
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import xarray as xr

from pyhf_dask._optional import require
from pyhf_dask.results import STATUS_FLAGS

__all__ = ["PENDING", "is_result_store", "open_store"]

PENDING = "pending"


def open_store(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a result store (complete or not) as an in-memory Dataset.

    A chunk's ``status`` is written last: points still ``pending`` show no numbers and
    no message, even where a scan stopped between writing a chunk's values and its status.
    """
    require("zarr", "zarr")
    with xr.open_zarr(os.fspath(path), consolidated=False) as ds:
        loaded = ds.load(scheduler="synchronous")  # a local read, never on remote workers
    if "status" not in loaded:
        return loaded
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
