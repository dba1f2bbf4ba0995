"""The plan of a scan: every setting resolved once, from arguments and :mod:`dask.config`.

:func:`resolve_plan` turns the keyword arguments of :func:`pyhf_dask.scan` (``None``
meaning "the ``pyhf-dask.*`` setting", as dask-jobqueue resolves its kwargs) into a frozen
:class:`ScanPlan`: the grid, the validated :class:`~pyhf_dask.kernels.FitOptions`, the
kernel, the confidence level, the workers the chunks are sized for, the chunk bounds and
the scan's token. The graph, the result Dataset, the store and the CLI all read the same
plan; nothing downstream looks a default up again.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pyhf_dask import config
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.graph import (
    FIT_PREFIX,
    ScanGraph,
    build_graph,
    chunk_bounds,
    default_chunk_size,
    scan_token,
)
from pyhf_dask.grid import SignalGrid
from pyhf_dask.kernels import FitOptions, resolve_kernel

__all__ = [
    "CALCTYPES",
    "HISTOSYS_CODES",
    "NORMSYS_CODES",
    "TEST_STATS",
    "UPPER_LIMITS",
    "ScanPlan",
    "active_workers",
    "fits_run_here",
    "make_options",
    "measurement_poi",
    "resolve_plan",
]

log = logging.getLogger(__name__)

TEST_STATS = ("qtilde", "q", "q0")
#: How upper limits are found: ``"root"``, a root search per point (no POI grid needed).
UPPER_LIMITS = ("root",)
#: Which limits a root search finds (``--observed-only``, ``--expected-only``).
CURVES = ("all", "observed", "expected")
CALCTYPES = ("asymptotics", "toybased")
NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code2", "code4p")


@dataclass(frozen=True)
class ScanPlan:
    """A scan with every setting decided: what :func:`pyhf_dask.scan` builds a graph from.

    Frozen, and hashable: its fields are immutable (tuples, a :class:`FitOptions`
    named tuple, strings, numbers) except the grid, which is compared and hashed by
    identity, so two plans are equal when they were resolved the same way from the same
    grid object. Resolve it again (:func:`resolve_plan`) to change a setting; use
    :meth:`for_points` for a subset of the points. ``token`` identifies the scan across
    processes and runs (inputs, kernel, fit options and chunking, not the grid object).

    Attributes:
        grid: the signal grid.
        options: the validated fit options (POI values included).
        kernel: ``"jax"`` or ``"pyhf"``.
        squeeze: one POI value given as a scalar (``poi`` is then a scalar coordinate).
        cl: confidence level of upper limits and contours.
        measurement: the measurement's name.
        poi_name: the POI's name in the measurement.
        workers: the workers the chunks were sized for.
        chunk_size: points per fit task.
        bounds: ``(start, stop)`` of each chunk.
        token: deterministic identifier of the scan (inputs, kernel, options, chunking).
    """

    grid: SignalGrid
    options: FitOptions
    kernel: str
    squeeze: bool
    cl: float
    measurement: str
    poi_name: str
    workers: int
    chunk_size: int
    bounds: tuple[tuple[int, int], ...]
    token: str

    @property
    def poi_values(self) -> list[float]:
        """The scanned POI values."""
        return [float(v) for v in self.options.poi_values]

    def graph(self) -> ScanGraph:
        """The fit tasks of the plan's chunks (:func:`~pyhf_dask.graph.build_graph`)."""
        return build_graph(
            self.grid,
            kernel=self.kernel,
            options=self.options.to_dict(),
            chunk_size=self.chunk_size,
            indices=self.bounds,
            token=self.token,
        )

    def fit_key(self, start: int) -> str:
        """Key of the fit task of the chunk starting at ``start``."""
        return f"{FIT_PREFIX}{self.token}-{start}"

    def chunk_of_key(self) -> dict[str, tuple[int, int]]:
        """Fit task key -> ``(start, stop)`` of its chunk (for callbacks that store results)."""
        return {self.fit_key(start): (start, stop) for start, stop in self.bounds}

    def for_points(self, index: Sequence[int]) -> ScanPlan:
        """The same scan over a subset of the points (a resume), re-chunked for it.

        Example:
            >>> from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
            >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
            >>> grid = SignalGrid.from_function(ws, scaled_signal, scale=[0.5, 1.0, 2.0])
            >>> plan = resolve_plan(grid, kernel="pyhf", chunk_size=2)
            >>> sub = plan.for_points([0, 2])
            >>> len(sub.grid), sub.bounds, sub.options == plan.options
            (2, ((0, 2),), True)
        """
        grid = self.grid.take([int(i) for i in index])
        bounds = tuple(chunk_bounds(len(grid), self.chunk_size))
        token = scan_token(grid, self.kernel, self.options.to_dict(), self.chunk_size)
        return replace(self, grid=grid, bounds=bounds, token=token)


def resolve_plan(
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
) -> ScanPlan:
    """Resolve the arguments of :func:`pyhf_dask.scan` into a :class:`ScanPlan`, once.

    ``None`` means the ``pyhf-dask.*`` setting of :mod:`dask.config` (packaged defaults
    in ``pyhf_dask.yaml``), read at call time; ``chunk_size=None`` with the ``"auto"``
    setting sizes chunks for ``workers`` (default: the workers of ``scheduler`` or of the
    active cluster, see :func:`active_workers`).

    ``device="gpu"`` with a scheduler that fits in this machine's processes
    (:func:`fits_run_here`: Dask's threaded, synchronous or processes scheduler, given or
    active by default) and no GPU visible here is refused at once, before any fit.

    Raises:
        InvalidOption: an option that cannot be used, or ``device="gpu"`` when the fits
            would run here and this machine has no visible GPU (one line).

    Example:
        >>> from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> grid = SignalGrid.from_function(ws, scaled_signal, scale=[0.5, 1.0, 2.0])
        >>> plan = resolve_plan(grid, kernel="pyhf", chunk_size=2)
        >>> plan.options.normsys_interpcode, plan.bounds, plan.poi_name
        ('code4', ((0, 2), (2, 3)), 'mu')
    """
    from pyhf_dask.validate import validate_grid

    squeeze = np.ndim(poi_value) == 0
    poi_values = [float(v) for v in np.atleast_1d(np.asarray(poi_value, dtype=np.float64))]
    measurement_name, poi_name = measurement_poi(grid.workspace, measurement)
    level = float(config.resolve(cl, "cl"))
    if config.resolve(test_stat, "test-stat") == "q0":
        # discovery: pyhf's hypotest(0.0, ..., test_stat="q0"); the POI value is 0 by definition
        if not squeeze or poi_values not in ([0.0], [1.0]):
            msg = f"test statistic 'q0' tests POI = 0 only (got POI value(s) {poi_values})"
            raise InvalidOption(msg)
        if upper_limit is not None:
            msg = "upper limits need the test statistic 'qtilde' or 'q', not 'q0'"
            raise InvalidOption(msg)
        poi_values = [0.0]
    options = make_options(
        poi_values=poi_values,
        test_stat=test_stat,
        calctype=calctype,
        normsys_interpcode=normsys_interpcode,
        histosys_interpcode=histosys_interpcode,
        measurement=measurement,
        device=device,
        scipy_tolerance=scipy_tolerance,
        upper_limit=upper_limit,
        limit_rtol=limit_rtol,
        cl=level,
        curves=curves,
        ntoys=ntoys,
        seed=seed,
    )
    if device == "gpu" and fits_run_here(scheduler):
        from pyhf_dask.gpu import require_gpus

        require_gpus()
    kernel_name = resolve_kernel(kernel)
    if options.calctype == "toybased":
        from pyhf_dask.kernels import TOY_KERNELS

        if kernel_name not in TOY_KERNELS:
            msg = (
                f"toy-based CLs need the {' or '.join(TOY_KERNELS)} kernel (JAX installed), "
                f"not {kernel_name!r}"
            )
            raise InvalidOption(msg)
        if upper_limit is not None:
            msg = "upper_limit='root' is asymptotic only; toy-based limits come from a POI scan"
            raise InvalidOption(msg)
    validate_grid(grid, poi_name=poi_name)
    if not 0.0 < level < 1.0:
        msg = f"confidence level must be between 0 and 1, got {level}"
        raise InvalidOption(msg)
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        msg = f"workers must be a positive integer, got {workers}"
        raise InvalidOption(msg)
    workers = int(workers) if workers is not None else active_workers(scheduler)
    size = config.resolve(chunk_size, "chunk-size")
    size = default_chunk_size(kernel_name, len(grid), workers) if size == "auto" else int(size)
    if size < 1:
        msg = f"chunk size must be a positive integer, got {size}"
        raise InvalidOption(msg)
    return ScanPlan(
        grid=grid,
        options=options,
        kernel=kernel_name,
        squeeze=squeeze,
        cl=level,
        measurement=measurement_name,
        poi_name=poi_name,
        workers=workers,
        chunk_size=size,
        bounds=tuple(chunk_bounds(len(grid), size)),
        token=scan_token(grid, kernel_name, options.to_dict(), size),
    )


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
    upper_limit: str | None = None,
    limit_rtol: float | None = None,
    cl: float = 0.95,
    curves: str | None = None,
    ntoys: int | None = None,
    seed: int | None = None,
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
    limit_rtol = float(config.resolve(limit_rtol, "limit-rtol"))
    curves = _choice(curves or "all", CURVES, "set of limits")
    if curves != "all" and upper_limit is None:
        # a hypothesis test fits the same either way: CLs_obs needs the Asimov fits for
        # sqrt(q_A), the expected CLs the POI = 0 fit on the data for the Asimov data
        msg = (
            f"only the {curves} limits: with --upper-limit root (a test at POI values fits "
            "the same for observed and expected CLs)"
        )
        raise InvalidOption(msg)
    if upper_limit is not None:
        _choice(upper_limit, UPPER_LIMITS, "upper-limit method")
        if not 0.0 < limit_rtol < 0.1:
            msg = f"the limits' relative tolerance must be in (0, 0.1), got {limit_rtol}"
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
        upper_limit=upper_limit,
        limit_rtol=limit_rtol,
        cl=float(cl),
        curves=curves,
        ntoys=_integer(config.resolve(ntoys, "ntoys"), "the number of toys", 1),
        seed=_integer(config.resolve(seed, "seed"), "the seed", 0),
    )


def _integer(value: Any, what: str, lowest: int) -> int:
    """``value`` as an int of at least ``lowest`` (below 2**63), else one line.

    Example:
        >>> _integer("12", "the seed", 0)
        12
        >>> _integer(2.5, "the seed", 0)
        Traceback (most recent call last):
        ...
        pyhf_dask.exceptions.InvalidOption: the seed must be an integer of at least 0, got 2.5
    """
    number: int | None = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    if number is None or not lowest <= number < 2**63:
        msg = f"{what} must be an integer of at least {lowest}, got {value!r}"
        raise InvalidOption(msg)
    return number


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


def fits_run_here(scheduler: Any = None) -> bool:
    """Whether Dask would run the fit tasks in this machine's processes.

    ``scheduler`` is resolved as ``dask.compute`` resolves it (the argument, else the
    ``scheduler`` setting of :mod:`dask.config`, else the active ``distributed`` client,
    else the threaded default of dask arrays). ``True`` for Dask's local schedulers
    (threaded, synchronous, processes); ``False`` for a ``distributed`` client, a wrapped
    executor (:func:`pyhf_dask.executors.wrap`, whose executor decides where fits run; the
    ``local`` executor checks its own GPUs) and anything else.

    Example:
        >>> fits_run_here("threads"), fits_run_here("synchronous")
        (True, True)
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> from pyhf_dask.executors import wrap
        >>> with ThreadPoolExecutor(1) as pool:
        ...     fits_run_here(wrap(pool))
        False
    """
    import functools

    from dask.base import get_scheduler, named_schedulers

    try:
        get = get_scheduler(scheduler=scheduler)
    except (ValueError, RuntimeError, TypeError):  # compute will say what is wrong
        return False
    if get is None:  # no setting, no client: dask arrays compute with threads
        return True
    while isinstance(get, functools.partial):
        get = get.func
    return any(get is local for local in named_schedulers.values())


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
