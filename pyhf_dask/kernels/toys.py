"""Toy-based CLs: the statistics of pseudo-experiments, as pyhf's ``ToyCalculator`` defines it.

Pure NumPy (no JAX): the device part that draws and fits the toys is
:mod:`pyhf_dask.kernels.jax_toys`. Conventions (``pyhf/infer/calculators.py``):

* the test statistic of a toy is ``q = clip(-2 log L(mu) + 2 log L(muhat), 0)``, and 0
  where ``muhat > mu`` (:func:`qmu_statistic`; with the POI bounded below by 0 this is
  ``qtilde``; pyhf's ``q`` with the same bounds is the same number);
* ``CLsb = P(q_sb >= q_obs)`` over the s+b toys, ``CLb = P(q_b >= q_obs)`` over the b toys
  (pyhf's ``EmpiricalDistribution.pvalue``: ``>=``, both on the same side), ``CLs =
  CLsb / CLb`` (:func:`toy_pvalues`). "At least as large" is decided up to
  :data:`TIE_TOLERANCE`: a toy with the observed counts has the observed ``q`` up to the
  rounding of its fits, and must count (a deliberate difference from pyhf only in name:
  pyhf's fits of identical data are bitwise identical, ours run in other batches);
* the expected band: ``CLs`` at the test statistic of every b toy, and the
  2.275 %, 15.87 %, 50 %, 84.13 %, 97.72 % percentiles of those values with NumPy's
  linear interpolation (pyhf's ``expected_pvalues``, which crashes on NumPy 2; written
  here again) (:func:`expected_band`).

Monte Carlo errors are binomial, ``sqrt(p (1 - p) / N)``, and for ``CLs`` the ratio of two
independent estimates, by the delta method (:func:`toy_pvalues`).

Example:
    >>> import numpy as np
    >>> out = toy_pvalues(1.0, np.array([0.0, 0.5, 1.0, 2.0]), np.array([1.0, 3.0, 4.0, 0.0]))
    >>> float(out["CLsb"]), float(out["CLb"]), float(out["CLs"])
    (0.5, 0.75, 0.6666666666666666)
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

__all__ = [
    "BAND_PERCENTILES",
    "HYPOTHESES",
    "TIE_TOLERANCE",
    "binomial_error",
    "expected_band",
    "failure_bound_exceeded",
    "qmu_statistic",
    "stream_words",
    "toy_pvalues",
]

#: pyhf's percentiles of the b-toy CLs values for the band (-2, -1, 0, +1, +2 sigma).
BAND_PERCENTILES = np.array([2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681])
#: Two values of ``q`` closer than this (absolute, plus as much relative) are equal.
#: Fits are certified to a KKT residual of 1e-4, so ``-2 log L`` is known to about 1e-8;
#: distinct counts of a discrete model differ in ``q`` by far more than 1e-6.
TIE_TOLERANCE = 1e-6
#: The hypotheses toys are drawn under, in the order of the seed streams.
HYPOTHESES = ("sb", "b")


def stream_words(patch: Any, poi: float, hypothesis: str) -> tuple[int, int]:
    """Two 32-bit words that select a point's toy stream (folded into the user's seed).

    They are a digest of the point's patch (its content, not its place in a chunk), the
    POI value and the hypothesis, so that the toys of a point are the same whatever the
    chunking, the worker or the executor.

    Example:
        >>> stream_words([{"op": "add"}], 1.0, "sb") == stream_words([{"op": "add"}], 1.0, "sb")
        True
        >>> stream_words([{"op": "add"}], 1.0, "sb") == stream_words([{"op": "add"}], 1.0, "b")
        False
    """
    if hypothesis not in HYPOTHESES:
        msg = f"unknown hypothesis {hypothesis!r} (choose from: {', '.join(HYPOTHESES)})"
        raise ValueError(msg)
    text = json.dumps([patch, repr(float(poi)), hypothesis], sort_keys=True, default=repr)
    raw = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:8], "little")


def qmu_statistic(
    fixed_value: np.ndarray, free_value: np.ndarray, muhat: np.ndarray, mu: float
) -> np.ndarray:
    """pyhf's ``qmu``-like statistic from the fixed-POI and free ``-2 log L`` values.

    Example:
        >>> qmu_statistic(np.array([3.0, 3.0, 1.0]), np.array([1.0, 1.0, 2.0]),
        ...                np.array([0.5, 1.5, 0.0]), 1.0).tolist()
        [2.0, 0.0, 0.0]
    """
    with np.errstate(invalid="ignore"):
        tmu = np.clip(np.asarray(fixed_value) - np.asarray(free_value), 0.0, None)
    return np.where(np.asarray(muhat) > mu, 0.0, tmu)


def _at_least(sorted_samples: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many samples are at least each value (up to :data:`TIE_TOLERANCE`)."""
    values = np.asarray(values, dtype=np.float64)
    edge = values - TIE_TOLERANCE * (1.0 + np.abs(values))
    return len(sorted_samples) - np.searchsorted(sorted_samples, edge, side="left")


def binomial_error(p: np.ndarray | float, n: np.ndarray | int) -> np.ndarray:
    """Standard error ``sqrt(p (1 - p) / n)`` of a fraction ``p`` of ``n`` toys (NaN for n = 0).

    Example:
        >>> float(binomial_error(0.5, 100))
        0.05
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt(p * (1.0 - p) / n), np.nan)


def toy_pvalues(q_obs: float, q_sb: np.ndarray, q_b: np.ndarray) -> dict[str, Any]:
    """CLsb, CLb, CLs of the observed statistic and their Monte Carlo standard errors.

    Args:
        q_obs: the observed test statistic.
        q_sb: test statistics of the (successfully fitted) s+b toys.
        q_b: test statistics of the (successfully fitted) b toys.

    Returns:
        ``CLsb``, ``CLb``, ``CLs`` and ``CLsb_err``, ``CLb_err``, ``CLs_err`` (floats;
        ``CLs`` is NaN where no b toy is as extreme as the data).
    """
    q_sb = np.sort(np.asarray(q_sb, dtype=np.float64))
    q_b = np.sort(np.asarray(q_b, dtype=np.float64))
    n_sb, n_b = len(q_sb), len(q_b)
    clsb = float(_at_least(q_sb, np.array([q_obs]))[0]) / n_sb if n_sb else math.nan
    clb = float(_at_least(q_b, np.array([q_obs]))[0]) / n_b if n_b else math.nan
    err_sb = float(binomial_error(clsb, n_sb))
    err_b = float(binomial_error(clb, n_b))
    if clb > 0 and clsb > 0:
        cls = clsb / clb
        # delta method for the ratio of two independent binomial fractions
        err_s = cls * math.sqrt((err_sb / clsb) ** 2 + (err_b / clb) ** 2)
    elif clb > 0:  # no s+b toy as extreme as the data: CLs = 0, binomial error 0
        cls, err_s = 0.0, err_sb / clb
    else:
        cls = err_s = math.nan
    return {
        "CLsb": clsb,
        "CLb": clb,
        "CLs": cls,
        "CLsb_err": err_sb,
        "CLb_err": err_b,
        "CLs_err": err_s,
    }


def expected_band(q_sb: np.ndarray, q_b: np.ndarray) -> np.ndarray:
    """The expected CLs band from the b-toy distribution, as pyhf computes it.

    For each b toy, ``CLs`` of its statistic (``CLsb / CLb`` with both counted over the
    toys, ``>=`` up to :data:`TIE_TOLERANCE`); the band is the :data:`BAND_PERCENTILES`
    of those values (NumPy's linear interpolation, pyhf's default). Ascending, as the
    asymptotic band of :mod:`pyhf_dask.kernels.asymptotics`.

    Example:
        >>> expected_band(np.array([0.0, 1.0]), np.array([0.0, 2.0])).round(3).tolist()
        [0.023, 0.159, 0.5, 0.841, 0.977]
    """
    q_sb = np.sort(np.asarray(q_sb, dtype=np.float64))
    q_b_sorted = np.sort(np.asarray(q_b, dtype=np.float64))
    if not len(q_sb) or not len(q_b_sorted):
        return np.full(len(BAND_PERCENTILES), np.nan)
    clsb = _at_least(q_sb, q_b_sorted) / len(q_sb)
    clb = _at_least(q_b_sorted, q_b_sorted) / len(q_b_sorted)  # >= 1/N: the toy itself
    return np.percentile(clsb / clb, BAND_PERCENTILES)


def failure_bound_exceeded(n_failed: int, n_toys: int, p: float) -> bool:
    """Whether the failed toys of a hypothesis could move its p-value by more than its error.

    A p-value counted over the ``n_toys - n_failed`` toys whose fits were certified
    differs from the one the ``n_toys`` toys would give by at most ``n_failed / n_toys``
    (the failed toys could all lie on one side). Below one Monte Carlo standard error
    (at least ``1 / n_toys``) that bias is within the error the result reports; above
    it, the point is ``"partial"``.

    Example:
        >>> failure_bound_exceeded(1, 10_000, 0.05), failure_bound_exceeded(50, 10_000, 0.05)
        (False, True)
    """
    if n_failed <= 0 or n_toys <= 0:
        return False
    p = 0.0 if not math.isfinite(p) else p
    error = max(math.sqrt(p * (1.0 - p) / n_toys), 1.0 / n_toys)
    return n_failed / n_toys > error
