"""Certificates of a minimum found by another optimizer: KKT conditions, kinks, a second mode.

The reference kernel keeps pyhf's own fits and judges them with these: the first-order
conditions of a bounded minimum measured with one-sided differences (:func:`kkt_residual`,
:func:`kkt_violations`, right at interpolation kinks); for a fit that stopped *near* a kink,
where a one-sided difference of step ``h`` straddles the kink or measures the slope of the
wrong side, the ``-2 log L`` that bounded moves onto and around the kink could still gain
(:func:`kink_gain`); and a search for a lower mode from the mirrored parameters
(:func:`lower_mode`), for likelihoods that are multimodal in a nuisance parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "KINK_GAIN_TOLERANCE",
    "KINK_RADIUS",
    "MODE_TOLERANCE",
    "PROBE_ITERATIONS",
    "kink_gain",
    "kkt_residual",
    "kkt_violations",
    "lower_mode",
]

#: -2 log L by which another mode must lie lower to make a fit a local minimum.
MODE_TOLERANCE = 1e-3
#: Iterations of the mirrored probe: any point it reaches below the fit is the evidence,
#: so it need not converge (each iteration costs a finite-difference gradient).
PROBE_ITERATIONS = 15
#: -2 log L that bounded moves near a kink may still gain for a fit to count as a minimum
#: there (:func:`kink_gain`). SciPy's SLSQP stops within about 1e-6 of a kink, where the
#: one-sided slopes of a V-shaped ``code0`` histosys are of order 1-20: the fit is then
#: 1e-6-1e-5 above the kink, which moves CLs by less than the slope times that (and the
#: five fits of a hypotest sit at the same kink, so the shifts largely cancel in ``q``).
KINK_GAIN_TOLERANCE = 1e-4
#: Distance from a kink (at 0 of a kinked nuisance parameter) within which a parameter's
#: one-sided slopes are judged by the gain of moving it (:func:`kink_gain`), not alone.
KINK_RADIUS = 1e-2


def _value(func: Any, point: np.ndarray, do_grad: bool) -> float:
    out = func(point)
    return float(np.asarray(out[0] if do_grad else out).ravel()[0])


def kkt_violations(
    func: Any,
    x: np.ndarray,
    bounds: Any,
    fixed: list[int],
    *,
    do_grad: bool = False,
    step: float = 1e-6,
) -> np.ndarray:
    """Violation of the first-order conditions of a bounded minimum, one per parameter.

    For every parameter that is not fixed, one-sided differences of the objective give the
    slope to the right (``g_plus``) and to the left (``g_minus``); at a minimum no side
    descends: ``g_plus >= 0`` unless at the upper bound, ``g_minus <= 0`` unless at the
    lower bound. The violation is ``max(-g_plus, g_minus, 0)``: the absolute gradient where
    the objective is smooth, and 0 at a kink whose one-sided derivatives bracket 0 (where a
    two-sided difference would report the jump); ``inf`` where the objective is not finite;
    0 for fixed parameters.

    Example:
        >>> f = lambda x: abs(x[0]) + (x[1] - 1.0) ** 2
        >>> kkt_violations(f, np.array([0.2, 1.0]), [(-5, 5), (-5, 5)], []).round(4)
        array([1., 0.])
    """

    def value(point: np.ndarray) -> float:
        return _value(func, point, do_grad)

    x = np.asarray(x, dtype=np.float64)
    b = np.asarray(bounds, dtype=np.float64) if bounds is not None else None
    f0 = value(x)
    out = np.zeros(x.size)
    for j in range(x.size):
        if j in fixed:
            continue
        h = step * max(1.0, abs(x[j]))
        lo = -np.inf if b is None else b[j, 0]
        hi = np.inf if b is None else b[j, 1]
        worst = 0.0
        if x[j] + h <= hi:
            right = x.copy()
            right[j] += h
            worst = max(worst, -(value(right) - f0) / h)
        if x[j] - h >= lo:
            left = x.copy()
            left[j] -= h
            worst = max(worst, (f0 - value(left)) / h)
        out[j] = worst if np.isfinite(worst) else np.inf
    return out


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

    The largest of :func:`kkt_violations`: the absolute gradient where the objective is
    smooth, and 0 at a kink whose one-sided derivatives bracket 0.

    Example:
        >>> f = lambda x: abs(x[0]) + (x[1] - 1.0) ** 2
        >>> round(kkt_residual(f, np.array([0.0, 1.0]), [(-5, 5), (-5, 5)], []), 4)
        0.0
        >>> round(kkt_residual(f, np.array([0.2, 1.0]), [(-5, 5), (-5, 5)], []), 4)
        1.0
    """
    violations = kkt_violations(func, x, bounds, fixed, do_grad=do_grad, step=step)
    worst = float(violations.max(initial=0.0))
    return worst if np.isfinite(worst) else float("inf")


def kink_gain(
    func: Any,
    x: np.ndarray,
    bounds: Any,
    fixed: list[int],
    coords: list[int],
    *,
    do_grad: bool = False,
    reach: float = 10 * KINK_RADIUS,
) -> float:
    """``-2 log L`` that bounded moves of ``coords`` around their kinks at 0 still gain.

    A fit that stopped next to a kink has one-sided slopes that say little: a difference
    of step ``h`` at a distance below ``h`` straddles the kink, and a fit ``d`` off a V's
    tip measures the slope of one arm, while all it could gain is about ``slope * d``. So
    the fit is judged by what it could still gain: from ``x``, each coordinate of
    ``coords`` is stepped onto its kink (0, within its bounds) and searched along both
    sides (a bounded 1-D minimisation on ``[x_j - reach, x_j]`` and ``[x_j, x_j + reach]``);
    all of them are stepped onto the kink together and to their best 1-D positions
    together; and short bounded L-BFGS-B runs (:data:`PROBE_ITERATIONS`, fixed parameters
    held) start from the lowest point found, so that the other parameters follow: first
    with ``coords`` held there, then with them free. Every
    value compared is the objective itself, so a positive gain is a point below the fit.

    Args:
        func: the objective (``-2 log L``) of the full parameter vector, as pyhf passes it.
        x: the fit's parameters.
        bounds: ``(lower, upper)`` per parameter, or ``None``.
        fixed: indices of the parameters held fixed.
        coords: indices of the parameters near a kink to move.
        do_grad: whether ``func`` returns ``(value, gradient)``.
        reach: half-length of each 1-D search.

    Returns:
        ``f(x)`` minus the lowest value reached, at least 0; ``inf`` where ``f(x)`` is not
        finite.

    Example:
        >>> f = lambda p: float(3.0 * abs(p[0]) + 0.5 * p[0] ** 2 + (p[1] - 1.0) ** 2)
        >>> round(kink_gain(f, np.array([1e-6, 1.0]), [(-5, 5), (-5, 5)], [], [0]), 9)
        3e-06
        >>> round(kink_gain(f, np.array([0.3, 1.0]), [(-5, 5), (-5, 5)], [], [0]), 4)
        0.945
    """
    import scipy.optimize

    def value(point: np.ndarray) -> float:
        try:
            out = _value(func, point, do_grad)
        except (ValueError, FloatingPointError):
            return np.inf
        return out if np.isfinite(out) else np.inf

    x = np.asarray(x, dtype=np.float64)
    n = x.size
    b = (
        np.asarray(bounds, dtype=np.float64)
        if bounds is not None
        else np.column_stack([np.full(n, -np.inf), np.full(n, np.inf)])
    )
    f0 = value(x)
    if not np.isfinite(f0):
        return float("inf")
    coords = [int(j) for j in coords if int(j) not in fixed]
    best, best_x = f0, x

    def consider(point: np.ndarray) -> None:
        nonlocal best, best_x
        found = value(point)
        if found < best:
            best, best_x = found, point

    on_kink = x.copy()
    at_best = x.copy()
    for j in coords:
        lo, hi = b[j]
        if lo <= 0.0 <= hi:
            point = x.copy()
            point[j] = 0.0
            consider(point)
            on_kink[j] = 0.0
        side_best, side_t = f0, x[j]
        for a, c in ((max(lo, x[j] - reach), x[j]), (x[j], min(hi, x[j] + reach))):
            if not c > a:
                continue

            def along(t: float, j: int = j) -> float:
                point = x.copy()
                point[j] = t
                return value(point)

            res = scipy.optimize.minimize_scalar(
                along, bounds=(a, c), method="bounded", options={"xatol": 1e-12}
            )
            if float(res.fun) < side_best:
                side_best, side_t = float(res.fun), float(res.x)
        point = x.copy()
        point[j] = side_t
        consider(point)
        at_best[j] = side_t
    consider(on_kink)
    consider(at_best)
    # the other parameters follow, first with the moved ones held where they are best
    # (smooth there: a quasi-Newton step across a kink stalls), then with all of them free
    for held in (coords, []):
        box = [(float(lo), float(hi)) for lo, hi in b]
        for j in [*fixed, *held]:
            box[j] = (float(best_x[j]), float(best_x[j]))
        try:
            res = scipy.optimize.minimize(
                value,
                best_x,
                method="L-BFGS-B",
                bounds=box,
                options={"maxiter": PROBE_ITERATIONS},
            )
        except (ValueError, FloatingPointError):
            continue
        consider(np.asarray(res.x, dtype=np.float64))
    return max(f0 - best, 0.0)


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
