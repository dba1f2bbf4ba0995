"""``scan()``: a lazy, dask-backed xarray Dataset of CLs over a signal grid."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from pyhf_dask import config
from pyhf_dask._version import __version__
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.graph import build_graph, default_chunk_size, variable_arrays
from pyhf_dask.grid import SignalGrid
from pyhf_dask.kernels import BAND, FitOptions, resolve_kernel
from pyhf_dask.results import TEXT, as_text, encode_status, status_attrs
from pyhf_dask.validate import validate_grid

__all__ = ["TEST_STATS", "active_workers", "make_options", "measurement_poi", "scan"]

log = logging.getLogger(__name__)

TEST_STATS = ("qtilde", "q")
CALCTYPES = ("asymptotics",)
NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code2", "code4p")


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        msg = f"unknown {what} {value!r} (choose from: {', '.join(allowed)})"
        raise InvalidOption(msg)
    return value


def measurement_poi(workspace: dict[str, Any], measurement: str | None) -> tuple[str, str]:
    """``(measurement name, POI name)`` of the chosen (default: first) measurement."""
    measurements = workspace.get("measurements", [])
    if not measurements:
        msg = "the workspace has no measurements"
        raise InvalidOption(msg)
    if measurement is None:
        chosen = measurements[0]
    else:
        found = [m for m in measurements if m.get("name") == measurement]
        if not found:
            names = ", ".join(m.get("name", "?") for m in measurements)
            msg = f"no measurement {measurement!r} in the workspace (measurements: {names})"
            raise InvalidOption(msg)
        chosen = found[0]
    return str(chosen["name"]), str(chosen["config"]["poi"])


def make_options(
    *,
    poi_values: Sequence[float],
    test_stat: str | None = None,
    calctype: str | None = None,
    normsys_interpcode: str | None = None,
    histosys_interpcode: str | None = None,
    measurement: str | None = None,
    device: str | None = None,
    scipy_tolerance: float | None = None,
) -> FitOptions:
    """Validated :class:`FitOptions`, with ``None`` resolved from the configuration."""
    values = tuple(float(v) for v in poi_values)
    if not values:
        msg = "at least one POI value is needed"
        raise InvalidOption(msg)
    if not all(np.isfinite(values)):
        msg = f"POI values must be finite numbers, got {list(values)}"
        raise InvalidOption(msg)
    if len(values) > 1 and np.any(np.diff(values) <= 0):
        msg = f"POI values of a scan must be strictly increasing, got {list(values)}"
        raise InvalidOption(msg)
    if scipy_tolerance is not None and not scipy_tolerance > 0:
        msg = f"the SciPy tolerance must be positive, got {scipy_tolerance}"
        raise InvalidOption(msg)
    return FitOptions(
        poi_values=values,
        test_stat=_choice(config.resolve(test_stat, "test-stat"), TEST_STATS, "test statistic"),
        calctype=_choice(config.resolve(calctype, "calctype"), CALCTYPES, "calculator"),
        normsys_interpcode=_choice(
            config.resolve(normsys_interpcode, "normsys-interpcode"),
            NORMSYS_CODES,
            "normsys interpolation code",
        ),
        histosys_interpcode=_choice(
            config.resolve(histosys_interpcode, "histosys-interpcode"),
            HISTOSYS_CODES,
            "histosys interpolation code",
        ),
        measurement=measurement,
        gradient_tolerance=float(config.get("gradient-tolerance")),
        device=device,
        scipy_tolerance=scipy_tolerance,
    )


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
    scheduler: Any = None,
) -> xr.Dataset:
    """Build the lazy result Dataset of a hypothesis-test scan over ``grid``.

    Nothing is fitted until the Dataset is computed (``ds.compute()``, with any Dask
    scheduler).

    Args:
        grid: the signal grid.
        poi_value: a POI value (``poi`` becomes a scalar coordinate) or several increasing
            values (``poi`` becomes a dimension and upper limits are derived).
        test_stat: ``"qtilde"`` (default) or ``"q"``.
        kernel: ``"pyhf"``, ``"jax"`` or ``"auto"`` (JAX when installed).
        chunk_size: points per task (default: chosen from the kernel, the grid size and
            the workers: see :func:`active_workers`).
        normsys_interpcode: ``"code4"`` (pyhf's ``Model()`` default) or ``"code1"``;
            ``None``: the ``pyhf-dask.normsys-interpcode`` setting.
        histosys_interpcode: ``"code4p"`` (pyhf's ``Model()`` default), ``"code0"`` or
            ``"code2"``; ``None``: the ``pyhf-dask.histosys-interpcode`` setting.
        calctype: ``"asymptotics"``.
        measurement: measurement name (default: the workspace's first).
        cl: confidence level for upper limits (default 0.95).
        device: device for the JAX kernel (``"cpu"``, ``"gpu"``; default: JAX's own).
        scipy_tolerance: tolerance of the reference kernel's SciPy fits (default: pyhf's).
            On flat likelihoods pyhf's default stops early and CLs can be off by 1e-2
            (see BENCHMARKS.md); 1e-10 is a good choice for a reference scan.
        scheduler: what the Dataset will be computed with (an executor, a
            ``distributed.Client``, a wrapped one), only to size the chunks by its workers.

    Returns:
        A dask-backed :class:`xarray.Dataset` (see :mod:`pyhf_dask.results`).

    Example:
        >>> from pyhf_dask.grid import SignalGrid, simple_workspace, scaled_signal
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> ds = scan(SignalGrid.from_function(ws, scaled_signal, scale=[1.0]), kernel="pyhf")
        >>> round(float(ds.CLs_obs.compute()[0]), 4)
        0.0525
    """
    squeeze = np.ndim(poi_value) == 0
    poi_values = [float(v) for v in np.atleast_1d(np.asarray(poi_value, dtype=np.float64))]
    measurement_name, poi_name = measurement_poi(grid.workspace, measurement)
    options = make_options(
        poi_values=poi_values,
        test_stat=test_stat,
        calctype=calctype,
        normsys_interpcode=normsys_interpcode,
        histosys_interpcode=histosys_interpcode,
        measurement=measurement,
        device=device,
        scipy_tolerance=scipy_tolerance,
    )
    kernel_name = resolve_kernel(kernel)
    validate_grid(grid, poi_name=poi_name)
    cl = float(config.resolve(cl, "cl"))
    if not 0.0 < cl < 1.0:
        msg = f"confidence level must be between 0 and 1, got {cl}"
        raise InvalidOption(msg)
    workers = active_workers(scheduler)
    size = config.resolve(chunk_size, "chunk-size")
    size = default_chunk_size(kernel_name, len(grid), workers) if size == "auto" else int(size)
    if size < 1:
        msg = f"chunk size must be a positive integer, got {size}"
        raise InvalidOption(msg)
    graph = build_graph(grid, kernel=kernel_name, options=options.to_dict(), chunk_size=size)
    arrays = variable_arrays(graph, poi_values, squeeze=squeeze, cl=cl)
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
    for k, label in enumerate(grid.labels):
        coords[label] = ("point", grid.values[:, k])
    ds = xr.Dataset({name: value for name, value in arrays.items()}, coords=coords)
    ds.attrs.update(
        _provenance(grid, options, kernel_name, size, graph.token, cl, measurement_name, poi_name)
    )
    _describe(ds)
    return ds


def _provenance(
    grid: SignalGrid,
    options: FitOptions,
    kernel: str,
    chunk_size: int,
    token: str,
    cl: float,
    measurement: str,
    poi_name: str,
) -> dict[str, Any]:
    import pyhf

    return {
        "title": "pyhf_dask hypothesis-test scan",
        "pyhf_dask_version": __version__,
        "pyhf_version": pyhf.__version__,
        "kernel": kernel,
        "test_stat": options.test_stat,
        "calctype": options.calctype,
        "poi_name": poi_name,
        "measurement": measurement,
        "normsys_interpcode": options.normsys_interpcode,
        "histosys_interpcode": options.histosys_interpcode,
        "scipy_tolerance": "default"
        if options.scipy_tolerance is None
        else options.scipy_tolerance,
        "cl": cl,
        "labels": ",".join(grid.labels),
        "source": grid.source,
        "analysis_id": str(grid.metadata.get("analysis_id", "")),
        "workspace_digest": grid.workspace_digest(),
        "patches_digest": grid.patches_digest(),
        "scan_token": token,
        "chunk_size": chunk_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def active_workers(scheduler: Any = None) -> int:
    """Workers that will run the fit tasks, to size the chunks.

    In order: the workers of ``scheduler`` (a ``distributed.Client``, an executor's
    ``capacity`` or ``max_workers``, also inside a :func:`pyhf_dask.executors.wrap`
    scheduler); the workers of the active ``distributed`` client (its default client);
    the ``pyhf-dask.workers`` setting; the cores of this machine.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(3) as pool:
        ...     active_workers(pool)
        3
    """
    found = _scheduler_workers(scheduler) if scheduler is not None else None
    if found is None and "distributed" in sys.modules:
        from distributed import default_client

        try:
            found = _scheduler_workers(default_client())
        except ValueError:  # no client is active
            found = None
    if found:
        return found
    return int(config.get("workers") or os.cpu_count() or 1)


def _scheduler_workers(scheduler: Any) -> int | None:
    target = getattr(scheduler, "executor", scheduler)  # a wrapped executor
    # a client's executor: pyhf_dask's (client) or distributed's own (_client)
    target = getattr(target, "client", None) or getattr(target, "_client", None) or target
    if type(target).__name__ == "Client" and hasattr(target, "nthreads"):
        try:
            return len(target.nthreads()) or None
        except Exception as exc:  # a client that lost its scheduler: size by the rest
            log.debug("cannot count the workers of %s: %s", target, exc)
            return None
    for name in ("capacity", "_max_workers", "max_workers", "workers"):
        value = getattr(target, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _describe(ds: xr.Dataset) -> None:
    ds["CLs_obs"].attrs["long_name"] = "observed CLs"
    ds["CLs_exp"].attrs["long_name"] = "expected CLs (band in standard deviations)"
    ds["status"].attrs.update(status_attrs())
    ds["message"].attrs["description"] = "what the optimizer or the kernel said"
    ds["fit_time"].attrs["units"] = "s"
    ds["band"].attrs["units"] = "standard deviations"
    if "upper_limit_obs" in ds:
        ds["upper_limit_obs"].attrs["long_name"] = f"observed upper limit at {ds.attrs['cl']} CL"
        ds["upper_limit_exp"].attrs["long_name"] = f"expected upper limit at {ds.attrs['cl']} CL"
