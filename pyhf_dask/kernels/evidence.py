"""What is true of a fit: the evidence behind ``converged``, or why a fit is not certified.

A fit is certified (:mod:`pyhf_dask.kernels.jax_fit`) when its KKT residual is below the
tolerance, the Hessian of its free parameters is positive semi-definite and ``-2 log L``
is finite. When one of these fails, :func:`uncertified_reason` says which, in words a
user can act on, naming the parameters that sit at a bound; :func:`advice` turns the
reasons of a scan into what to try next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyhf_dask.kernels.jax_vector import Stack

__all__ = [
    "advice",
    "disagreement",
    "fit_detail",
    "fit_evidence",
    "parameter_labels",
    "uncertified_reason",
]

#: Parameters named per message at most.
MAX_NAMED = 3


def parameter_labels(names: Sequence[str], sizes: Sequence[int]) -> list[str]:
    """One label per parameter: the set's name, with the component for sets of several.

    Example:
        >>> parameter_labels(["mu", "staterror_CR"], [1, 2])
        ['mu', 'staterror_CR[0]', 'staterror_CR[1]']
    """
    out: list[str] = []
    for name, size in zip(names, sizes, strict=True):
        out += [name] if size == 1 else [f"{name}[{k}]" for k in range(size)]
    return out


def _named(index: np.ndarray, labels: Sequence[str] | None) -> str:
    def one(j: int) -> str:
        return labels[j] if labels is not None and j < len(labels) else f"parameter {j}"

    text = ", ".join(one(int(j)) for j in index[:MAX_NAMED])
    return text + (f" and {len(index) - MAX_NAMED} more" if len(index) > MAX_NAMED else "")


def uncertified_reason(
    theta: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    fixed: np.ndarray,
    *,
    value: float,
    pgrad: float,
    psd: bool,
    gtol: float,
    labels: Sequence[str] | None = None,
) -> str:
    """Why a fit ending at ``theta`` is not certified, in one phrase.

    Args:
        theta, lower, upper, fixed: the fit's parameters, bounds and fixed mask.
        value: ``-2 log L`` at ``theta``.
        pgrad: the KKT residual (projected gradient, one-sided at kinks).
        psd: whether the Hessian of the free parameters is positive semi-definite.
        gtol: the KKT tolerance.
        labels: parameter names (default: positions).

    Example:
        >>> why = uncertified_reason(np.array([0.0, 2.0]), np.array([0.0, -5.0]),
        ...                          np.array([10.0, 5.0]), np.array([False, False]),
        ...                          value=3.0, pgrad=0.2, psd=False, gtol=1e-4,
        ...                          labels=["mu", "alpha"])
        >>> why.split("; ")[1:]
        ['KKT residual 0.2 > 0.0001', 'at a bound: mu']
        >>> uncertified_reason(np.zeros(1), -np.ones(1), np.ones(1), np.zeros(1, bool),
        ...                    value=1.0, pgrad=1e-6, psd=False, gtol=1e-4).split("; ")[1]
        'KKT residual 1e-06 within 0.0001'
    """
    parts = []
    if not np.isfinite(value):
        parts.append("-2lnL is not finite (a non-positive expected yield in some bin)")
    if not psd:
        parts.append("flat or concave direction (free Hessian not positive semi-definite)")
    if not np.isfinite(pgrad) or pgrad > gtol:
        parts.append(f"KKT residual {pgrad:.3g} > {gtol:g}")
    else:
        parts.append(f"KKT residual {pgrad:.3g} within {gtol:g}")
    free = ~np.asarray(fixed, dtype=bool)
    scale = 1e-9 * (1.0 + np.abs(theta))
    at_bound = np.flatnonzero(
        free & ((theta <= lower + scale) | (theta >= upper - scale)) & (lower < upper)
    )
    if at_bound.size:
        parts.append(f"at a bound: {_named(at_bound, labels)}")
    return "; ".join(parts)


def advice(reasons: Sequence[str], *, kinked_codes: bool) -> list[str]:
    """What to try for the uncertified fits of a scan, from their reasons.

    Example:
        >>> advice(["KKT residual 0.3 > 0.0001; at a bound: mu"], kinked_codes=False)[0]
        'parameters at a bound: where a bound is not physical, widen it in the measurement'
    """
    text = " ".join(reasons)
    tips = []
    if "at a bound" in text:
        tips.append(
            "parameters at a bound: where a bound is not physical, widen it in the measurement"
        )
    if "flat or concave" in text:
        tips.append(
            "a flat direction: a parameter the data do not constrain; fix it in the "
            "measurement or check its modifier's variations"
        )
    if "not finite" in text:
        tips.append("a non-positive expected yield: check the samples' nominal and variations")
    if "not a parameter of the model" in text or "not declared in the model" in text:
        tips.append(
            "a patch whose model lacks the POI (no signal) has nothing to test: leave it out"
        )
    if kinked_codes:
        tips.append(
            "code1/code0 interpolation has kinks at 0: the smooth defaults code4/code4p "
            "(pyhf's) avoid them"
        )
    if not tips and "JAX:" in text:
        tips.append("re-run the failed points with --kernel pyhf (the reference kernel)")
    if not tips:
        tips.append("read each failed point's 'message' for what its fits found")
    return tips


def fit_detail(n_fits: int, iters: int, kinks: int, restarts: int, *, disagreed: str = "") -> str:
    """What the fits of a point did, for its ``message``.

    Example:
        >>> fit_detail(5, 80, 0, 7, disagreed="starts disagreed: POI=1 on data by 0.148")
        '5 fits, 80 Newton iterations, 7 second starts; starts disagreed: POI=1 on data by 0.148'
    """
    detail = f"{n_fits} fits, {iters} Newton iterations"
    if kinks:
        detail += f", up to {kinks} parameters held at a kink"
    if restarts:
        detail += f", {restarts} second starts"
    if disagreed:
        detail += f"; {disagreed}"
    return detail


def disagreement(spread: Sequence[float], names: Sequence[str], tolerance: float = 1e-4) -> str:
    """Which fits of a point found different minima from different starts, and how far apart.

    Args:
        spread: per fit, the highest certified ``-2 log L`` of its starts minus the lowest
            (:func:`~pyhf_dask.kernels.jax_starts.fit_family`; the lowest is kept).
        names: the fits' names.
        tolerance: spreads up to this are one minimum found twice (rounding).

    Example:
        >>> disagreement([0.0, 0.148, 1e-9], ["free", "POI=1 on data", "POI=1 on Asimov"])
        'starts disagreed: POI=1 on data by 0.148 in -2lnL (the lowest kept)'
        >>> disagreement([0.0, 0.0], ["free", "POI=1 on data"])
        ''
    """
    parts = [
        f"{name} by {float(s):.3g}"
        for name, s in zip(names, spread, strict=True)
        if np.isfinite(s) and s > tolerance
    ]
    if not parts:
        return ""
    return f"starts disagreed: {', '.join(parts)} in -2lnL (the lowest kept)"


def fit_evidence(res: dict[str, np.ndarray], stack: Stack, row: int, k: int, gtol: float) -> str:
    """Why fit ``k`` of point ``row`` of a JAX batch is not certified (``res``: the fits of
    :func:`~pyhf_dask.kernels.jax_kernel.hypotest_chunk`'s groups, ``stack``: their
    stacked model arrays)."""
    n_fit = res["converged"].shape[1]
    free_fits = (1, 1 + (n_fit - 1) // 2)  # "free on data" and "free on Asimov"
    if res["local"][row, k]:
        return "a local minimum: the free fit ends above a fixed-POI fit of the same data"
    fixed = np.asarray(stack.arrays["fixed"][row], dtype=bool).copy()
    if k not in free_fits:
        fixed[stack.poi[row]] = True
    labels = stack.labels[int(stack.group[row])] if len(stack.labels) else None
    return uncertified_reason(
        res["theta"][row, k],
        stack.arrays["lower"][row],
        stack.arrays["upper"][row],
        fixed,
        value=float(res["value"][row, k]),
        pgrad=float(res["pgrad"][row, k]),
        psd=bool(res["psd"][row, k]),
        gtol=gtol,
        labels=labels,
    )
