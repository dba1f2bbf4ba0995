"""Toy-based CLs against an exact oracle: a one-bin counting model with only the POI.

With no nuisance parameter, a toy is a Poisson count ``n`` and its test statistic a
function of ``n`` alone, so pyhf's toy p-values are finite sums over ``n``:

    CLsb = sum_n Pois(n | mu s + b) [q(n) >= q(n_obs)]
    CLb  = sum_n Pois(n | b)        [q(n) >= q(n_obs)]

with ``qtilde`` in closed form for one bin (``muhat = clip((n - b) / s, 0, 10)``,
``q = 0`` where ``muhat > mu``, else ``2 [nll(mu) - nll(muhat)]``). The toy CLs of the
JAX kernel must agree within 3 of its reported standard errors, and those errors must
describe the spread over 20 seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pyhf_dask.kernels import FitOptions, fit_chunk
from pyhf_dask.kernels.toys import expected_band

pytest.importorskip("jax")

#: (s, b, n_obs): small and medium counts, an empty observation, data above and below b
CASES = [(5.0, 3.0, 2), (10.0, 10.0, 8), (3.0, 1.0, 0), (20.0, 50.0, 45), (4.0, 6.0, 9)]
MU = 1.0


def counting_workspace(b: float, n_obs: int) -> dict:
    """One bin, background ``b`` without uncertainty, observed ``n_obs``; no signal yet."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [{"name": "background", "data": [b], "modifiers": []}],
            }
        ],
        "observations": [{"name": "SR", "data": [float(n_obs)]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def signal(s: float) -> list:
    return [
        {
            "op": "add",
            "path": "/channels/0/samples/1",
            "value": {
                "name": "signal",
                "data": [s],
                "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
            },
        }
    ]


def qtilde(n: np.ndarray, s: float, b: float, mu: float) -> np.ndarray:
    """Closed-form qtilde of one bin for counts ``n`` (POI bounds [0, 10])."""
    n = np.asarray(n, dtype=np.float64)
    muhat = np.clip((n - b) / s, 0.0, 10.0)

    def nll(m: np.ndarray | float) -> np.ndarray:
        lam = m * s + b
        return 2.0 * (lam - n * np.log(lam))

    q = np.clip(nll(mu) - nll(muhat), 0.0, None)
    return np.where(muhat > mu, 0.0, q)


def exact(s: float, b: float, n_obs: int, mu: float = MU) -> tuple[float, float, float]:
    """CLsb, CLb, CLs of pyhf's toy convention, summed over n exactly."""
    n = np.arange(0, 2000)
    q = qtilde(n, s, b, mu)
    q_obs = float(qtilde(np.array([n_obs]), s, b, mu)[0])
    extreme = q >= q_obs - 1e-9 * (1 + q_obs)
    clsb = float(stats.poisson.pmf(n, mu * s + b)[extreme].sum())
    clb = float(stats.poisson.pmf(n, b)[extreme].sum())
    return clsb, clb, clsb / clb


def toys(cases: list, ntoys: int, seed: int) -> dict:
    """The JAX kernel's toy result for the given (s, b, n_obs), one chunk per workspace."""
    results = []
    for s, b, n_obs in cases:
        opts = FitOptions(poi_values=(MU,), calctype="toybased", ntoys=ntoys, seed=seed)
        results.append(fit_chunk("jax", counting_workspace(b, n_obs), [signal(s)], opts.to_dict()))
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


def test_closed_form_qtilde_matches_its_definition():
    # at n = b + s * mu the best fit is mu itself: q = 0; below b, muhat = 0
    assert qtilde(np.array([13]), 10.0, 3.0, 1.0)[0] == 0.0
    q0 = qtilde(np.array([0]), 5.0, 3.0, 1.0)[0]
    assert q0 == pytest.approx(2 * 5.0)  # n = 0: 2 (mu s + b - b)


@pytest.mark.slow
def test_toy_cls_agrees_with_the_exact_sum():
    out = toys(CASES, 100_000, seed=11)
    assert (out["status"] == "converged").all(), out["message"]
    assert (out["ntoys_failed"] == 0).all()
    for row, (s, b, n_obs) in enumerate(CASES):
        clsb, clb, cls = exact(s, b, n_obs)
        for name, want in (("CLsb_obs", clsb), ("CLb_obs", clb), ("CLs_obs", cls)):
            got = float(out[name][row, 0])
            err = float(out[name + "_err" if name != "CLs_obs" else "CLs_obs_err"][row, 0])
            assert err > 0 or want in (0.0, 1.0)
            assert abs(got - want) <= 3 * err + 1e-12, (s, b, n_obs, name, got, want, err)


def test_tie_at_the_observed_count_is_counted():
    # with n_obs = 0 the toys with n = 0 have exactly the observed q: pyhf counts them
    # (>=); leaving them out would give CLb = 1 - P(0 | b), far from the exact value
    s, b, n_obs = 3.0, 1.0, 0
    out = toys([(s, b, n_obs)], 20_000, seed=3)
    clsb, clb, _ = exact(s, b, n_obs)
    assert clb == pytest.approx(stats.poisson.pmf(0, b))
    got, err = float(out["CLb_obs"][0, 0]), float(out["CLb_obs_err"][0, 0])
    assert abs(got - clb) <= 3 * err
    got, err = float(out["CLsb_obs"][0, 0]), float(out["CLsb_obs_err"][0, 0])
    assert abs(got - clsb) <= 3 * err


def test_reported_error_matches_the_spread_over_seeds():
    s, b, n_obs = 10.0, 10.0, 8
    n_seeds, ntoys = 20, 4000
    values, errors = [], []
    for seed in range(n_seeds):
        out = toys([(s, b, n_obs)], ntoys, seed=100 + seed)
        values.append(float(out["CLs_obs"][0, 0]))
        errors.append(float(out["CLs_obs_err"][0, 0]))
    values_a, sigma = np.array(values), float(np.mean(errors))
    _, _, cls = exact(s, b, n_obs)
    # the sample variance over 20 seeds is sigma^2 chi2(19)/19 if the error is right
    ratio = (n_seeds - 1) * values_a.var(ddof=1) / sigma**2
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n_seeds - 1)
    assert lo < ratio < hi, (ratio, lo, hi, values_a.std(ddof=1), sigma)
    # and the mean agrees with the exact value within its own error
    assert abs(values_a.mean() - cls) <= 3.5 * sigma / np.sqrt(n_seeds)


def test_expected_band_follows_the_b_toy_distribution():
    # the band is the percentiles of CLs at the b toys' statistics: with the exact
    # distributions of the counting model, the median is CLs at the median b count
    s, b, n_obs = 10.0, 10.0, 8
    out = toys([(s, b, n_obs)], 20_000, seed=5)
    rng = np.random.default_rng(0)
    q_b = qtilde(rng.poisson(b, 200_000), s, b, MU)
    q_sb = qtilde(rng.poisson(s + b, 200_000), s, b, MU)
    want = expected_band(q_sb, q_b)
    got = out["CLs_exp"][0, 0]
    assert np.all(np.diff(got) >= 0)
    # the band's members are CLs values of discrete counts: the same counts, or neighbours
    np.testing.assert_allclose(got[1:4], want[1:4], rtol=0.25)
