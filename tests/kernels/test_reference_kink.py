"""The reference kernel at a V-shaped kink: judged by the -2 log L it could still gain.

A ``code0`` histosys whose up and down variations both lie above the nominal, with data
below it, puts the minimum of every fit on the kink ``alpha = 0``. SciPy's SLSQP stops a
hair off it, where a one-sided difference measures the slope of one arm of the V (or
straddles the tip): a KKT residual of several units for a fit that is 1e-6 above the kink
and a CLs that is right. The kernel now certifies such a fit by what bounded moves onto and
around the kink gain (:func:`pyhf_dask.kernels.certify.kink_gain`), and still refuses one
that stopped where a move gains more than :data:`~pyhf_dask.kernels.certify.KINK_GAIN_TOLERANCE`.

The oracle is written here, independent of pyhf and of the package: the model's ``-2 log L``
by hand (Poisson terms, the unit Gaussian constraint, code0 interpolation), profiled over
``alpha`` on a dense grid of each side of the kink refined by bounded Brent searches (the
objective is convex on each side: the rate is affine in ``(mu, alpha)`` there), the free
fit over a dense grid of ``mu`` refined the same way, and pyhf's asymptotic ``qtilde``
formulas (arXiv:1007.1727; Asimov data and auxiliary data from the ``mu = 0`` fit).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import scipy.optimize
from scipy.special import gammaln
from scipy.stats import norm

from pyhf_dask.kernels import FitOptions, reference
from pyhf_dask.kernels.certify import KINK_GAIN_TOLERANCE, kink_gain, kkt_residual

# one bin: signal 10.7, background 169.4 with a histosys whose up (180.1) and down (185.5)
# variations both lie above it; 125 observed
SIGNAL, BKG, UP, DOWN, OBSERVED = (np.array([v]) for v in (10.7, 169.4, 180.1, 185.5, 125.0))
BOUND = 5.0  # pyhf's suggested bounds of a histosys parameter; the POI's are [0, 10]


def _spec(init: float | None = None) -> dict[str, Any]:
    parameters = [] if init is None else [{"name": "v", "inits": [init]}]
    histosys = {
        "name": "v",
        "type": "histosys",
        "data": {"hi_data": UP.tolist(), "lo_data": DOWN.tolist()},
    }
    samples = [
        {
            "name": "signal",
            "data": SIGNAL.tolist(),
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
        },
        {"name": "bkg", "data": BKG.tolist(), "modifiers": [histosys]},
    ]
    return {
        "channels": [{"name": "sr", "samples": samples}],
        "observations": [{"name": "sr", "data": OBSERVED.tolist()}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }


# ------------------------------------------------------------------------ the oracle
def _rate(mu: Any, alpha: Any) -> np.ndarray:
    mu = np.asarray(mu, dtype=float)[..., None]
    alpha = np.asarray(alpha, dtype=float)[..., None]
    shift = np.where(alpha >= 0, alpha * (UP - BKG), alpha * (BKG - DOWN))
    return np.asarray(mu * SIGNAL + BKG + shift)


def _twice_nll(mu: Any, alpha: Any, n: np.ndarray, aux: float) -> np.ndarray:
    lam = _rate(mu, alpha)
    poisson = -2.0 * np.sum(n * np.log(lam) - lam - gammaln(n + 1.0), axis=-1)
    return np.asarray(poisson + (np.asarray(alpha) - aux) ** 2 + np.log(2.0 * np.pi))


def _brent(f: Any, lo: float, hi: float) -> tuple[float, float]:
    res = scipy.optimize.minimize_scalar(
        lambda t: float(f(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}
    )
    return float(res.fun), float(res.x)


def _profile(mu: float, n: np.ndarray, aux: float) -> tuple[float, float]:
    """``min over alpha`` at ``mu``: a dense grid of each side, refined on each side."""
    grid = np.concatenate([np.linspace(-BOUND, 0.0, 4001), np.linspace(0.0, BOUND, 4001)[1:]])
    values = _twice_nll(np.full(grid.size, mu), grid, n, aux)
    best = (float(values.min()), float(grid[values.argmin()]))
    for lo, hi in ((-BOUND, 0.0), (0.0, BOUND)):
        best = min(best, _brent(lambda a: _twice_nll(mu, a, n, aux), lo, hi))
    return best


def _free(n: np.ndarray, aux: float) -> tuple[float, float]:
    """The free fit, ``(min -2lnL, muhat)``: a dense grid of mu in [0, 10], refined."""
    grid = np.linspace(0.0, 10.0, 201)
    values = [_profile(m, n, aux)[0] for m in grid]
    k = int(np.argmin(values))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    return min((values[k], float(grid[k])), _brent(lambda m: _profile(m, n, aux)[0], lo, hi))


def dense_scan_hypotest(mu: float) -> tuple[float, np.ndarray]:
    """CLs_obs and the expected band (+2..-2 sigma) under qtilde, from the dense scan."""
    free, muhat = _free(OBSERVED, 0.0)
    fixed, _ = _profile(mu, OBSERVED, 0.0)
    _, alpha0 = _profile(0.0, OBSERVED, 0.0)
    asimov = _rate(0.0, alpha0)
    free_a, muhat_a = _free(asimov, alpha0)
    fixed_a, _ = _profile(mu, asimov, alpha0)
    q = 0.0 if muhat > mu else max(fixed - free, 0.0)
    q_a = 0.0 if muhat_a > mu else max(fixed_a - free_a, 0.0)
    sq, sq_a = np.sqrt(q), np.sqrt(q_a)
    t = sq - sq_a if sq <= sq_a else (q - q_a) / (2.0 * sq_a)
    band = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
    return float(norm.sf(t + sq_a) / norm.sf(t)), norm.sf(band + sq_a) / norm.sf(band)


def _plain_pyhf(spec: dict[str, Any], mu: float, tolerance: float | None) -> np.ndarray:
    """``[CLs_obs, *CLs_exp]`` of ``pyhf.infer.hypotest`` as a user calls it."""
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    try:
        ws = pyhf.Workspace(spec)
        model = ws.model(modifier_settings={"histosys": {"interpcode": "code0"}})
        obs, exp = pyhf.infer.hypotest(mu, ws.data(model), model, return_expected_set=True)
    finally:
        pyhf.set_backend("numpy")
    return np.array([float(obs), *map(float, exp)])


def _options(tolerance: float | None) -> dict[str, Any]:
    options = FitOptions(poi_values=(1.0,), histosys_interpcode="code0").to_dict()
    options["scipy_tolerance"] = tolerance
    return options


@pytest.fixture(scope="module")
def oracle() -> np.ndarray:
    obs, exp = dense_scan_hypotest(1.0)
    return np.array([obs, *exp])


def test_the_oracle_puts_every_fit_on_the_kink() -> None:
    """The premise: data below a V's tip; the profiled minima sit at alpha = 0 exactly."""
    for mu in (0.0, 1.0):
        value, alpha = _profile(mu, OBSERVED, 0.0)
        assert alpha == 0.0
        # the V: both arms rise from the tip, steeply (one-sided slopes of order 1-10)
        for side in (-1e-3, 1e-3):
            assert float(_twice_nll(mu, side, OBSERVED, 0.0)) - value > 1e-3


def test_v_kink_is_certified_and_right(oracle: np.ndarray) -> None:
    out = reference.hypotest_chunk(_spec(), [[]], _options(None))
    assert out["status"][0] == "converged", out["message"][0]
    assert "certified next to a kink" in out["message"][0]
    ours = np.array([out["CLs_obs"][0, 0], *out["CLs_exp"][0, 0]])
    np.testing.assert_allclose(ours, _plain_pyhf(_spec(), 1.0, None), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, oracle, rtol=0, atol=1e-6)


def test_the_one_sided_gradient_alone_refused_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The false failure of the issue: without the gain, the KKT residual fails the fit."""
    monkeypatch.setattr(reference, "KINK_GAIN_TOLERANCE", -1.0)
    out = reference.hypotest_chunk(_spec(), [[]], _options(None))
    assert out["status"][0] == "failed"
    residual = float(re.search(r"KKT residual ([0-9.e+-]+)", out["message"][0]).group(1))
    assert residual > FitOptions().gradient_tolerance


def test_a_fit_off_the_kink_still_fails(oracle: np.ndarray) -> None:
    """SLSQP at tolerance 1e-3 from alpha = -0.3 stops where stepping onto the kink gains
    more than the tolerance: still refused, and rightly (pyhf's CLs is off there)."""
    out = reference.hypotest_chunk(_spec(init=-0.3), [[]], _options(1e-3))
    assert out["status"][0] == "failed", out["message"][0]
    assert np.isnan(out["CLs_obs"][0, 0])
    found = re.search(r"bounded moves near the kink gain ([0-9.e+-]+)", out["message"][0])
    assert found, out["message"][0]
    assert float(found.group(1)) > KINK_GAIN_TOLERANCE
    plain = _plain_pyhf(_spec(init=-0.3), 1.0, 1e-3)
    assert np.abs(plain - oracle).max() > 1e-6


def test_kink_gain_of_a_v() -> None:
    """Off the tip by d on an arm of slope s: the gain is s d; on the tip it is 0."""
    bounds = [(-5.0, 5.0), (-5.0, 5.0)]

    def f(p: np.ndarray) -> float:
        return float(np.where(p[0] > 0, p[0], -4.0 * p[0]) + (p[1] - 1.0) ** 2)

    # 6e-7 left of the tip a difference of 1e-6 straddles it: a residual of 2
    straddle = np.array([-6e-7, 1.0])
    assert kkt_residual(f, straddle, bounds, []) == pytest.approx(2.0, rel=1e-6)
    assert kink_gain(f, straddle, bounds, [], [0]) == pytest.approx(2.4e-6, rel=1e-6)
    assert kink_gain(f, np.array([0.0, 1.0]), bounds, [], [0]) == 0.0
    assert kink_gain(f, np.array([0.05, 1.0]), bounds, [], [0]) == pytest.approx(0.05, rel=1e-6)
    # the other parameters follow: the short polish finds the gain of the smooth coordinate
    assert kink_gain(f, np.array([1e-6, 1.2]), bounds, [], [0]) == pytest.approx(0.04, rel=1e-3)
    # a fixed parameter is held
    assert kink_gain(f, np.array([1e-6, 1.2]), bounds, [1], [0]) == pytest.approx(1e-6, rel=1e-6)


def test_fit_record_needs_the_gain_for_a_large_residual() -> None:
    tolerance = 1.0
    assert reference.FitRecord(True, 3, "", 2.46, gain=None).certified(tolerance) is False
    assert reference.FitRecord(True, 3, "", 2.46, gain=1e-6).certified(tolerance) is True
    assert reference.FitRecord(True, 3, "", 2.46, gain=1e-2).certified(tolerance) is False
    # a local-minimum verdict (gradient inf) is never undone by a small gain
    assert reference.FitRecord(True, 3, "", float("inf"), gain=0.0).certified(tolerance) is False
