"""Incremental result stores: every finished chunk is on disk at once; resume after a crash.

A store is a Zarr group written by xarray, so ``xarray.open_zarr(path)`` reads it at any
time. It is created with every point ``status = "pending"`` and NaN results; then, as each
fit task finishes, the client writes that chunk's points. Zarr writes each chunk file
atomically (temporary file + rename), and the point's ``status`` is written last, after all
its other variables, so a point whose status is not ``"pending"`` is complete even if the
client was killed (SIGKILL) a moment later. On resume only ``"pending"`` points (and
optionally ``"failed"`` and ``"partial"`` ones) are fitted again, after checking that the
inputs and settings are those the store was made with.

One writer per store: a scan holds the lock ``.pyhf_dask.lock`` in the store for as long
as it runs (:mod:`pyhf_dask.store_lock`). A second scan, ``resume``, ``retry_failed`` or
``overwrite`` on a locked store is refused with a message naming the owner; a lock left by
a scan that died (its pid no longer runs on this host) is stale and taken over with a
warning; ``break_lock=True`` (``--break-lock``) takes over a lock of another host only.
A missing chunk file reads as ``pending`` and is refitted on resume
(:mod:`pyhf_dask.store_read`); a store with a text ``status`` (an older version) is
refused for resume. ``overwrite`` deletes only a store made
by pyhf_dask (a Zarr group with pyhf_dask's attributes), never another folder.

Example:
    >>> from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
    >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    >>> grid = SignalGrid.from_function(ws, scaled_signal, scale=[1.0, 2.0])
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "results.zarr"
    >>> ds = scan_to_store(grid, path, kernel="pyhf", scheduler="synchronous")
    >>> status_names(ds.status).tolist()
    ['converged', 'converged']
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from dask.callbacks import Callback

from pyhf_dask._optional import require
from pyhf_dask.exceptions import InvalidOption, SettingsMismatch
from pyhf_dask.graph import extract
from pyhf_dask.grid import SignalGrid
from pyhf_dask.plan import ScanPlan, resolve_plan
from pyhf_dask.results import STATUS_FLAGS, TEXT, as_text, encode_status, status_names
from pyhf_dask.scan import scan_plan
from pyhf_dask.store_lock import LOCK_NAME, lock_store, only_lock
from pyhf_dask.store_read import (
    PENDING,
    STORE_FORMAT,
    escape_text,
    is_result_store,
    open_store,
)

__all__ = [
    "LOCK_NAME",
    "MATCHED_ATTRS",
    "StoreWriter",
    "is_result_store",
    "lock_store",
    "open_store",
    "plan_resume",
    "scan_to_store",
    "store_plan",
    "stored_chunk_size",
]

log = logging.getLogger(__name__)

#: Attributes that must be equal between a store and the scan that resumes it.
MATCHED_ATTRS = (
    "workspace_digest",
    "patches_digest",
    "kernel",
    "test_stat",
    "calctype",
    "measurement",
    "normsys_interpcode",
    "histosys_interpcode",
    "scipy_tolerance",
    "cl",
    "labels",
    "upper_limit",
    "limit_rtol",
    "limit_curves",
    "ntoys",
    "seed",
)
#: Written in this order; ``status`` last, as the commit mark of a point.
_ORDER = (
    "CLs_obs",
    "CLs_exp",
    "p0_obs",
    "p0_exp",
    "Z_obs",
    "Z_exp",
    "upper_limit_obs",
    "upper_limit_exp",
    "limit_status",
    "CLs_obs_err",
    "CLsb_obs",
    "CLsb_obs_err",
    "CLb_obs",
    "CLb_obs_err",
    "ntoys",
    "ntoys_failed",
    "message",
    "fit_time",
    "status",
)


class ResumePlan(NamedTuple):
    """Which points of a store still need fitting."""

    todo: np.ndarray
    n_done: int
    n_failed_retried: int


def _template(lazy: xr.Dataset) -> xr.Dataset:
    data = {}
    for name, var in lazy.data_vars.items():
        if name == "status":
            values = np.full(var.shape, STATUS_FLAGS.index(PENDING), dtype=np.int8)
        elif name == "message":
            values = np.full(var.shape, "", dtype=TEXT)
        else:
            # floats NaN; integer flags (limit_status) -1 until their point is written
            fill = np.nan if var.dtype.kind == "f" else -1
            values = np.full(var.shape, fill, dtype=var.dtype)
        data[name] = (var.dims, values, var.attrs)
    attrs = {**lazy.attrs, "store_format": STORE_FORMAT}
    return xr.Dataset(data, coords=dict(lazy.coords), attrs=attrs)


def _create(lazy: xr.Dataset, path: Path) -> None:
    template = escape_text(_template(lazy))  # file names as data: any bytes survive, escaped
    size = int(lazy.attrs["chunk_size"])
    encoding: dict[str, dict[str, Any]] = {
        str(name): {"chunks": (min(size, var.shape[0]), *var.shape[1:])}
        for name, var in template.data_vars.items()
    }
    # a status chunk that is missing reads as pending (never as converged), and every chunk
    # is written, also one equal to the fill value, so that a missing one is damage
    encoding["status"]["fill_value"] = STATUS_FLAGS.index(PENDING)
    # mode "a": the folder exists already and holds this scan's lock file
    template.to_zarr(
        os.fspath(path),
        mode="a",
        encoding=encoding,
        consolidated=False,
        write_empty_chunks=True,
    )
    _consolidate(path)


def _consolidate(path: Path) -> None:
    """Consolidated metadata, so that ``xr.open_zarr(path)`` reads the store without its
    warning. The metadata do not change after creation (chunks are written into arrays
    that exist), so it stays true while the store fills."""
    import warnings

    zarr = require("zarr", "zarr")
    with warnings.catch_warnings():  # "not part of the Zarr format 3 specification"
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(os.fspath(path))


class StoreWriter(Callback):
    """Dask callback that writes each finished fit task's points into the store.

    Args:
        path: the Zarr store.
        index: fit-task key -> store indices of its points.
        poi_values, cl, squeeze: as in the Dataset, to derive upper limits.
        on_write: called with the number of points written (progress, tests).
    """

    def __init__(
        self,
        path: Path,
        index: dict[str, np.ndarray],
        *,
        poi_values: list[float],
        cl: float,
        squeeze: bool,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        zarr = require("zarr", "zarr")
        self.group = zarr.open_group(os.fspath(path), mode="r+")
        self.index = index
        self.poi_values = poi_values
        self.cl = cl
        self.squeeze = squeeze
        self.on_write = on_write
        self.written = 0
        self.seen: set[str] = set()

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        if name in self.index and name not in self.seen:
            self.seen.add(name)
            self.write(self.index[name], result)

    def write(self, idx: np.ndarray, result: dict[str, np.ndarray]) -> None:
        """Write the points ``idx`` of one chunk result; ``status`` last."""
        names = [n for n in _ORDER if n in self.group]
        for name in names:
            value = extract(result, name, self.poi_values, self.cl, self.squeeze)
            # every chunk on disk, also one of fill values: a missing chunk is damage
            array = self.group[name].with_config({"write_empty_chunks": True})
            selection = (idx,) + (slice(None),) * (array.ndim - 1)
            if name == "status":
                value = encode_status(value)
            elif name == "message":
                value = as_text(value)
            array.oindex[selection] = value
        self.written += len(idx)
        if self.on_write is not None:
            self.on_write(len(idx))


def plan_resume(store: xr.Dataset, lazy: xr.Dataset, *, retry_failed: bool) -> ResumePlan:
    """Check that ``lazy`` is the scan ``store`` was made by; return what is left to fit."""
    for key in MATCHED_ATTRS:
        old, new = store.attrs.get(key), lazy.attrs.get(key)
        if not np.array_equal(np.asarray(old), np.asarray(new)):
            msg = (
                f"the store was made with {key} = {old!r}, this scan has {new!r}; "
                f"use the same inputs and settings, or a new output"
            )
            raise SettingsMismatch(msg)
    # a discovery scan (q0) has no poi coordinate: POI = 0 by definition
    old = np.atleast_1d(store["poi"].values) if "poi" in store.coords else np.zeros(0)
    new = np.atleast_1d(lazy["poi"].values) if "poi" in lazy.coords else np.zeros(0)
    if old.shape != new.shape or not np.allclose(old, new, rtol=0, atol=0):
        msg = (
            f"the store was made with POI values {old.tolist()}, this scan has "
            f"{new.tolist()}; use the same inputs and settings, or a new output"
        )
        raise SettingsMismatch(msg)
    if store["status"].dtype.kind in "OSUT":
        msg = (
            "the store was written by an older pyhf-dask (status stored as text) and cannot "
            "be resumed: scan into a new output (the store can still be read and plotted)"
        )
        raise SettingsMismatch(msg)
    status = status_names(store["status"])
    pending = status == PENDING
    failed = np.isin(status, ("failed", "partial"))  # partial: some POI values failed
    todo = pending | failed if retry_failed else pending
    return ResumePlan(
        todo=np.flatnonzero(todo),
        n_done=int((~pending).sum()),
        n_failed_retried=int(failed.sum()) if retry_failed else 0,
    )


def stored_chunk_size(path: str | os.PathLike[str]) -> int | None:
    """The chunk size a result store was made with (``None``: no store at ``path``).

    A resume without a chunk size of its own keeps the store's chunking.

    Example:
        >>> stored_chunk_size("/") is None
        True
    """
    if not is_result_store(path):
        return None
    return int(open_store(path).attrs["chunk_size"])


def scan_to_store(
    grid: SignalGrid,
    path: str | os.PathLike[str],
    *,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    break_lock: bool = False,
    scheduler: Any = None,
    on_write: Callable[[int], None] | None = None,
    **scan_options: Any,
) -> xr.Dataset:
    """Scan ``grid`` writing every finished chunk to the Zarr store ``path``.

    Resolves the :class:`~pyhf_dask.plan.ScanPlan` (a resume without ``chunk_size``
    keeps the store's) and runs :func:`store_plan`.

    Args:
        grid: the signal grid.
        path: the ``.zarr`` store.
        resume, retry_failed, overwrite, break_lock, scheduler, on_write: see
            :func:`store_plan`.
        **scan_options: options of :func:`pyhf_dask.scan`.

    Returns:
        The complete result, read back from the store.
    """
    if resume and scan_options.get("chunk_size") is None:
        scan_options["chunk_size"] = stored_chunk_size(path)
    plan = resolve_plan(grid, scheduler=scheduler, **scan_options)
    return store_plan(
        plan,
        path,
        resume=resume,
        retry_failed=retry_failed,
        overwrite=overwrite,
        break_lock=break_lock,
        scheduler=scheduler,
        on_write=on_write,
    )


def store_plan(
    plan: ScanPlan,
    path: str | os.PathLike[str],
    *,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    break_lock: bool = False,
    scheduler: Any = None,
    on_write: Callable[[int], None] | None = None,
) -> xr.Dataset:
    """Run a resolved :class:`~pyhf_dask.plan.ScanPlan`, writing every finished chunk to ``path``.

    The store's chunking, fit-task keys and chunk bounds are the plan's; a resume fits
    the points left over :meth:`~pyhf_dask.plan.ScanPlan.for_points`.

    Args:
        plan: the resolved scan.
        path: the ``.zarr`` store.
        resume: continue an existing store (only missing points are fitted).
        retry_failed: with ``resume``, fit the failed points again too.
        overwrite: replace an existing store made by pyhf_dask instead of refusing.
        break_lock: take over the store's lock held by a scan on another host (a lock
            left by a scan that died on this host is taken over without it).
        scheduler: any ``scheduler=`` for ``dask.compute``. One that runs no local
            callbacks (a plain ``distributed.Client``) has its chunks written at the end.
        on_write: called with the number of points written after each chunk.

    Returns:
        The complete result, read back from the store.
    """
    path = Path(path)
    require("zarr", "zarr")
    exists = path.exists() or path.is_symlink()
    if exists and not resume and not overwrite:
        msg = f"{path} exists: resume it (--resume) or choose another output"
        raise InvalidOption(msg)
    if exists and not (path.is_dir() and (is_result_store(path) or only_lock(path))):
        what = "--overwrite deletes" if overwrite and not resume else "--resume continues"
        msg = (
            f"{path} is not a pyhf-dask result store; {what} only stores made by "
            "pyhf-dask (remove or rename it yourself if you mean to replace it)"
        )
        raise InvalidOption(msg)
    if resume and not exists:
        log.info("%s does not exist yet: starting a new scan", path)
    with lock_store(path, break_lock=break_lock):
        if exists and overwrite and not resume:
            for entry in path.iterdir():
                if entry.name == LOCK_NAME:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        n_points = len(plan.grid)
        if is_result_store(path):
            stored = open_store(path)
            left = plan_resume(stored, scan_plan(plan), retry_failed=retry_failed)
            log.info(
                "resuming %s: %d of %d points done, %d to fit (%d failed retried)",
                path,
                left.n_done,
                n_points,
                len(left.todo),
                left.n_failed_retried,
            )
            todo = left.todo
        else:
            _create(scan_plan(plan), path)
            todo = np.arange(n_points)
        if len(todo):
            _fit_into(plan, path, todo, scheduler, on_write)
        return open_store(path)


def _fit_into(
    plan: ScanPlan,
    path: Path,
    todo: np.ndarray,
    scheduler: Any,
    on_write: Callable[[int], None] | None,
) -> None:
    """Fit the points ``todo`` of ``plan`` and write each chunk as its fit task finishes.

    Chunks are written by a Dask callback as their tasks finish (threads, processes,
    synchronous, a :func:`pyhf_dask.executors.wrap` adapter). A scheduler that runs no
    local callbacks (a plain ``distributed.Client``) still gets every chunk written when
    the compute returns, with a warning that nothing was saved on the way.
    """
    import dask

    sub = plan if len(todo) == len(plan.grid) else plan.for_points(todo.tolist())
    graph = sub.graph()
    index = {sub.fit_key(start): todo[start:stop] for start, stop in sub.bounds}
    writer = StoreWriter(
        path,
        index,
        poi_values=plan.poi_values,
        cl=plan.cl,
        squeeze=plan.squeeze,
        on_write=on_write,
    )
    with writer:
        # no graph optimisation: fusion would rename the fit tasks the writer listens to
        results = dask.compute(*graph.parts, scheduler=scheduler, optimize_graph=False)
    unseen = [key for key in index if key not in writer.seen]
    if unseen:
        log.warning(
            "the scheduler reported no finished task to this process (a distributed.Client "
            "runs no local callbacks): %d chunk(s) written only now, at the end; pass "
            "pyhf_dask.executors.wrap(client.get_executor()) to save each chunk as it finishes",
            len(unseen),
        )
        by_key = dict(zip(index, results, strict=True))
        for key in unseen:
            writer.write(index[key], by_key[key])
