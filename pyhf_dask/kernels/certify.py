"""Certificates of a minimum found by another optimizer: KKT conditions and a second mode.

The reference kernel keeps pyhf's own fits and judges them with these: the first-order
conditions of a bounded minimum measured with one-sided differences (:func:`kkt_residual`,
right at interpolation kinks), and a search for a lower mode from the mirrored parameters
(:func:`lower_mode`), for likelihoods that are multimodal in a nuisance parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MODE_TOLERANCE", "PROBE_ITERATIONS", "kkt_residual", "lower_mode"]

#: -2 log L by which another mode must lie lower to make a fit a local minimum.
MODE_TOLERANCE = 1e-3
#: Iterations of the mirrored probe: any point it reaches below the fit is the evidence,
#: so it need not converge (each iteration costs a finite-difference gradient).
PROBE_ITERATIONS = 15


def _value(func: Any, point: np.ndarray, do_grad: bool) -> float:
    out = func(point)
    return float(np.asarray(out[0] if do_grad else out).ravel()[0])


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
        return _value(func, point, do_grad)

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


def lower_mode(
    func: Any,
    x: np.ndarray,
    value: float,
    bounds: Any,
    fixed: list[int],
    *,
    do_grad: bool = False,
) -> float | None:
    """``-2 log L`` of a lower mode than ``x``'s, found from the mirrored start, or ``None``.

    Nuisance parameters with bounds symmetric about 0 (normsys, histosys) are mirrored
    (``alpha -> -alpha``, pushed 0.3 further so that a fit sitting at 0 moves off), and a
    bounded L-BFGS-B minimisation starts there with the fixed parameters held. A likelihood
    with two modes in a nuisance parameter (a histosys whose variations both lie below the
    nominal, a concave kink) shows the other mode this way. The probe runs a few
    iterations only: a lower point it reaches is the evidence, whether or not it converged.

    Example:
        >>> f = lambda x: float(min((x[0] - 1.0) ** 2, (x[0] + 1.0) ** 2 - 0.5))
        >>> round(lower_mode(f, np.array([1.0]), 0.0, [(-5.0, 5.0)], []), 6)
        -0.5
        >>> lower_mode(f, np.array([-1.0]), -0.5, [(-5.0, 5.0)], []) is None
        True
    """
    import scipy.optimize

    x = np.asarray(x, dtype=np.float64)
    if bounds is None:
        return None
    b = np.asarray(bounds, dtype=np.float64)
    symmetric = np.isclose(b[:, 0], -b[:, 1]) & (b[:, 1] > 0)
    symmetric[fixed] = False
    if not symmetric.any():
        return None
    start = x.copy()
    push = np.where(x[symmetric] >= 0, 1.0, -1.0)
    start[symmetric] = np.clip(-x[symmetric] - 0.3 * push, b[symmetric, 0], b[symmetric, 1])
    box = [(float(lo), float(hi)) for lo, hi in b]
    for j in fixed:
        box[j] = (float(x[j]), float(x[j]))
    try:
        res = scipy.optimize.minimize(
            lambda p: _value(func, p, do_grad),
            start,
            method="L-BFGS-B",
            bounds=box,
            options={"maxiter": PROBE_ITERATIONS},
        )
    except (ValueError, FloatingPointError):
        return None
    found = float(res.fun)
    return found if np.isfinite(found) and found < value - MODE_TOLERANCE else None
