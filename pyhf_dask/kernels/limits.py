"""Upper limits by root search: the lockstep bracketing solver and the reference search.

An upper limit at confidence level ``cl`` is the POI where CLs falls to ``alpha = 1 - cl``.
:class:`Lockstep` finds the roots of many curves at once (every point of a chunk, its
observed curve and the five expected ones), one proposed POI value per curve and step, so
that a kernel can fit every step's POI values of all points in one batch.

Method: the Illinois variant of regula falsi, safeguarded by bisection, in a transformed
variable. Asymptotic CLs curves are close to straight lines in ``z = Phi^-1(1 - CLs)``
(observed) and in ``sqrt(q_A)`` (expected: CLs_exp depends on ``sqrt(q_A(mu))`` only, and
``sqrt(q_A)`` is nearly proportional to ``mu``), so a secant step is almost exact and
converges in a few steps. Why not TOMS748 (pyhf's ``toms748_scan``): its inverse cubic
steps need four evaluations per curve before they pay off, and its state machine does not
vectorize simply; on near-linear functions the secant converges as fast, and the Illinois
halving plus bisection after two steps that did not halve the bracket give the same
guarantee (the bracket always holds the root; three steps that do not halve it are
followed by a bisection). Each
proposal is kept ``tol`` inside the bracket, so that once the secant lands next to the
root the next step lands on its other side and the bracket closes to ``2 tol``
(``tol = atol + rtol |x|``, pyhf's ``toms748_scan`` tolerances); the root returned is the
secant through the final bracket.

Example:
    >>> import numpy as np
    >>> f = lambda x: np.array([[x[0, 0] - 0.3, x[0, 1] ** 2 - 2.0]])  # two curves
    >>> s = Lockstep(np.zeros((1, 2)), np.full((1, 2), 4.0), f(np.zeros((1, 2))),
    ...              f(np.full((1, 2), 4.0)), rtol=1e-10)
    >>> while not s.done.all():
    ...     x = s.propose()
    ...     s.update(x, f(np.nan_to_num(x)))
    >>> np.round(s.root, 8).tolist(), s.steps  # the curve x**2 - 2 takes the most steps
    ([[0.3, 1.41421356]], 12)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtri_exp

__all__ = [
    "FAILED",
    "FOUND",
    "ABOVE",
    "BELOW",
    "Lockstep",
    "expected_targets",
    "log_cls",
    "reference_limits",
    "z_of",
]

log = logging.getLogger(__name__)

#: ``limit_status`` values (:data:`pyhf_dask.kernels.LIMIT_STATUS`).
FOUND, ABOVE, BELOW, FAILED = 0, 1, 2, 3
#: The expected band, pyhf's order: +2, +1, 0, -1, -2 standard deviations of the test
#: statistic (band coordinate -2, ..., 2).
BAND_NSIGMA = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
#: |g| used in a secant step (CLs = 1 gives z = -inf).
_CAP = 40.0
#: pyhf's ``toms748_scan`` absolute tolerance.
ATOL = 2e-12


def expected_targets(cl: float) -> np.ndarray:
    """``sqrt(q_A)`` at which each expected CLs (pyhf's band order) equals ``1 - cl``.

    Expected CLs is ``Phi(-(n + s)) / Phi(-n)`` with ``s = sqrt(q_A)``, decreasing in ``s``.

    Example:
        >>> np.round(expected_targets(0.95), 4).tolist()
        [1.0518, 1.412, 1.96, 2.7272, 3.656]
    """
    alpha = np.log(1.0 - cl)

    def f(s: float, n: float) -> float:
        return float(log_ndtr(-(n + s)) - log_ndtr(-n) - alpha)

    return np.array([brentq(f, 0.0, 80.0, args=(n,), xtol=1e-14) for n in BAND_NSIGMA])


def log_cls(q: np.ndarray, q_a: np.ndarray, test_stat: str) -> np.ndarray:
    """``log CLs_obs`` from ``q_mu`` and ``q_mu,A`` (pyhf's asymptotic formulas).

    The same as :func:`pyhf_dask.kernels.asymptotics.cls_from_fits`, elementwise.

    Example:
        >>> round(float(np.exp(log_cls(np.array(4.0), np.array(4.0), "qtilde"))), 4)
        0.0455
    """
    sq, sqa = np.sqrt(q), np.sqrt(q_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        if test_stat == "qtilde":
            t = np.where(sq <= sqa, sq - sqa, (q - q_a) / (2.0 * sqa))
        else:
            t = sq - sqa
        out = log_ndtr(-(t + sqa)) - log_ndtr(-t)
    degenerate = (sqa == 0.0) & (sq > sqa) & (test_stat == "qtilde")
    return np.where(degenerate, -0.5 * q, out)


def z_of(log_value: np.ndarray) -> np.ndarray:
    """``Phi^-1(1 - CLs)`` from ``log CLs`` (``-inf`` at CLs = 1), accurate in far tails."""
    with np.errstate(over="ignore"):
        return -ndtri_exp(np.minimum(log_value, 0.0))


class Lockstep:
    """Illinois regula falsi with bisection, for many increasing functions at once.

    Each curve ``j`` has a bracket ``a < b`` with ``g(a) < 0 < g(b)``; curves without
    one (a NaN end) start done with a NaN root. :meth:`propose` gives the next POI per
    curve (NaN where done), :meth:`update` takes the function values there (NaN: the
    evaluation failed, the curve stops with a NaN root and :attr:`failed` set).

    Args:
        a, b: bracket ends, any shape.
        ga, gb: function values there.
        rtol, atol: the root is within ``atol + rtol |x|`` (pyhf's toms748 criterion).
        max_iter: steps before a curve is given up (:attr:`failed`).
    """

    def __init__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        ga: np.ndarray,
        gb: np.ndarray,
        *,
        rtol: float,
        atol: float = ATOL,
        max_iter: int = 60,
    ) -> None:
        self.a, self.b = np.array(a, dtype=float), np.array(b, dtype=float)
        self.fa, self.fb = np.array(ga, dtype=float), np.array(gb, dtype=float)
        self.ga, self.gb = self.fa.copy(), self.fb.copy()  # Illinois-scaled
        self.rtol, self.atol, self.max_iter = rtol, atol, max_iter
        ok = np.isfinite(self.a) & np.isfinite(self.b) & (self.fa < 0) & (self.fb > 0)
        self.done = ~ok
        self.failed = np.zeros(self.a.shape, dtype=bool)
        self.root = np.full(self.a.shape, np.nan)
        self.side = np.zeros(self.a.shape, dtype=np.int8)
        self.slow = np.zeros(self.a.shape, dtype=np.int64)
        self.width = self.b - self.a
        self.steps = 0
        self._close()

    def _tol(self, x: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(x)

    def _estimate(self) -> np.ndarray:
        """The secant through the bracket, with the true function values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            x = self.a - self.fa * (self.b - self.a) / (self.fb - self.fa)
        mid = 0.5 * (self.a + self.b)
        return np.where(np.isfinite(x), np.clip(x, self.a, self.b), mid)

    def _close(self) -> None:
        est = self._estimate()
        closed = ~self.done & (self.b - self.a <= 2.0 * self._tol(est))
        self.root = np.where(closed, est, self.root)
        self.done |= closed

    def propose(self) -> np.ndarray:
        """The next POI value of each curve (NaN where done)."""
        ga = np.clip(self.ga, -_CAP, _CAP)
        gb = np.clip(self.gb, -_CAP, _CAP)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = self.b - gb * (self.b - self.a) / (gb - ga)
        bisect = ~np.isfinite(x) | (x <= self.a) | (x >= self.b) | (self.slow >= 3)
        x = np.where(bisect, 0.5 * (self.a + self.b), x)
        tol = self._tol(x)
        # a step that would move an end by less than tol moves it by tol instead: next to
        # the root, that lands across it and closes the bracket
        x = np.clip(x, self.a + tol, self.b - tol)
        return np.where(self.done, np.nan, x)

    def update(self, x: np.ndarray, g: np.ndarray) -> None:
        """Take the function values ``g`` at the proposed ``x``."""
        self.steps += 1
        active = ~self.done & np.isfinite(x)
        bad = active & np.isnan(g)
        self.failed |= bad
        self.done |= bad
        active &= ~bad
        exact = active & (g == 0)
        self.root = np.where(exact, x, self.root)
        self.done |= exact
        active &= ~exact
        left, right = active & (g < 0), active & (g > 0)
        # Illinois: an end kept twice in a row has its value halved
        self.gb = np.where(left & (self.side == -1), 0.5 * self.gb, self.gb)
        self.ga = np.where(right & (self.side == 1), 0.5 * self.ga, self.ga)
        self.a = np.where(left, x, self.a)
        self.ga = np.where(left, g, self.ga)
        self.fa = np.where(left, g, self.fa)
        self.b = np.where(right, x, self.b)
        self.gb = np.where(right, g, self.gb)
        self.fb = np.where(right, g, self.fb)
        self.side = np.where(left, -1, np.where(right, 1, self.side)).astype(np.int8)
        width = self.b - self.a
        self.slow = np.where(active, np.where(width > 0.5 * self.width, self.slow + 1, 0), 0)
        self.width = np.where(active, width, self.width)
        self._close()
        if self.steps >= self.max_iter:
            left_over = ~self.done
            self.failed |= left_over
            self.done |= left_over


def reference_limits(
    model: Any, data: Any, options: dict[str, Any], records: list[Any]
) -> tuple[float, list[float], int, str]:
    """One point's upper limits with pyhf: ``upper_limit(data, model, scan=None)``.

    pyhf's search widens the bracket beyond the POI's bounds (``bounds_up *= 2``), where its
    fits refuse to start (``_validate_fit_inputs``), and halves a lower bound of 0 forever.
    So both ends are tested first: a curve with CLs above ``1 - cl`` at the upper bound
    (or below it at the lower) has no root within the bounds and is NaN with the reason;
    when every curve has a root, pyhf's own ``upper_limit(scan=None)`` runs, otherwise
    SciPy's ``toms748`` on the curves that have one, with pyhf's tolerances
    (``atol=2e-12``, ``rtol``: the option ``limit_rtol``).

    Args:
        model, data: the point's pyhf model and data.
        options: complete fit options (``test_stat``, ``calctype``, ``cl``, ``limit_rtol``,
            ``gradient_tolerance``, ``curves``: with ``"observed"`` or ``"expected"`` only
            those curves are searched, by SciPy's toms748 as pyhf's search does).
        records: the reference kernel's fit records, appended to by its optimizer: every
            fit of the search must have a KKT residual within ``gradient_tolerance``.

    Returns:
        ``(observed, expected (5), limit_status, message)``.
    """
    import pyhf
    from scipy.optimize import toms748

    alpha = 1.0 - float(options["cl"])
    rtol = float(options["limit_rtol"])
    kwargs = {"test_stat": options["test_stat"], "calctype": options["calctype"]}
    first = len(records)
    cache: dict[float, np.ndarray] = {}

    def curves(mu: float) -> np.ndarray:
        if mu not in cache:
            with np.errstate(divide="ignore", invalid="ignore"):
                obs, exp = pyhf.infer.hypotest(mu, data, model, return_expected_set=True, **kwargs)
            cache[mu] = np.array([float(obs), *map(float, exp)])
        return cache[mu]

    lo, hi = model.config.suggested_bounds()[model.config.poi_index]
    above = curves(hi) > alpha
    below = curves(lo) < alpha
    limits = np.full(6, np.nan)
    wanted = np.array([options["curves"] != "expected"] + [options["curves"] != "observed"] * 5)
    above &= wanted
    below &= wanted
    has_root = ~above & ~below & wanted
    if has_root.all():
        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(
            data, model, scan=None, level=alpha, rtol=rtol, **kwargs
        )
        limits[:] = [float(obs), *map(float, exp)]
    else:
        for k in np.flatnonzero(has_root):
            # pyhf's best_bracket: the tightest bracket among the values computed so far
            mus = np.array(list(cache))
            vals = np.array([v[k] for v in cache.values()]) - alpha
            a = mus[vals >= 0][np.argmin(vals[vals >= 0])]
            b = mus[vals < 0][np.argmax(vals[vals < 0])]
            limits[k] = toms748(
                lambda mu, k=k: curves(mu)[k] - alpha, a, b, k=2, xtol=ATOL, rtol=rtol
            )
    wrong = [r for r in records[first:] if not r.gradient <= float(options["gradient_tolerance"])]
    n_fits = len(records) - first
    if wrong:
        return (
            np.nan,
            [np.nan] * 5,
            FAILED,
            (
                f"limits: {len(wrong)} of {n_fits} fits of pyhf's search not certified; first: "
                f"{wrong[0].describe()}"
            ),
        )
    status = ABOVE if above.any() else BELOW if below.any() else FOUND
    note = f"limits: {n_fits} fits (pyhf upper_limit, scan=None)"
    if status == ABOVE:
        note += f"; CLs above {alpha:g} up to the POI's upper bound {hi:g}: no limit within it"
    elif status == BELOW:
        note += f"; CLs below {alpha:g} already at the POI's lower bound {lo:g}"
    return float(limits[0]), limits[1:].tolist(), status, note
