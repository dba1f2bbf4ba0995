"""The reference kernel: ``pyhf.infer.hypotest`` point by point (NumPy backend, SciPy).

Besides calling pyhf, it records every fit the hypothesis test makes and certifies each
one itself, whatever the optimizer's flag says: the largest violation of the first-order
conditions of a bounded minimum, measured with one-sided differences so that kinks of
``code0``/``code1`` interpolation are judged right (:func:`kkt_residual`), must be below
``gradient_tolerance``. pyhf's SciPy fits can report success after a single iteration far
from the minimum; such POI values are NaN with what the optimizer did, never returned as a
silent number, and the point is ``"partial"`` (some POI values certified) or ``"failed"``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from pyhf_dask.grid import Patch
from pyhf_dask.kernels import empty_result

__all__ = ["FitRecord", "build_model", "hypotest_chunk", "kkt_residual"]

log = logging.getLogger(__name__)


class FitRecord:
    """What one minimisation did: success flag, iterations, message, projected gradient."""

    __slots__ = ("gradient", "message", "n_iter", "success")

    def __init__(self, success: bool, n_iter: int, message: str, gradient: float) -> None:
        self.success = success
        self.n_iter = n_iter
        self.message = message
        self.gradient = gradient

    def describe(self) -> str:
        """One-line summary of the fit: flag, iterations, KKT residual, optimizer message."""
        state = "reported success" if self.success else "failed"
        return (
            f"optimizer {state} after {self.n_iter} iterations with KKT residual "
            f"{self.gradient:.3g} of -2lnL (one-sided at kinks; {self.message})"
        )


def kkt_residual(
    func: Any,
    x: np.ndarray,
    bounds: Any,
    fixed: list[int],
    *,
    do_grad: bool = False,
    step: float = 1e-6,
) -> float:
    """Largest violation of the first-order conditions of a bounded minimum, kinks included.

    For every parameter that is not fixed, one-sided differences of the objective give the
    slope to the right (``g_plus``) and to the left (``g_minus``); at a minimum no side
    descends: ``g_plus >= 0`` unless at the upper bound, ``g_minus <= 0`` unless at the
    lower bound. The residual is ``max(-g_plus, g_minus, 0)`` over the parameters: the
    absolute gradient where the objective is smooth, and 0 at a kink whose one-sided
    derivatives bracket 0 (where a two-sided difference would report the jump).

    Example:
        >>> f = lambda x: abs(x[0]) + (x[1] - 1.0) ** 2
        >>> round(kkt_residual(f, np.array([0.0, 1.0]), [(-5, 5), (-5, 5)], []), 4)
        0.0
        >>> round(kkt_residual(f, np.array([0.2, 1.0]), [(-5, 5), (-5, 5)], []), 4)
        1.0
    """

    def value(point: np.ndarray) -> float:
        out = func(point)
        return float(np.asarray(out[0] if do_grad else out))

    x = np.asarray(x, dtype=np.float64)
    b = np.asarray(bounds, dtype=np.float64) if bounds is not None else None
    f0 = value(x)
    worst = 0.0
    for j in range(x.size):
        if j in fixed:
            continue
        h = step * max(1.0, abs(x[j]))
        lo = -np.inf if b is None else b[j, 0]
        hi = np.inf if b is None else b[j, 1]
        if x[j] + h <= hi:
            right = x.copy()
            right[j] += h
            worst = max(worst, -(value(right) - f0) / h)
        if x[j] - h >= lo:
            left = x.copy()
            left[j] -= h
            worst = max(worst, (f0 - value(left)) / h)
    return worst if np.isfinite(worst) else float("inf")


_LOCAL = threading.local()
_OPTIMIZERS: dict[float | None, Any] = {}


def _records() -> list[FitRecord]:
    """This thread's fit records (pyhf's optimizer is process-global, threads are not)."""
    if not hasattr(_LOCAL, "records"):
        _LOCAL.records = []
    records: list[FitRecord] = _LOCAL.records
    return records


def _use_recording_optimizer(tolerance: float | None) -> None:
    """Make pyhf's backend NumPy with the recording SciPy optimizer (one per tolerance)."""
    import pyhf

    if tolerance not in _OPTIMIZERS:
        _OPTIMIZERS[tolerance] = _recording_optimizer(tolerance)
    wanted = _OPTIMIZERS[tolerance]
    tensorlib, optimizer = pyhf.get_backend()
    if tensorlib.name != "numpy" or optimizer is not wanted:
        pyhf.set_backend("numpy", wanted)


def _recording_optimizer(tolerance: float | None) -> Any:
    from pyhf.optimize.opt_scipy import scipy_optimizer

    class RecordingOptimizer(scipy_optimizer):
        """pyhf's SciPy optimizer that keeps a record of every minimisation."""

        def _minimize(
            self, minimizer, func, x0, do_grad=False, bounds=None, fixed_vals=None, options=None
        ) -> Any:
            result = super()._minimize(
                minimizer,
                func,
                x0,
                do_grad=do_grad,
                bounds=bounds,
                fixed_vals=fixed_vals,
                options=options or {},
            )
            _records().append(
                FitRecord(
                    bool(result.success),
                    int(getattr(result, "nit", -1)),
                    str(result.message),
                    kkt_residual(
                        func,
                        result.x,
                        bounds,
                        [int(i) for i, _ in fixed_vals or []],
                        do_grad=do_grad,
                    ),
                )
            )
            return result

    return RecordingOptimizer(tolerance=tolerance)


def build_model(workspace: dict[str, Any], patch: Patch, options: dict[str, Any]) -> Any:
    """Apply ``patch`` and return ``(model, data)`` with the options' interpolation codes."""
    import jsonpatch
    import pyhf

    spec = jsonpatch.apply_patch(workspace, patch)
    ws = pyhf.Workspace(spec, validate=False)
    model = ws.model(
        measurement_name=options.get("measurement"),
        modifier_settings={
            "normsys": {"interpcode": options["normsys_interpcode"]},
            "histosys": {"interpcode": options["histosys_interpcode"]},
        },
    )
    return model, ws.data(model)


def hypotest_chunk(
    workspace: dict[str, Any], patches: list[Patch], options: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Run ``pyhf.infer.hypotest`` for every point and POI value of a chunk.

    Args:
        workspace: background-only workspace spec.
        patches: one jsonpatch per point.
        options: :meth:`pyhf_dask.kernels.FitOptions.to_dict` output.

    Returns:
        The fields of :data:`pyhf_dask.kernels.FIELDS` as NumPy arrays.
    """
    import pyhf

    poi_values = list(options["poi_values"])
    tolerance = float(options.get("gradient_tolerance", 1.0))
    out = empty_result(len(patches), len(poi_values))
    records = _records()
    _use_recording_optimizer(options.get("scipy_tolerance"))
    for i, patch in enumerate(patches):
        start = time.perf_counter()
        records.clear()
        try:
            model, data = build_model(workspace, patch, options)
            bad: list[tuple[float, FitRecord]] = []
            ok = np.zeros(len(poi_values), dtype=bool)
            for j, poi in enumerate(poi_values):
                first = len(records)
                # a degenerate point gives 0/0 inside pyhf: the NaN is reported per point
                # (see pyhf_dask.kernels.fit_chunk), not raised or printed as a warning
                with np.errstate(divide="ignore", invalid="ignore"):
                    obs, exp = pyhf.infer.hypotest(
                        poi,
                        data,
                        model,
                        test_stat=options["test_stat"],
                        calctype=options["calctype"],
                        return_expected_set=True,
                    )
                wrong = [r for r in records[first:] if not r.gradient <= tolerance]
                bad += [(poi, r) for r in wrong]
                ok[j] = not wrong
                if ok[j]:
                    out["CLs_obs"][i, j] = float(obs)
                    out["CLs_exp"][i, j] = [float(e) for e in exp]
            iterations = sum(r.n_iter for r in records)
            if ok.all():
                out["status"][i] = "converged"
                out["message"][i] = f"{len(records)} fits, {iterations} iterations"
            else:
                out["status"][i] = "partial" if ok.any() else "failed"
                poi, record = bad[0]
                out["message"][i] = (
                    f"{len(bad)} of {len(records)} fits not certified ({int((~ok).sum())} "
                    f"of {len(ok)} POI values); first, at POI={poi:g}: {record.describe()}"
                )
        except Exception as exc:  # a failing fit is recorded, the scan goes on
            out["CLs_obs"][i] = np.nan
            out["CLs_exp"][i] = np.nan
            detail = "; ".join(r.describe() for r in records if not r.success)
            out["message"][i] = f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else "")
            log.debug("point %d failed", i, exc_info=True)
        out["fit_time"][i] = time.perf_counter() - start
    return out
