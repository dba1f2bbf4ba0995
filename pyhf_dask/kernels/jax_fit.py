"""Batched bounded Newton fits of the dense HistFactory likelihood, in JAX (float64).

``twice_nll`` is ``-2 log L`` of :mod:`pyhf_dask.kernels.jax_model`'s dense model, without
the constant ``lgamma`` terms. :func:`value_grad_hess` returns it with its exact gradient and
Hessian, computed analytically from the model's structure (rates are sums of products of
univariate functions), which costs a few small matrix products instead of a Hessian through
an autodiff graph. :func:`newton_fit` is a projected Newton method with Levenberg-Marquardt
damping (bound-active parameters leave the system; steps are projected on the bounds and
accepted only if they lower ``-2 log L``). :func:`hypotest_fits` runs, for one point, every
fit of an asymptotic hypothesis test, and is vmapped over the points of a chunk.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = ["FitSettings", "hypotest_fits", "newton_fit", "twice_nll", "value_grad_hess"]

Arrays = dict[str, Any]

# code4 (alpha0 = 1) polynomial: coefficients = _A_INV @ b
_A_INV = jnp.asarray([
    [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
    [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
    [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
    [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
    [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
    [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
])


class FitSettings:
    """Static settings of the fits (hashable, part of the compiled function's key)."""

    def __init__(
        self, normcode: str, histcode: str, poi_index: int, max_iter: int = 100,
        gtol: float = 1e-6,
    ) -> None:
        self.normcode = normcode
        self.histcode = histcode
        self.poi_index = poi_index
        self.max_iter = max_iter
        self.gtol = gtol

    def _key(self) -> tuple[Any, ...]:
        return (self.normcode, self.histcode, self.poi_index, self.max_iter, self.gtol)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FitSettings) and self._key() == other._key()


def _histosys(alpha: Any, up: Any, dn: Any, code: str) -> tuple[Any, Any, Any]:
    """Additive histosys delta and its first two derivatives in alpha (pyhf's codes)."""
    zero = jnp.zeros_like(up)
    if code == "code0":
        pos = alpha > 0
        slope = jnp.where(pos, up, dn)
        return alpha * slope, slope, zero
    if code == "code2":  # as implemented in pyhf 0.7 (outer branches included)
        a = 0.5 * (up - dn)
        b = 0.5 * (up + dn)
        inner = (a * alpha**2 + b * alpha, 2 * a * alpha + b, 2 * a)
        hi_branch = ((alpha - 1) * (b + 2 * a), b + 2 * a, zero)
        lo_branch = (alpha * (b - 2 * a), b - 2 * a, zero)
        return tuple(  # type: ignore[return-value]
            jnp.where(alpha < -1, lo, jnp.where(alpha > 1, hi, mid))
            for lo, hi, mid in zip(lo_branch, hi_branch, inner, strict=True)
        )
    # code4p
    s = 0.5 * (up + dn)
    a = 0.0625 * (up - dn)
    a2 = alpha * alpha
    poly = a2 * (a2 * (3 * a2 - 10) + 15)
    dpoly = alpha * (18 * a2 * a2 - 40 * a2 + 30)
    ddpoly = 90 * a2 * a2 - 120 * a2 + 30
    inner = (alpha * s + poly * a, s + dpoly * a, ddpoly * a)
    return tuple(  # type: ignore[return-value]
        jnp.where(alpha < -1, alpha * dn if k == 0 else (dn if k == 1 else zero),
                  jnp.where(alpha > 1, alpha * up if k == 0 else (up if k == 1 else zero), v))
        for k, v in enumerate(inner)
    )


def code4_coefficients(hi: Any, lo: Any) -> Any:
    """pyhf's code4 polynomial coefficients (alpha0 = 1), shape ``(6, *hi.shape)``."""
    lhi, llo = jnp.log(hi), jnp.log(lo)
    b = jnp.stack([hi - 1, lo - 1, lhi * hi, -llo * lo, lhi**2 * hi, llo**2 * lo])
    return jnp.einsum("rc,c...->r...", _A_INV, b)


def _normsys(alpha: Any, hi: Any, lo: Any, coef: Any, code: str) -> tuple[Any, Any, Any]:
    """Multiplicative normsys factor f, f'/f and f''/f."""
    lhi, llo = jnp.log(hi), jnp.log(lo)
    if code == "code1":
        pos = alpha > 0
        f = jnp.where(pos, hi ** jnp.abs(alpha), lo ** jnp.abs(alpha))
        r = jnp.where(pos, lhi, -llo)
        return f, r, r * r
    powers = jnp.stack([alpha ** (k + 1) * jnp.ones_like(hi) for k in range(6)])
    p = 1.0 + jnp.sum(coef * powers, axis=0)
    dp = sum((k + 1) * coef[k] * (alpha**k) for k in range(6))
    ddp = sum((k + 1) * k * coef[k] * (alpha ** (k - 1)) for k in range(1, 6))
    up = alpha >= 1
    down = alpha <= -1
    f = jnp.where(up, hi ** jnp.abs(alpha), jnp.where(down, lo ** jnp.abs(alpha), p))
    r = jnp.where(up, lhi, jnp.where(down, -llo, dp / p))
    s = jnp.where(up, lhi**2, jnp.where(down, llo**2, ddp / p))
    return f, r, s


def _pieces(theta: Any, a: Arrays, s: FitSettings) -> dict[str, Any]:
    alpha = theta[:, None]
    hval, hd1, hd2 = _histosys(alpha, a["h_up"], a["h_dn"], s.histcode)
    nf, nr, ns = _normsys(alpha, a["n_hi"], a["n_lo"], a["coef"], s.normcode)
    amount = a["nominal"] + jnp.sum(hval, axis=0)
    norm = jnp.prod(nf, axis=0)
    ext = jnp.concatenate([theta, jnp.ones((1,), theta.dtype)])
    gathered = ext[a["gather"]]  # (C, M)
    mult = jnp.prod(gathered, axis=1)
    rate_cell = amount * norm * mult
    rate = rate_cell @ a["cell_bin"]
    return {"gathered": gathered, "amount": amount, "norm": norm, "mult": mult,
            "rate": rate, "hd1": hd1, "hd2": hd2, "nr": nr, "ns": ns}


def _constraint(theta: Any, aux: Any, a: Arrays) -> Any:
    gauss = jnp.where(a["gauss"], ((theta - aux) / a["sigma"]) ** 2, 0.0)
    rate = theta * a["tau"]
    pois = jnp.where(a["poisson"], -2.0 * (xlogy(aux, rate) - rate), 0.0)
    return jnp.sum(gauss) + jnp.sum(pois)


def _main(rate: Any, data: Any) -> Any:
    value = 2.0 * jnp.sum(rate - xlogy(data, rate))
    bad = jnp.any((rate <= 0) & (data > 0)) | ~jnp.isfinite(value)
    return jnp.where(bad, jnp.inf, value)


def twice_nll(theta: Any, data: Any, aux: Any, a: Arrays, s: FitSettings) -> Any:
    """``-2 log L`` without constants (``+inf`` where a rate is invalid)."""
    return _main(_pieces(theta, a, s)["rate"], data) + _constraint(theta, aux, a)


def value_grad_hess(
    theta: Any, data: Any, aux: Any, a: Arrays, s: FitSettings
) -> tuple[Any, Any, Any]:
    """``-2 log L``, its gradient and its exact Hessian at ``theta`` (one point)."""
    pc = _pieces(theta, a, s)
    n_par = theta.shape[0]
    gathered = pc["gathered"]
    width = gathered.shape[1]
    n_cell = gathered.shape[0]
    cells = jnp.arange(n_cell)
    # products of the multiplicative factors without one / without two of them
    ones = jnp.ones((n_cell,), theta.dtype)
    without1 = []
    for j in range(width):
        prod = ones
        for i in range(width):
            if i != j:
                prod = prod * gathered[:, i]
        without1.append(prod)
    rate = pc["rate"]
    w1 = 2.0 * (1.0 - jnp.where(data > 0, data / rate, 0.0))  # d f / d rate
    w2 = 2.0 * jnp.where(data > 0, data / rate**2, 0.0)  # d2 f / d rate2
    u = w1 @ a["cell_bin"].T  # per cell
    amount, norm, mult = pc["amount"], pc["norm"], pc["mult"]
    d1, d2, nr, ns = pc["hd1"], pc["hd2"], pc["nr"], pc["ns"]
    gidx = a["gather"]
    dmult = jnp.zeros((n_par + 1, n_cell), theta.dtype)
    for j in range(width):
        dmult = dmult.at[gidx[:, j], cells].add(without1[j])
    dmult = dmult[:n_par]
    alpha_part = d1 + amount * nr  # (P, C)
    grad_cell = (mult * norm) * alpha_part + (amount * norm) * dmult
    jac = grad_cell @ a["cell_bin"]  # (P, B)
    grad = jac @ w1
    hess = (jac * w2) @ jac.T
    w = u * mult * norm
    h_aa = (d1 * w) @ nr.T + (nr * w) @ d1.T + (nr * (w * amount)) @ nr.T
    h_aa = h_aa + jnp.diag(jnp.sum(w * (d2 + amount * (ns - nr * nr)), axis=1))
    h_at = (alpha_part * (u * norm)) @ dmult.T
    hess = hess + h_aa + h_at + h_at.T
    scale = u * amount * norm
    h_tt = jnp.zeros((n_par + 1, n_par + 1), theta.dtype)
    for i in range(width):
        for j in range(width):
            if i == j:
                continue
            prod = scale
            for k in range(width):
                if k not in (i, j):
                    prod = prod * gathered[:, k]
            h_tt = h_tt.at[gidx[:, i], gidx[:, j]].add(prod)
    hess = hess + h_tt[:n_par, :n_par]
    # constraints
    g_gauss = jnp.where(a["gauss"], 2.0 * (theta - aux) / a["sigma"] ** 2, 0.0)
    h_gauss = jnp.where(a["gauss"], 2.0 / a["sigma"] ** 2, 0.0)
    g_pois = jnp.where(a["poisson"], -2.0 * (aux / theta - a["tau"]), 0.0)
    h_pois = jnp.where(a["poisson"], 2.0 * aux / theta**2, 0.0)
    grad = grad + g_gauss + g_pois
    hess = hess + jnp.diag(h_gauss + h_pois)
    value = _main(rate, data) + _constraint(theta, aux, a)
    return value, grad, hess


def newton_fit(
    init: Any, fixed: Any, data: Any, aux: Any, a: Arrays, s: FitSettings
) -> dict[str, Any]:
    """Minimise ``-2 log L`` of one point within the bounds, ``fixed`` parameters held.

    Returns:
        ``theta``, ``value``, ``n_iter``, ``converged`` and ``pgrad`` (largest projected
        gradient component).
    """
    lower, upper = a["lower"], a["upper"]
    theta0 = jnp.clip(init, lower, upper)
    f0, g0, h0 = value_grad_hess(theta0, data, aux, a, s)
    eye = jnp.eye(init.shape[0], dtype=init.dtype)

    def projected(theta: Any, g: Any) -> tuple[Any, Any]:
        at_lo = theta <= lower + 1e-12 * (1.0 + jnp.abs(lower))
        at_hi = theta >= upper - 1e-12 * (1.0 + jnp.abs(upper))
        free = ~fixed & ~(at_lo & (g > 0)) & ~(at_hi & (g < 0))
        pg = jnp.where(free, g, 0.0)
        return free, jnp.max(jnp.abs(pg))

    def cond(state: tuple[Any, ...]) -> Any:
        theta, f, g, _, lam, it = state
        _, pg = projected(theta, g)
        return (pg > s.gtol) & (it < s.max_iter) & (lam < 1e12) & jnp.isfinite(f)

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        theta, f, g, h, lam, it = state
        free, _ = projected(theta, g)
        both = free[:, None] & free[None, :]
        hf = jnp.where(both, h, 0.0)
        diag = jnp.where(free, jnp.abs(jnp.diagonal(hf)) + 1e-8, 1.0)
        hd = hf + eye * jnp.where(free, lam * diag, 1.0)
        chol = jnp.linalg.cholesky(hd)
        step = jax.scipy.linalg.cho_solve((chol, True), -jnp.where(free, g, 0.0))
        ok = jnp.all(jnp.isfinite(step))
        trial = jnp.clip(theta + jnp.where(free & ok, step, 0.0), lower, upper)
        ft, gt, ht = value_grad_hess(trial, data, aux, a, s)
        accept = ok & jnp.isfinite(ft) & (ft <= f)
        new_lam = jnp.where(accept, jnp.maximum(lam * 0.1, 1e-12), lam * 10.0)
        pick = partial(jnp.where, accept)
        return pick(trial, theta), pick(ft, f), pick(gt, g), pick(ht, h), new_lam, it + 1

    state = (theta0, f0, g0, h0, jnp.asarray(1e-3, init.dtype), jnp.asarray(0))
    theta, f, g, _, _, it = jax.lax.while_loop(cond, body, state)
    _, pg = projected(theta, g)
    return {"theta": theta, "value": f, "n_iter": it, "converged": (pg <= s.gtol)
            & jnp.isfinite(f), "pgrad": pg}


def asimov_data(theta: Any, a: Arrays, s: FitSettings) -> tuple[Any, Any]:
    """Expected main data and auxiliary data at ``theta`` (pyhf's ``expected_data``)."""
    rate = _pieces(theta, a, s)["rate"]
    aux = jnp.where(a["gauss"], theta, jnp.where(a["poisson"], theta * a["tau"], a["aux"]))
    return rate, aux


def hypotest_fits(a: Arrays, poi_values: Any, s: FitSettings) -> dict[str, Any]:
    """All fits of the asymptotic tests of one point at every POI value.

    Fits on the observed data: POI fixed at 0 (builds the Asimov data), free, POI fixed at
    each value; on the Asimov data: free, POI fixed at each value (started from the
    Asimov parameters).
    """
    a = dict(a)
    if s.normcode == "code4":
        a["coef"] = code4_coefficients(a["n_hi"], a["n_lo"])
    else:
        a["coef"] = jnp.zeros((6, 1, 1), a["n_hi"].dtype)
    poi = s.poi_index
    n_poi = poi_values.shape[0]
    init, fixed = a["init"], a["fixed"]
    mus = jnp.concatenate([jnp.zeros((1,)), poi_values])
    inits = jnp.tile(init, (n_poi + 2, 1))
    inits = inits.at[jnp.array([0, *range(2, n_poi + 2)]), poi].set(mus)
    fixeds = jnp.tile(fixed, (n_poi + 2, 1)).at[:, poi].set(True).at[1, poi].set(fixed[poi])

    def fit(i: Any, f: Any, d: Any, x: Any) -> dict[str, Any]:
        return newton_fit(i, f, d, x, a, s)

    obs = jax.vmap(fit, in_axes=(0, 0, None, None))(inits, fixeds, a["data"], a["aux"])
    theta0 = obs["theta"][0]
    data_a, aux_a = asimov_data(theta0, a, s)
    inits_a = jnp.tile(theta0, (n_poi + 1, 1)).at[1:, poi].set(poi_values)
    fixeds_a = fixeds[1:]
    asi = jax.vmap(fit, in_axes=(0, 0, None, None))(inits_a, fixeds_a, data_a, aux_a)
    return {
        "obs_value": obs["value"], "obs_muhat": obs["theta"][1, poi],
        "asimov_value": asi["value"], "asimov_muhat": asi["theta"][0, poi],
        "converged": jnp.concatenate([obs["converged"], asi["converged"]]),
        "n_iter": jnp.concatenate([obs["n_iter"], asi["n_iter"]]),
        "pgrad": jnp.concatenate([obs["pgrad"], asi["pgrad"]]),
    }


@partial(jax.jit, static_argnames=("settings",))
def hypotest_batch(batched: Arrays, shared: Arrays, poi_values: Any, settings: FitSettings) -> Any:
    """:func:`hypotest_fits` vmapped over the leading axis of ``batched``."""

    def one(point: Arrays) -> dict[str, Any]:
        return hypotest_fits({**point, **shared}, poi_values, settings)

    return jax.vmap(one)(batched)
