"""The reference kernel: ``pyhf.infer.hypotest`` point by point (NumPy backend, SciPy).

Besides calling pyhf, it records every fit the hypothesis test makes and checks that a fit
which reports success really stopped at a minimum: the largest gradient component of
``-2 log L`` that is not pinned by a bound must be below ``gradient_tolerance``. pyhf's
SciPy fits can report success after a single iteration far from the minimum; those points
are marked failed with what the optimizer did, never returned as a silent number.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from pyhf_dask.grid import Patch
from pyhf_dask.kernels import empty_result

__all__ = ["FitRecord", "build_model", "hypotest_chunk"]

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
        """One-line summary, e.g. ``"success after 1 iterations, |grad| 1.3e+05"``."""
        state = "reported success" if self.success else "failed"
        return (
            f"optimizer {state} after {self.n_iter} iterations with largest free gradient "
            f"{self.gradient:.3g} of -2lnL ({self.message})"
        )


def _projected_gradient(
    result: Any, bounds: Any, fixed_vals: list[tuple[int, float]] | None
) -> float:
    jac = getattr(result, "jac", None)
    if jac is None:
        return float("nan")
    grad = np.array(jac, dtype=np.float64).copy()
    x = np.asarray(result.x, dtype=np.float64)
    if bounds is not None:
        b = np.asarray(bounds, dtype=np.float64)
        at_low = (x - b[:, 0]) <= 1e-6 * (1.0 + np.abs(b[:, 0]))
        at_high = (b[:, 1] - x) <= 1e-6 * (1.0 + np.abs(b[:, 1]))
        grad[at_low & (grad > 0)] = 0.0
        grad[at_high & (grad < 0)] = 0.0
    for index, _ in fixed_vals or []:
        grad[index] = 0.0
    return float(np.max(np.abs(grad))) if grad.size else 0.0


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
                    _projected_gradient(result, bounds, fixed_vals),
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
            for j, poi in enumerate(poi_values):
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
                out["CLs_obs"][i, j] = float(obs)
                out["CLs_exp"][i, j] = [float(e) for e in exp]
            bad = [r for r in records if not r.success or not r.gradient <= tolerance]
            if bad:
                out["CLs_obs"][i] = np.nan
                out["CLs_exp"][i] = np.nan
                out["message"][i] = (
                    f"{len(bad)} of {len(records)} fits did not converge; first: "
                    f"{bad[0].describe()}"
                )
            else:
                out["status"][i] = "converged"
                iterations = sum(r.n_iter for r in records)
                out["message"][i] = f"{len(records)} fits, {iterations} iterations"
        except Exception as exc:  # a failing fit is recorded, the scan goes on
            out["CLs_obs"][i] = np.nan
            out["CLs_exp"][i] = np.nan
            detail = "; ".join(r.describe() for r in records if not r.success)
            out["message"][i] = f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else "")
            log.debug("point %d failed", i, exc_info=True)
        out["fit_time"][i] = time.perf_counter() - start
    return out
