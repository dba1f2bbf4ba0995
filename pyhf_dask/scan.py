"""``scan()``: a lazy, dask-backed xarray Dataset of CLs over a signal grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from pyhf_dask._version import __version__
from pyhf_dask.graph import variable_arrays
from pyhf_dask.grid import SignalGrid
from pyhf_dask.kernels import BAND
from pyhf_dask.plan import (
    TEST_STATS,
    ScanPlan,
    active_workers,
    make_options,
    measurement_poi,
    resolve_plan,
)
from pyhf_dask.results import TEXT, as_text, encode_status, status_attrs

__all__ = [
    "TEST_STATS",
    "active_workers",
    "make_options",
    "measurement_poi",
    "scan",
    "scan_plan",
]

log = logging.getLogger(__name__)


def scan(
    grid: SignalGrid,
    *,
    poi_value: float | Sequence[float] = 1.0,
    test_stat: str | None = None,
    kernel: str | None = None,
    chunk_size: int | None = None,
    normsys_interpcode: str | None = None,
    histosys_interpcode: str | None = None,
    calctype: str | None = None,
    measurement: str | None = None,
    cl: float | None = None,
    device: str | None = None,
    scipy_tolerance: float | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    upper_limit: str | None = None,
    limit_rtol: float | None = None,
    ntoys: int | None = None,
    seed: int | None = None,
    curves: str | None = None,
) -> xr.Dataset:
    """Build the lazy result Dataset of a hypothesis-test scan over ``grid``.

    Nothing is fitted until the Dataset is computed (``ds.compute()``, with any Dask
    scheduler).

    Args:
        grid: the signal grid.
        poi_value: a POI value (``poi`` becomes a scalar coordinate) or several increasing
            values (``poi`` becomes a dimension and upper limits are derived).
        test_stat: ``"qtilde"`` (default), ``"q"``, or ``"q0"`` (discovery: pyhf's
            ``hypotest(0.0, ..., test_stat="q0")``; variables ``p0_obs``, ``p0_exp``,
            ``Z_obs``, ``Z_exp`` instead of CLs, no ``poi`` coordinate, so that
            ``xr.merge([cls_scan, q0_scan[["p0_obs", "p0_exp", "Z_obs", "Z_exp"]]])``
            puts both in one Dataset).
        kernel: ``"pyhf"``, ``"jax"`` or ``"auto"`` (JAX when installed).
        chunk_size: points per task (default: chosen from the kernel, the grid size and
            the workers: see :func:`active_workers`).
        normsys_interpcode: ``"code4"`` (pyhf's ``Model()`` default) or ``"code1"``;
            ``None``: the ``pyhf-dask.normsys-interpcode`` setting.
        histosys_interpcode: ``"code4p"`` (pyhf's ``Model()`` default), ``"code0"`` or
            ``"code2"``; ``None``: the ``pyhf-dask.histosys-interpcode`` setting.
        calctype: ``"asymptotics"`` (default) or ``"toybased"`` (pseudo-experiments on
            the JAX kernel, docs/TOYS.md: variables ``CLs_obs_err``, ``CLsb_obs``,
            ``CLb_obs`` and their errors, ``ntoys``, ``ntoys_failed``).
        measurement: measurement name (default: the workspace's first).
        cl: confidence level for upper limits (default 0.95).
        device: device for the JAX kernel (``"cpu"``, ``"gpu"``; default: JAX's own).
            ``"gpu"`` is checked here, once, when the fits will run on this machine:
            ``scheduler`` (or, without it, Dask's active scheduler) is one of Dask's
            local schedulers (threaded, the default; synchronous; processes) and no
            ``distributed`` client is active. Then, with no GPU visible here, the scan
            stops with one line (:class:`~pyhf_dask.exceptions.InvalidOption`) instead
            of failing every point. Fits that run elsewhere (a ``distributed`` client,
            a wrapped executor) are not checked on this machine: create the client, or
            pass ``scheduler=``, before calling ``scan``.
        scipy_tolerance: tolerance of the reference kernel's SciPy fits (default: pyhf's).
            On flat likelihoods pyhf's default stops early and CLs can be off by 1e-2
            (see BENCHMARKS.md); 1e-10 is a good choice for a reference scan.
        workers: the workers to size the chunks for (default: those of ``scheduler``,
            see :func:`active_workers`).
        upper_limit: ``"root"``: every point's observed and five expected upper limits
            at ``cl`` by a root search (:mod:`pyhf_dask.kernels.limits`), no POI grid
            needed; ``limit_status`` says where a limit lies outside the POI's bounds.
        limit_rtol: relative tolerance of the root search (default 1e-4, pyhf's).
        curves: with ``upper_limit="root"``: ``"observed"`` or ``"expected"`` searches only
            those limits (the others are NaN). Fits per step of the search and point: all
            7 (the observed curve needs the fixed fit on the data and on the Asimov data,
            each expected curve one on the Asimov data), observed 2, expected 5; the test
            at ``poi_value`` fits the same in every mode (``CLs_obs`` needs ``sqrt(q_A)``).
        ntoys: toys per hypothesis and POI value (``calctype="toybased"``; default: the
            ``pyhf-dask.ntoys`` setting, 1000).
        seed: seed of every toy stream (default: the ``pyhf-dask.seed`` setting, 0).
        scheduler: what the Dataset will be computed with (an executor, a
            ``distributed.Client``, a wrapped one, a Dask scheduler name), to size the
            chunks by its workers and to know where ``device="gpu"`` must find a GPU.

    Returns:
        A dask-backed :class:`xarray.Dataset` (see :mod:`pyhf_dask.results`).

    Raises:
        InvalidOption: an option that cannot be used; ``device="gpu"`` with local fits
            and no GPU visible on this machine.

    Example:
        >>> from pyhf_dask.grid import SignalGrid, simple_workspace, scaled_signal
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> ds = scan(SignalGrid.from_function(ws, scaled_signal, scale=[1.0]), kernel="pyhf")
        >>> round(float(ds.CLs_obs.compute()[0]), 4)
        0.0525
    """
    plan = resolve_plan(
        grid,
        poi_value=poi_value,
        test_stat=test_stat,
        kernel=kernel,
        chunk_size=chunk_size,
        normsys_interpcode=normsys_interpcode,
        histosys_interpcode=histosys_interpcode,
        calctype=calctype,
        measurement=measurement,
        cl=cl,
        device=device,
        scipy_tolerance=scipy_tolerance,
        workers=workers,
        scheduler=scheduler,
        upper_limit=upper_limit,
        limit_rtol=limit_rtol,
        ntoys=ntoys,
        seed=seed,
        curves=curves,
    )
    return scan_plan(plan)


def scan_plan(plan: ScanPlan) -> xr.Dataset:
    """The lazy result Dataset of a resolved :class:`~pyhf_dask.plan.ScanPlan`.

    Example:
        >>> from pyhf_dask.grid import SignalGrid, simple_workspace, scaled_signal
        >>> from pyhf_dask.plan import resolve_plan
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> plan = resolve_plan(SignalGrid.from_function(ws, scaled_signal, scale=[1.0, 2.0]))
        >>> scan_plan(plan).attrs["scan_token"] == plan.token
        True
    """
    grid, poi_values, squeeze, cl = plan.grid, plan.poi_values, plan.squeeze, plan.cl
    graph = plan.graph()
    discovery = plan.options.test_stat == "q0"
    arrays = variable_arrays(
        graph,
        poi_values,
        squeeze=squeeze,
        cl=cl,
        limits=plan.options.upper_limit == "root",
        discovery=discovery,
        toys=plan.options.calctype == "toybased",
    )
    # status as CF flags, message as variable-length strings: types known before computing
    dims, status = arrays["status"]
    arrays["status"] = (dims, da.map_blocks(encode_status, status, dtype=np.int8))
    dims, message = arrays["message"]
    arrays["message"] = (dims, da.map_blocks(as_text, message, dtype=TEXT))
    coords: dict[str, Any] = {
        "point": np.array(grid.names, dtype=object),
        "band": np.array(BAND, dtype=np.int64),
        "poi": poi_values[0] if squeeze else np.array(poi_values),
    }
    if discovery:  # POI = 0 by definition; no coordinate to clash with a CLs scan's
        del coords["poi"]
    for k, label in enumerate(grid.labels):
        coords[label] = ("point", grid.values[:, k])
    ds = xr.Dataset({name: value for name, value in arrays.items()}, coords=coords)
    ds.attrs.update(_provenance(plan))
    if plan.options.calctype == "toybased":
        ds.attrs.update(ntoys=plan.options.ntoys, seed=plan.options.seed)
    _describe(ds)
    return ds


def _provenance(plan: ScanPlan) -> dict[str, Any]:
    from pyhf_dask.schema import pyhf_version

    return {
        "title": "pyhf_dask hypothesis-test scan",
        "pyhf_dask_version": __version__,
        "pyhf_version": pyhf_version(),
        "kernel": plan.kernel,
        "test_stat": plan.options.test_stat,
        "calctype": plan.options.calctype,
        "poi_name": plan.poi_name,
        "measurement": plan.measurement,
        "normsys_interpcode": plan.options.normsys_interpcode,
        "histosys_interpcode": plan.options.histosys_interpcode,
        "scipy_tolerance": "default"
        if plan.options.scipy_tolerance is None
        else plan.options.scipy_tolerance,
        "upper_limit": plan.options.upper_limit or "grid",
        "limit_rtol": plan.options.limit_rtol,
        "limit_curves": plan.options.curves,
        "cl": plan.cl,
        "labels": ",".join(plan.grid.labels),
        "source": plan.grid.source,
        "analysis_id": str(plan.grid.metadata.get("analysis_id", "")),
        "workspace_digest": plan.grid.workspace_digest(),
        "patches_digest": plan.grid.patches_digest(),
        "scan_token": plan.token,
        "chunk_size": plan.chunk_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _describe(ds: xr.Dataset) -> None:
    if "CLs_obs" in ds:
        ds["CLs_obs"].attrs["long_name"] = "observed CLs"
        ds["CLs_exp"].attrs["long_name"] = "expected CLs (band in standard deviations)"
    if "p0_obs" in ds:
        ds["p0_obs"].attrs["long_name"] = "observed discovery p-value (q0)"
        ds["p0_exp"].attrs["long_name"] = "expected discovery p-value under the signal"
        ds["Z_obs"].attrs["long_name"] = "observed significance Phi^-1(1 - p0)"
        ds["Z_exp"].attrs["long_name"] = "expected significance under the signal"
    ds["status"].attrs.update(status_attrs())
    ds["message"].attrs["description"] = "what the optimizer or the kernel said"
    ds["fit_time"].attrs["units"] = "s"
    ds["band"].attrs["units"] = "standard deviations"
    if "upper_limit_obs" in ds:
        ds["upper_limit_obs"].attrs["long_name"] = f"observed upper limit at {ds.attrs['cl']} CL"
        ds["upper_limit_exp"].attrs["long_name"] = f"expected upper limit at {ds.attrs['cl']} CL"
    for name, what in (("CLs", "CLs"), ("CLsb", "CLs+b"), ("CLb", "CLb")):
        if f"{name}_obs_err" in ds:
            ds[f"{name}_obs_err"].attrs["long_name"] = f"Monte Carlo standard error of {what}"
        if name != "CLs" and f"{name}_obs" in ds:
            ds[f"{name}_obs"].attrs["long_name"] = f"observed {what} from toys"
    if "ntoys" in ds:
        ds["ntoys"].attrs["long_name"] = "toys per hypothesis (-1: none drawn)"
        ds["ntoys_failed"].attrs["long_name"] = "toys whose fits were not certified"
    if "limit_status" in ds:
        from pyhf_dask.kernels import LIMIT_STATUS

        ds["limit_status"].attrs.update(
            long_name="where the upper limits lie (the worst of the six curves)",
            flag_values=np.arange(len(LIMIT_STATUS), dtype=np.int8),
            flag_meanings=" ".join(LIMIT_STATUS),
        )
