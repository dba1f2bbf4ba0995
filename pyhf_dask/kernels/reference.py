"""The reference kernel: ``pyhf.infer.hypotest`` point by point (NumPy backend, SciPy).

Besides calling pyhf, it records every fit the hypothesis test makes and certifies each
one itself, whatever the optimizer's flag says: the largest violation of the first-order
conditions of a bounded minimum, measured with one-sided differences so that kinks of
``code0``/``code1`` interpolation are judged right (:func:`kkt_residual`), must be below
``gradient_tolerance``. A fit that stopped near a kink (a ``code0`` histosys or ``code1``
normsys parameter within :data:`~pyhf_dask.kernels.certify.KINK_RADIUS` of 0) whose only
violations are in such parameters is judged instead by the ``-2 log L`` that bounded moves
onto and around the kink could still gain (:func:`~pyhf_dask.kernels.certify.kink_gain`):
SLSQP stops about 1e-6 off a V-shaped kink, where a one-sided slope of the arm is large
but the fit is right. pyhf's SciPy fits can report success after a single iteration far
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
from pyhf_dask.kernels.certify import (
    KINK_GAIN_TOLERANCE,
    KINK_RADIUS,
    kink_gain,
    kkt_violations,
    lower_mode,
)

__all__ = ["FitRecord", "build_model", "hypotest_chunk", "kinked_parameters"]

log = logging.getLogger(__name__)


class FitRecord:
    """What one minimisation did: success flag, iterations, message, projected gradient.

    ``gain`` is the ``-2 log L`` that bounded moves near a kink could still gain, measured
    only for a fit whose KKT violations all lie in parameters next to a kink (else
    ``None``); a local-minimum verdict sets ``gradient`` to ``inf``.
    """

    __slots__ = ("gain", "gradient", "message", "n_iter", "success", "value")

    def __init__(
        self,
        success: bool,
        n_iter: int,
        message: str,
        gradient: float,
        value: float = np.nan,
        gain: float | None = None,
    ) -> None:
        self.success = success
        self.n_iter = n_iter
        self.message = message
        self.gradient = gradient
        self.value = value
        self.gain = gain

    def certified(self, tolerance: float) -> bool:
        """Whether the fit is a minimum: KKT residual, or at a kink the gain, small enough.

        Example:
            >>> FitRecord(True, 3, "ok", 2.46, gain=3e-6).certified(1e-4)
            True
            >>> FitRecord(True, 3, "ok", 2.46, gain=0.1).certified(1e-4)
            False
        """
        if self.gradient <= tolerance:
            return True
        return bool(
            np.isfinite(self.gradient)
            and self.gain is not None
            and self.gain <= KINK_GAIN_TOLERANCE
        )

    def at_kink(self, tolerance: float) -> bool:
        """Whether the fit is certified by its gain at a kink, not by the KKT residual."""
        return self.certified(tolerance) and not self.gradient <= tolerance

    def describe(self) -> str:
        """One-line summary of the fit: flag, iterations, KKT residual, optimizer message."""
        state = "reported success" if self.success else "failed"
        gain = (
            ""
            if self.gain is None or not np.isfinite(self.gradient)
            else f"; bounded moves near the kink gain {self.gain:.3g} of -2lnL"
        )
        return (
            f"optimizer {state} after {self.n_iter} iterations with KKT residual "
            f"{self.gradient:.3g} of -2lnL (one-sided at kinks{gain}; {self.message})"
        )


#: -2 log L by which pyhf's free fit may end above a fixed-POI fit of the same data.
CONSISTENCY_TOLERANCE = 1e-3


def _mark_local_minima(fits: list[FitRecord]) -> None:
    """Mark the free fits of one hypotest that ended above a fixed-POI fit of the same data.

    pyhf 0.7.6's asymptotic ``hypotest`` fits, in order: POI = mu on the data, free on the
    data, POI = 0 on the data (Asimov parameters), POI = mu on the Asimov data, free on the
    Asimov data. A free fit is the lowest fit of its data at a global minimum.
    """
    if len(fits) != 5:
        return
    data_fixed = min(fits[0].value, fits[2].value)
    for free, fixed in ((fits[1], data_fixed), (fits[4], fits[3].value)):
        if free.value > fixed + CONSISTENCY_TOLERANCE:
            free.gradient = float("inf")
            free.message = (
                f"a local minimum: the free fit ends {free.value - fixed:.3g} above a "
                "fixed-POI fit of the same data"
            )


_LOCAL = threading.local()
_OPTIMIZERS: dict[float | None, Any] = {}


def _set_kinks(kinks: frozenset[int], tolerance: float) -> None:
    """The kinked parameters of this thread's model and the gradient tolerance it is judged by."""
    _LOCAL.kinks = kinks
    _LOCAL.tolerance = tolerance


def kinked_parameters(model: Any, normsys_code: str, histosys_code: str) -> frozenset[int]:
    """Indices of the parameters with a kink at 0 under the codes (code1 normsys, code0 histosys).

    Example:
        >>> import pyhf
        >>> model = pyhf.simplemodels.correlated_background([5.0], [50.0], [55.0], [45.0])
        >>> sorted(kinked_parameters(model, "code4", "code0"))
        [0]
        >>> sorted(kinked_parameters(model, "code4", "code4p"))
        []
    """
    kinked = {"normsys"} if normsys_code == "code1" else set()
    if histosys_code == "code0":
        kinked.add("histosys")
    out: set[int] = set()
    for name, kind in model.config.modifiers:
        if kind in kinked:
            piece = model.config.par_slice(name)
            out.update(range(piece.start, piece.stop))
    return frozenset(out)


def _judge_at_kinks(
    func: Any, x: np.ndarray, bounds: Any, fixed: list[int], do_grad: bool
) -> tuple[float, float | None]:
    """KKT residual of a fit, and the gain at kinks where every violation sits next to one."""
    violations = kkt_violations(func, x, bounds, fixed, do_grad=do_grad)
    residual = float(violations.max(initial=0.0))
    tolerance = getattr(_LOCAL, "tolerance", np.inf)
    kinks: frozenset[int] = getattr(_LOCAL, "kinks", frozenset())
    if not np.isfinite(residual):
        return float("inf"), None
    offending = [int(j) for j in np.flatnonzero(violations > tolerance)]
    if not offending or not all(j in kinks and abs(x[j]) <= KINK_RADIUS for j in offending):
        return residual, None
    return residual, kink_gain(func, x, bounds, fixed, offending, do_grad=do_grad)


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
            fixed = [int(i) for i, _ in fixed_vals or []]
            value = float(np.asarray(result.fun).ravel()[0])
            residual, gain = _judge_at_kinks(func, result.x, bounds, fixed, do_grad)
            record = FitRecord(
                bool(result.success),
                int(getattr(result, "nit", -1)),
                str(result.message),
                residual,
                value,
                gain,
            )
            lower = lower_mode(func, result.x, value, bounds, fixed, do_grad=do_grad)
            if lower is not None:
                record.gradient = float("inf")
                record.message = (
                    f"a local minimum: a mirrored start reaches -2lnL {value - lower:.3g} lower"
                )
            _records().append(record)
            return result

    return RecordingOptimizer(tolerance=tolerance)


def build_model(workspace: dict[str, Any], patch: Patch, options: dict[str, Any]) -> Any:
    """Apply ``patch`` and return ``(model, data)`` with the options' interpolation codes."""
    import jsonpatch
    import pyhf

    spec = jsonpatch.apply_patch(workspace, patch)
    ws = pyhf.Workspace(spec, validate=False)
    model = ws.model(
        measurement_name=options["measurement"],
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
        options: :meth:`pyhf_dask.kernels.FitOptions.to_dict` output, complete (as
            :func:`pyhf_dask.kernels.fit_chunk` passes it): read without defaults.

    Returns:
        The fields of :data:`pyhf_dask.kernels.FIELDS` as NumPy arrays.
    """
    import pyhf

    poi_values = list(options["poi_values"])
    tolerance = float(options["gradient_tolerance"])
    out = empty_result(len(patches), len(poi_values), limits=options["upper_limit"] == "root")
    records = _records()
    _use_recording_optimizer(options["scipy_tolerance"])
    for i, patch in enumerate(patches):
        start = time.perf_counter()
        records.clear()
        try:
            model, data = build_model(workspace, patch, options)
            _set_kinks(
                kinked_parameters(
                    model, options["normsys_interpcode"], options["histosys_interpcode"]
                ),
                tolerance,
            )
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
                _mark_local_minima(records[first:])
                wrong = [r for r in records[first:] if not r.certified(tolerance)]
                if not wrong and not np.isfinite([float(obs), *map(float, exp)]).all():
                    # pyhf's 0/0 where q_A is 0 (POI = 0 under qtilde, say)
                    wrong = [FitRecord(False, 0, "pyhf returned non-finite CLs", np.nan)]
                bad += [(poi, r) for r in wrong]
                ok[j] = not wrong
                if ok[j]:
                    out["CLs_obs"][i, j] = float(obs)
                    out["CLs_exp"][i, j] = [float(e) for e in exp]
            if options["upper_limit"] == "root" and ok.all():  # pyhf's upper_limit(scan=None)
                from pyhf_dask.kernels.limits import reference_limits

                found = reference_limits(model, data, options, records)
                out["upper_limit_obs"][i], out["upper_limit_exp"][i] = found[0], found[1]
                out["limit_status"][i] = found[2]
                limit_note = f"; {found[3]}"
            else:
                limit_note = ""
            iterations = sum(r.n_iter for r in records)
            at_kink = [r.gain for r in records if r.at_kink(tolerance)]
            kink_note = (
                f"; {len(at_kink)} certified next to a kink by the -2lnL bounded moves "
                f"gain (at most {max(g or 0.0 for g in at_kink):.2g})"
                if at_kink
                else ""
            )
            if ok.all():
                out["status"][i] = "converged"
                out["message"][i] = (
                    f"{len(records)} fits, {iterations} iterations{kink_note}{limit_note}"
                )
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
