"""Fit kernels: functions that run the hypothesis tests of a chunk of grid points.

Every kernel has the signature of :func:`pyhf_dask.kernels.reference.hypotest_chunk`:
it takes the background-only workspace, the chunk's patches and the options as plain data
and returns a dict of NumPy arrays with the fields in :data:`FIELDS`. The worker function
shipped to executors is :func:`fit_chunk`, which picks the kernel by name.

Status values per point: ``"converged"`` (every fit certified: KKT conditions, kinks
included); ``"partial"`` (some POI values certified, the others NaN; the message says
which fit failed); ``"failed"`` (the fit raised or nothing could be certified; the message
says why); ``"fallback"`` (certified, computed in part or whole by the reference kernel
because the requested kernel could not; the message says why).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.grid import FunctionPatches, Patch, materialize

__all__ = [
    "BAND",
    "FIELDS",
    "KERNELS",
    "LIMIT_FIELDS",
    "LIMIT_STATUS",
    "STATUS",
    "TOY_FIELDS",
    "TOY_KERNELS",
    "FitOptions",
    "empty_result",
    "fit_chunk",
    "get_kernel",
    "resolve_kernel",
]

#: Expected-band members, in units of standard deviations.
BAND = (-2, -1, 0, 1, 2)
#: Per-point status values.
STATUS = ("converged", "partial", "failed", "fallback")
#: Output fields of a kernel: name -> (dtype, extra dims after ``point``).
FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CLs_obs": ("float64", ("poi",)),
    "CLs_exp": ("float64", ("poi", "band")),
    "status": ("U9", ()),
    "message": ("object", ()),
    "fit_time": ("float64", ()),
}

#: Fields of a kernel's result with ``upper_limit="root"`` (:data:`FIELDS` plus these).
#: ``limit_status`` per point: 0 every limit found, 1 CLs above 1 - cl up to the highest POI
#: searched (no root: limit above the range), 2 CLs below 1 - cl already at the lowest POI
#: (limit below the range), 3 the fits of the search could not be certified.
LIMIT_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "upper_limit_obs": ("float64", ()),
    "upper_limit_exp": ("float64", ("band",)),
    "limit_status": ("int8", ()),
}
#: Meanings of the ``limit_status`` values 0, 1, 2, 3.
LIMIT_STATUS = ("found", "above_range", "below_range", "failed")

#: Fields of a kernel's result with ``calctype="toybased"`` (:data:`FIELDS` plus these):
#: the p-values of the observed statistic and their Monte Carlo standard errors, the toys
#: drawn per hypothesis and the toy fits not certified (both hypotheses), per POI value
#: (:mod:`pyhf_dask.kernels.jax_toys`; counts are -1 where nothing was drawn).
TOY_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CLs_obs_err": ("float64", ("poi",)),
    "CLsb_obs": ("float64", ("poi",)),
    "CLsb_obs_err": ("float64", ("poi",)),
    "CLb_obs": ("float64", ("poi",)),
    "CLb_obs_err": ("float64", ("poi",)),
    "ntoys": ("int64", ("poi",)),
    "ntoys_failed": ("int64", ("poi",)),
}
#: Kernel name -> "module:function" of its toy-based calculator.
TOY_KERNELS = {"jax": "pyhf_dask.kernels.jax_toys:hypotest_chunk"}

#: Kernel name -> "module:function".
KERNELS = {
    "pyhf": "pyhf_dask.kernels.reference:hypotest_chunk",
    "jax": "pyhf_dask.kernels.jax_kernel:hypotest_chunk",
}

Kernel = Callable[[dict[str, Any], Sequence[Patch], dict[str, Any]], dict[str, np.ndarray]]


class FitOptions(NamedTuple):
    """Settings of a hypothesis test, shipped to workers as a plain dict."""

    poi_values: tuple[float, ...] = (1.0,)
    test_stat: str = "qtilde"
    calctype: str = "asymptotics"
    #: pyhf's ``Model()`` defaults (``pyhf/pdf.py``, ``default_modifier_settings``).
    normsys_interpcode: str = "code4"
    histosys_interpcode: str = "code4p"
    measurement: str | None = None
    gradient_tolerance: float = 1.0
    device: str | None = None
    #: Tolerance of the reference kernel's SciPy optimizer (``None``: pyhf's default).
    scipy_tolerance: float | None = None
    #: ``"root"``: each point's upper limits by a root search (:mod:`pyhf_dask.kernels.limits`).
    upper_limit: str | None = None
    #: Relative tolerance of the root search (pyhf's ``toms748_scan`` default).
    limit_rtol: float = 1e-4
    #: Confidence level of the root-searched limits (CLs = 1 - cl).
    cl: float = 0.95
    #: Limits searched: ``"all"``, ``"observed"`` or ``"expected"`` (the others are NaN).
    curves: str = "all"
    #: Toys per hypothesis and POI value (``calctype="toybased"``).
    ntoys: int = 1000
    #: The user's seed of every toy stream (``calctype="toybased"``).
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for task arguments."""
        data = self._asdict()
        data["poi_values"] = [float(v) for v in self.poi_values]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitOptions:
        """The options of a plain dict: missing keys take the defaults, unknown keys are refused.

        The one place where fit options get defaults: kernels receive the complete
        :meth:`to_dict` form from :func:`fit_chunk` and index it without defaults.

        Raises:
            InvalidOption: a key that is not a field of :class:`FitOptions` (one line).

        Example:
            >>> FitOptions.from_dict({"poi_values": [2.0], "test_stat": "q"}).test_stat
            'q'
            >>> FitOptions.from_dict({"poi_value": 2.0})
            Traceback (most recent call last):
            ...
            pyhf_dask.exceptions.InvalidOption: unknown fit option(s) 'poi_value' (known: ...)
        """
        unknown = sorted(set(data) - set(cls._fields))
        if unknown:
            names = ", ".join(map(repr, unknown))
            msg = f"unknown fit option(s) {names} (known: {', '.join(cls._fields)})"
            raise InvalidOption(msg)
        values = dict(data)
        if "poi_values" in values:
            values["poi_values"] = tuple(float(v) for v in values["poi_values"])
        return cls(**values)


def resolve_kernel(name: str | None) -> str:
    """Resolve ``"auto"``/``None`` to ``"jax"`` when JAX is installed, else ``"pyhf"``.

    Example:
        >>> resolve_kernel("pyhf")
        'pyhf'
    """
    from pyhf_dask import config

    name = config.resolve(name, "kernel")
    if name == "auto":
        have_jax = importlib.util.find_spec("jax") is not None
        have_kernel = importlib.util.find_spec("pyhf_dask.kernels.jax_kernel") is not None
        return "jax" if have_jax and have_kernel else "pyhf"
    if name not in KERNELS:
        msg = f"unknown kernel {name!r} (choose from: auto, {', '.join(KERNELS)})"
        raise InvalidOption(msg)
    return str(name)


def get_kernel(name: str) -> Kernel:
    """The kernel function registered under ``name``."""
    if name not in KERNELS:
        msg = f"unknown kernel {name!r} (choose from: {', '.join(KERNELS)})"
        raise InvalidOption(msg)
    module, _, func = KERNELS[name].partition(":")
    if name == "jax":
        from pyhf_dask._optional import require

        require("jax", "jax")
    kernel: Kernel = getattr(importlib.import_module(module), func)
    return kernel


def empty_result(
    n_points: int, n_poi: int, *, limits: bool = False, toys: bool = False
) -> dict[str, np.ndarray]:
    """A result of ``n_points`` points, all NaN and ``"failed"``, to be filled in.

    ``limits``: with the :data:`LIMIT_FIELDS` of ``upper_limit="root"`` (NaN, ``failed``).
    ``toys``: with the :data:`TOY_FIELDS` of ``calctype="toybased"`` (NaN, counts -1).
    """
    out = {
        "CLs_obs": np.full((n_points, n_poi), np.nan),
        "CLs_exp": np.full((n_points, n_poi, len(BAND)), np.nan),
        "status": np.full(n_points, "failed", dtype=FIELDS["status"][0]),
        "message": np.full(n_points, "", dtype=object),
        "fit_time": np.full(n_points, np.nan),
    }
    if limits:
        out["upper_limit_obs"] = np.full(n_points, np.nan)
        out["upper_limit_exp"] = np.full((n_points, len(BAND)), np.nan)
        out["limit_status"] = np.full(n_points, LIMIT_STATUS.index("failed"), dtype=np.int8)
    if toys:
        for name, (dtype, _) in TOY_FIELDS.items():
            fill = -1 if dtype == "int64" else np.nan
            out[name] = np.full((n_points, n_poi), fill, dtype=dtype)
    return out


def fit_chunk(
    kernel: str,
    workspace: dict[str, Any],
    patches: Sequence[Patch] | FunctionPatches,
    options: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Worker entry point: fit one chunk of points with the named kernel.

    Takes and returns only plain data, so it can run in any process of any executor.
    ``options`` is normalised through :meth:`FitOptions.from_dict` once, here: kernels
    get every key (defaults from :class:`FitOptions` only) and index it without defaults.
    A kernel that raises for the whole chunk marks every point of the chunk failed.

    Raises:
        InvalidOption: ``options`` has a key that is not a fit option.

    Example:
        >>> from pyhf_dask.grid import simple_workspace, signal_patch
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> out = fit_chunk("pyhf", ws, [signal_patch([12.0, 11.0])], FitOptions().to_dict())
        >>> out["status"].tolist()
        ['converged']
    """
    complete = FitOptions.from_dict(options).to_dict()
    chunk = materialize(patches)
    n_poi = len(complete["poi_values"])
    try:
        func = _toy_kernel(kernel) if complete["calctype"] == "toybased" else get_kernel(kernel)
        return _no_silent_nan(func(workspace, chunk, complete))
    except Exception as exc:  # a kernel bug or a broken worker must not lose the chunk
        result = empty_result(
            len(chunk),
            n_poi,
            limits=complete["upper_limit"] == "root",
            toys=complete["calctype"] == "toybased",
        )
        result["message"][:] = f"kernel {kernel!r} failed on the chunk: {type(exc).__name__}: {exc}"
        return result


def _toy_kernel(name: str) -> Kernel:
    """The toy-based calculator of kernel ``name`` (:data:`TOY_KERNELS`)."""
    if name not in TOY_KERNELS:
        msg = f"toy-based CLs need one of the kernels {', '.join(TOY_KERNELS)}, not {name!r}"
        raise InvalidOption(msg)
    get_kernel(name)  # its optional dependencies
    module, _, func = TOY_KERNELS[name].partition(":")
    kernel: Kernel = getattr(importlib.import_module(module), func)
    return kernel


def _no_silent_nan(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mark failed any point a kernel called good but whose CLs are not all finite.

    pyhf's ``hypotest`` can return ``nan`` for the observed CLs of a point whose fits all
    reported success (RegionB ``sbottom_1000_131_1`` with SciPy's default tolerance).
    """
    finite = np.isfinite(result["CLs_obs"]).all(axis=1) & np.isfinite(result["CLs_exp"]).all(
        axis=(1, 2)
    )
    bad = np.flatnonzero((result["status"] != "failed") & ~finite)
    for i in bad:
        result["message"][i] = (
            f"non-finite CLs (CLs_obs={result['CLs_obs'][i].tolist()}) although the fits "
            f"reported success: {result['message'][i]}"
        )
        result["status"][i] = "failed"
        result["CLs_obs"][i] = np.nan
        result["CLs_exp"][i] = np.nan
    return result
