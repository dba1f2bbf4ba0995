"""An independent, careful hypothesis test for small models (a test oracle, not the product).

The objective is pyhf's own ``-2 logpdf`` (NumPy backend). Kinks of ``code0``/``code1``
interpolation sit at 0 of the kinked parameters, so every closed orthant of those
parameters is minimised separately (the objective is smooth inside each; L-BFGS-B with
bounds-aware one-sided differences at 0), from several starts, and the lowest value
wins. CLs follow pyhf's asymptotic formulas (arXiv:1007.1727), written out here.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyhf
import scipy.optimize
from scipy.stats import norm

__all__ = ["careful_hypotest", "kinked_parameters", "make_model"]


def make_model(spec: dict[str, Any], normcode: str, histcode: str) -> tuple[Any, np.ndarray]:
    """pyhf's model and data of a workspace spec with the given codes."""
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    model = ws.model(
        modifier_settings={
            "normsys": {"interpcode": normcode},
            "histosys": {"interpcode": histcode},
        }
    )
    return model, np.asarray(ws.data(model), dtype=float)


def kinked_parameters(model: Any, normcode: str, histcode: str) -> list[int]:
    """Indices of parameters with a kinked modifier under the codes."""
    kinked_types = set()
    if normcode == "code1":
        kinked_types.add("normsys")
    if histcode == "code0":
        kinked_types.add("histosys")
    out = []
    for name, kind in model.config.modifiers:
        if kind in kinked_types:
            out.append(model.config.par_slice(name).start)
    return sorted(set(out))


def _minimise(
    model: Any, data: np.ndarray, kinks: list[int], mu: float | None, n_random: int = 3
) -> tuple[float, np.ndarray]:
    bounds = [tuple(b) for b in model.config.suggested_bounds()]
    poi = model.config.poi_index
    fixed = list(model.config.suggested_fixed())
    init = np.asarray(model.config.suggested_init(), dtype=float)
    if mu is not None:
        bounds[poi] = (mu, mu)
        init[poi] = mu
    for i, f in enumerate(fixed):
        if f and i != poi:
            bounds[i] = (init[i], init[i])

    def objective(x: np.ndarray) -> float:
        return float(-2.0 * model.logpdf(x, data)[0])

    rng = np.random.default_rng(0)
    best, argmin = np.inf, init
    for signs in itertools.product((-1.0, 1.0), repeat=len(kinks)):
        box = list(bounds)
        for j, sign in zip(kinks, signs, strict=True):
            lo, hi = box[j]
            box[j] = (0.0, hi) if sign > 0 else (lo, 0.0)
        starts = [np.clip(init, [b[0] for b in box], [b[1] for b in box])]
        for _ in range(n_random):
            x = init.copy()
            for j, (lo, hi) in enumerate(box):
                if lo < hi and j != poi:
                    x[j] = np.clip(init[j] + rng.uniform(-1.5, 1.5), lo, hi)
            starts.append(x)
        for x0 in starts:
            res = scipy.optimize.minimize(
                objective,
                x0,
                method="L-BFGS-B",
                bounds=box,
                options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20000, "maxfun": 100000},
            )
            # polish: a second run from the first one's end
            res = scipy.optimize.minimize(
                objective,
                res.x,
                method="L-BFGS-B",
                bounds=box,
                options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20000, "maxfun": 100000},
            )
            if res.fun < best:
                best, argmin = float(res.fun), res.x.copy()
    return best, argmin


def careful_hypotest(
    model: Any, data: np.ndarray, mu: float, kinks: list[int], n_random: int = 3
) -> tuple[float, np.ndarray]:
    """Observed CLs and the expected band (-2..+2 sigma) at ``mu`` under qtilde.

    Every fit runs from the suggested start and ``n_random`` random starts per orthant.
    """
    poi = model.config.poi_index
    free, muhat = _minimise(model, data, kinks, None, n_random)
    fixed_mu, _ = _minimise(model, data, kinks, mu, n_random)
    _, pars0 = _minimise(model, data, kinks, 0.0, n_random)
    asimov = np.asarray(model.expected_data(pars0), dtype=float)
    free_a, muhat_a = _minimise(model, asimov, kinks, None, n_random)
    fixed_a, _ = _minimise(model, asimov, kinks, mu, n_random)
    # qtilde: the clipped likelihood ratio, 0 where the best-fit POI lies above mu
    q = 0.0 if muhat[poi] > mu else max(fixed_mu - free, 0.0)
    q_a = 0.0 if muhat_a[poi] > mu else max(fixed_a - free_a, 0.0)
    sq, sq_a = np.sqrt(q), np.sqrt(q_a)
    if sq_a == 0.0 and sq > 0.0:  # the limit q_A -> 0 of the ratio below
        cls_obs = np.exp(-q / 2.0)
    else:
        t = sq - sq_a if sq <= sq_a else (q - q_a) / (2.0 * sq_a)
        cls_obs = norm.sf(t + sq_a) / norm.sf(t)
    band = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
    cls_exp = norm.sf(band + sq_a) / norm.sf(band)
    return float(cls_obs), cls_exp
