"""CLs and the expected band from fitted ``-2 log L`` values: pyhf's asymptotic formulas.

The JAX kernel fits, per point, POI=0 and the free fit and each tested POI value on the
data, then the free fit and each POI value on the Asimov data; :func:`cls_from_fits`
turns those values into ``CLs_obs`` and the expected ``CLs_exp`` band exactly as pyhf's
``AsymptoticCalculator`` does, in logarithms so that far tails do not give ``0/0``.

Example:
    >>> import numpy as np
    >>> obs = np.array([[0.0, 0.0, 4.0]])      # POI=0, free, POI=1 on the data
    >>> asimov = np.array([[0.0, 4.0]])        # free, POI=1 on the Asimov data
    >>> o, e = cls_from_fits(obs, np.zeros(1), asimov, np.zeros(1), np.ones(1), "qtilde")
    >>> round(float(o[0, 0]), 4), e.shape
    (0.0455, (1, 1, 5))
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

__all__ = ["cls_from_fits", "p0_from_fits"]

#: The expected band: +2, +1, 0, -1, -2 standard deviations (pyhf's order).
_BAND_NSIGMA = np.array([2.0, 1.0, 0.0, -1.0, -2.0])


def cls_from_fits(
    obs_value: np.ndarray,
    obs_muhat: np.ndarray,
    asimov_value: np.ndarray,
    asimov_muhat: np.ndarray,
    poi_values: np.ndarray,
    test_stat: str,
) -> tuple[np.ndarray, np.ndarray]:
    """CLs and the expected band from the fitted ``-2 log L`` values (pyhf's asymptotics).

    Args:
        obs_value: ``(n, 2 + n_poi)``: fixed POI=0, free, fixed at each POI value (data).
        obs_muhat: ``(n,)`` best-fit POI on the data.
        asimov_value: ``(n, 1 + n_poi)``: free, fixed at each POI value (Asimov data).
        asimov_muhat: ``(n,)`` best-fit POI on the Asimov data.
        poi_values: ``(n_poi,)`` tested POI values.
        test_stat: ``"qtilde"`` or ``"q"``.

    Returns:
        ``CLs_obs`` ``(n, n_poi)`` and ``CLs_exp`` ``(n, n_poi, 5)``; for ``"q0"``, the
        discovery p-values instead (:func:`p0_from_fits`).
    """
    if test_stat == "q0":
        return p0_from_fits(obs_value, obs_muhat, asimov_value, asimov_muhat)
    mu = poi_values[None, :]
    tmu = np.clip(obs_value[:, 2:] - obs_value[:, 1:2], 0.0, None)
    qmu = np.where(obs_muhat[:, None] > mu, 0.0, tmu)
    tmu_a = np.clip(asimov_value[:, 1:] - asimov_value[:, 0:1], 0.0, None)
    qmu_a = np.where(asimov_muhat[:, None] > mu, 0.0, tmu_a)
    sqrtq, sqrtq_a = np.sqrt(qmu), np.sqrt(qmu_a)
    if test_stat == "qtilde":
        with np.errstate(divide="ignore", invalid="ignore"):
            teststat = np.where(sqrtq <= sqrtq_a, sqrtq - sqrtq_a, (qmu - qmu_a) / (2.0 * sqrtq_a))
    else:
        teststat = sqrtq - sqrtq_a
    # CLs = Phi(-(t + sqrt(q_A))) / Phi(-t), in logs so that far tails do not give 0/0
    with np.errstate(invalid="ignore"):
        cls_obs = np.exp(log_ndtr(-(teststat + sqrtq_a)) - log_ndtr(-teststat))
    # q_A = 0 (e.g. mu = 0 under qtilde): t -> inf as q_A -> 0 and the ratio tends to
    # exp(-q/2), which is 1 where q = 0 as in pyhf's calculator
    degenerate = (sqrtq_a == 0.0) & (sqrtq > sqrtq_a) & (test_stat == "qtilde")
    cls_obs = np.where(degenerate, np.exp(-0.5 * qmu), cls_obs)
    band = _BAND_NSIGMA[None, None, :]
    cls_exp = np.exp(log_ndtr(-(band + sqrtq_a[..., None])) - log_ndtr(-band))
    nan = ~(np.isfinite(obs_value[:, 1:2]) & np.isfinite(obs_value[:, 2:]))
    nan_a = ~(np.isfinite(asimov_value[:, 0:1]) & np.isfinite(asimov_value[:, 1:]))
    cls_obs = np.where(nan | nan_a, np.nan, cls_obs)
    cls_exp = np.where(nan_a[..., None], np.nan, cls_exp)
    return cls_obs, cls_exp


def p0_from_fits(
    obs_value: np.ndarray,
    obs_muhat: np.ndarray,
    asimov_value: np.ndarray,
    asimov_muhat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Discovery p-values (``test_stat="q0"``) from fitted ``-2 log L``, as pyhf returns them.

    pyhf 0.7.6's ``hypotest(0.0, ..., test_stat="q0")`` (``infer/calculators.py``,
    ``infer/test_statistics.py``): ``q0 = -2 log L(mu=0) + 2 log L(free)`` (0 where the
    best-fit POI is negative); the Asimov data are made at POI = 1 (the fixed fit at 1 on
    the data); ``sqrt(q0_A)`` from the same fits on them. The observed p0 is ``CLsb`` =
    ``Phi(-sqrt(q0))``, the expected band ``Phi(-(n + sqrt(q0_A)))`` for
    ``n = 2, 1, 0, -1, -2`` (pyhf's ``CLsb_exp``; ``band = -2`` is pyhf's first entry).

    Args:
        obs_value: ``(n, 3)``: fixed POI=1 (the Asimov parameters), free, fixed POI=0 (data).
        obs_muhat: ``(n,)`` best-fit POI on the data.
        asimov_value: ``(n, 2)``: free, fixed POI=0 (Asimov data at POI = 1).
        asimov_muhat: ``(n,)`` best-fit POI on the Asimov data.

    Returns:
        ``p0_obs`` ``(n, 1)`` and ``p0_exp`` ``(n, 1, 5)``.

    Example:
        >>> o, e = p0_from_fits(np.array([[9.0, 0.0, 4.0]]), np.ones(1),
        ...                     np.array([[0.0, 9.0]]), np.ones(1))
        >>> round(float(o[0, 0]), 6), round(float(e[0, 0, 2]), 6)  # Phi(-2), Phi(-3)
        (0.02275, 0.00135)
    """
    q0 = np.clip(obs_value[:, 2:3] - obs_value[:, 1:2], 0.0, None)
    q0 = np.where(obs_muhat[:, None] < 0.0, 0.0, q0)
    q0_a = np.clip(asimov_value[:, 1:2] - asimov_value[:, 0:1], 0.0, None)
    q0_a = np.where(asimov_muhat[:, None] < 0.0, 0.0, q0_a)
    p0_obs = np.exp(log_ndtr(-np.sqrt(q0)))
    band = _BAND_NSIGMA[None, None, :]
    p0_exp = np.exp(log_ndtr(-(band + np.sqrt(q0_a)[..., None])))
    nan = ~(np.isfinite(obs_value[:, 1:2]) & np.isfinite(obs_value[:, 2:3]))
    nan_a = ~(np.isfinite(asimov_value[:, 0:1]) & np.isfinite(asimov_value[:, 1:2]))
    p0_obs = np.where(nan, np.nan, p0_obs)
    p0_exp = np.where(nan_a[..., None] | np.isnan(obs_value[:, 0:1])[..., None], np.nan, p0_exp)
    return p0_obs, p0_exp
