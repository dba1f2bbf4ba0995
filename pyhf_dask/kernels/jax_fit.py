"""Batched bounded Newton fits of the dense HistFactory likelihood, in JAX (float64).

``twice_nll`` is ``-2 log L`` of :mod:`pyhf_dask.kernels.jax_model`'s dense model, without
the constant ``lgamma`` terms. :func:`value_grad_hess` returns it with its exact gradient and
Hessian, computed analytically from the model's structure (rates are sums of products of
univariate functions), which costs a few small matrix products instead of a Hessian through
an autodiff graph. :func:`newton_fit` is a projected Newton method with Levenberg-Marquardt
damping (bound-active parameters leave the system; steps are projected on the bounds and
accepted only if they lower ``-2 log L``). :func:`fit_batch` runs a batch of such fits (any
points, any fixed parameters) as one vmapped computation; :func:`asimov_batch` builds the
Asimov data of a batch of points.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = [
    "FitSettings",
    "asimov_batch",
    "fit_batch",
    "newton_fit",
    "prepare",
    "twice_nll",
    "twice_nll_jit",
    "value_grad_hess",
]

Arrays = dict[str, Any]
#: Step lengths tried at once along each Newton direction.
_STEPS = jnp.asarray([1.0, 0.5, 0.25, 0.1, 0.03, 0.01])

# code4 (alpha0 = 1) polynomial: coefficients = _A_INV @ b
_A_INV = jnp.asarray(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)


class FitSettings:
    """Static settings of the fits (hashable, part of the compiled function's key)."""

    def __init__(
        self,
        normcode: str,
        histcode: str,
        gtol: float = 1e-4,
    ) -> None:
        self.normcode = normcode
        self.histcode = histcode
        self.gtol = gtol

    def _key(self) -> tuple[Any, ...]:
        return (self.normcode, self.histcode, self.gtol)

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
        jnp.where(
            alpha < -1,
            alpha * dn if k == 0 else (dn if k == 1 else zero),
            jnp.where(alpha > 1, alpha * up if k == 0 else (up if k == 1 else zero), v),
        )
        for k, v in enumerate(inner)
    )


def code4_coefficients(hi: Any, lo: Any) -> Any:
    """pyhf's code4 polynomial coefficients (alpha0 = 1), shape ``(6, *hi.shape)``."""
    lhi, llo = jnp.log(hi), jnp.log(lo)
    b = jnp.stack([hi - 1, lo - 1, lhi * hi, -llo * lo, lhi**2 * hi, llo**2 * lo])
    return jnp.einsum("rc,c...->r...", _A_INV, b)


def _normsys(alpha: Any, a: Arrays, code: str) -> tuple[Any, Any, Any]:
    """Multiplicative normsys factor f, f'/f and f''/f (``a`` holds log hi/lo, coefs)."""
    lhi, llo = a["n_lhi"], a["n_llo"]
    pos = alpha > 0
    if code == "code1":
        r = jnp.where(pos, lhi, -llo)
        return jnp.exp(alpha * r), r, r * r
    coef = a["coef"]
    p = dp = ddp = jnp.zeros_like(lhi)
    for k in range(5, -1, -1):  # Horner: p = sum c_k a^(k+1), dp, ddp
        ddp = ddp * alpha + (k + 1) * k * coef[k] if k >= 1 else ddp
        dp = dp * alpha + (k + 1) * coef[k]
        p = p * alpha + coef[k]
    p = 1.0 + p * alpha
    outer = jnp.abs(alpha) >= 1
    log_base = jnp.where(pos, lhi, llo)
    r_out = jnp.where(pos, lhi, -llo)
    f = jnp.where(outer, jnp.exp(jnp.abs(alpha) * log_base), p)
    r = jnp.where(outer, r_out, dp / p)
    s = jnp.where(outer, r_out * r_out, ddp / p)
    return f, r, s


def _pieces(theta: Any, a: Arrays, s: FitSettings) -> dict[str, Any]:
    alpha = theta[:, None]
    hval, hd1, hd2 = _histosys(alpha, a["h_up"], a["h_dn"], s.histcode)
    nf, nr, ns = _normsys(alpha, a, s.normcode)  # (P, K) over the slots with normsys
    amount = a["nominal"] + jnp.sum(hval, axis=0)
    norm_slot = jnp.prod(nf, axis=0)
    cell_norm = a["cell_norm"]
    norm = cell_norm @ (norm_slot - 1.0) + 1.0
    ext = jnp.concatenate([theta, jnp.ones((1,), theta.dtype)])
    gathered = ext[a["gather"]]  # (C, M)
    mult = jnp.prod(gathered, axis=1)
    rate_cell = amount * norm * mult
    rate = rate_cell @ a["cell_bin"]
    return {
        "gathered": gathered,
        "amount": amount,
        "norm": norm,
        "mult": mult,
        "rate": rate,
        "hd1": hd1,
        "hd2": hd2,
        "nr": nr,
        "ns": ns,
    }


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
    """``-2 log L``, its gradient and its exact Hessian at ``theta`` (one point).

    With ``rate[c] = amount[c] * norm[c] * mult[c]`` per cell: histosys terms are additive
    in ``amount``, normsys terms multiply ``norm`` per sample (slot), and the
    multiplicative parameters (a small subspace ``mult_index``) multiply ``mult``. The
    Hessian is the Gauss-Newton part ``J W J^T`` plus ``sum_c u_c d2 rate_c``, assembled
    from small matrix products over the normsys slots and the multiplicative subspace.
    """
    pc = _pieces(theta, a, s)
    n_par = theta.shape[0]
    gathered = pc["gathered"]
    width = gathered.shape[1]
    n_cell = gathered.shape[0]
    cells = jnp.arange(n_cell)
    mult_index = a["mult_index"]
    n_mult = mult_index.shape[0]
    local = a["gather_local"]  # (C, M) indices into the multiplicative subspace
    cell_norm = a["cell_norm"]  # (C, K) one-hot
    rate = pc["rate"]
    w1 = 2.0 * (1.0 - jnp.where(data > 0, data / rate, 0.0))  # d f / d rate
    w2 = 2.0 * jnp.where(data > 0, data / rate**2, 0.0)  # d2 f / d rate2
    u = a["cell_bin"] @ w1  # per cell
    amount, norm, mult = pc["amount"], pc["norm"], pc["mult"]
    d1, d2, nr, ns = pc["hd1"], pc["hd2"], pc["nr"], pc["ns"]
    # d mult / d theta_j over the multiplicative subspace, products without one / two factors
    ones = jnp.ones((n_cell,), theta.dtype)
    dmult = jnp.zeros((n_mult + 1, n_cell), theta.dtype)
    h_tt = jnp.zeros((n_mult + 1, n_mult + 1), theta.dtype)
    scale = u * amount * norm
    for j in range(width):
        prod = ones
        for i in range(width):
            if i != j:
                prod = prod * gathered[:, i]
        dmult = dmult.at[local[:, j], cells].add(prod)
        for i in range(width):
            if i == j:
                continue
            prod2 = scale
            for k in range(width):
                if k not in (i, j):
                    prod2 = prod2 * gathered[:, k]
            h_tt = h_tt.at[local[:, i], local[:, j]].add(prod2)
    dmult, h_tt = dmult[:n_mult], h_tt[:n_mult, :n_mult]
    r_cell = nr @ cell_norm.T  # (P, C)
    alpha_part = d1 + amount * r_cell  # d (amount * norm) / d alpha / norm
    jac = ((mult * norm) * alpha_part) @ a["cell_bin"]  # (P, B)
    jac = jac.at[mult_index].add(((amount * norm) * dmult) @ a["cell_bin"])
    grad = jac @ w1
    # alpha-alpha: normsys x (histosys + normsys) cross terms over the normsys slots
    w = u * mult * norm
    d_slot = (d1 * w) @ cell_norm  # (P, K)
    wa_slot = (w * amount) @ cell_norm  # (K,)
    diag = jnp.sum(w * d2, axis=1) + (ns - nr * nr) @ wa_slot
    # alpha-mult and mult-mult blocks, embedded with the selection matrix of mult_index
    h_at = (alpha_part * (u * norm)) @ dmult.T  # (P, n_mult)
    select = a["mult_select"]  # (P, n_mult) one-hot
    # the whole Hessian as one product of thin factors plus a diagonal
    left = jnp.concatenate(
        [jac * w2, d_slot, nr, nr * wa_slot, h_at, select, select @ h_tt], axis=1
    )
    right = jnp.concatenate([jac, nr, d_slot, nr, select, h_at, select], axis=1)
    # constraints
    g_gauss = jnp.where(a["gauss"], 2.0 * (theta - aux) / a["sigma"] ** 2, 0.0)
    h_gauss = jnp.where(a["gauss"], 2.0 / a["sigma"] ** 2, 0.0)
    g_pois = jnp.where(a["poisson"], -2.0 * (aux / theta - a["tau"]), 0.0)
    h_pois = jnp.where(a["poisson"], 2.0 * aux / theta**2, 0.0)
    grad = grad + g_gauss + g_pois
    hess = left @ right.T + jnp.diag(diag + h_gauss + h_pois)
    value = _main(rate, data) + _constraint(theta, aux, a)
    del n_par
    return value, grad, hess


def newton_fit(
    init: Any,
    fixed: Any,
    data: Any,
    aux: Any,
    a: Arrays,
    s: FitSettings,
    max_iter: Any,
    lam0: Any = 1e-3,
) -> dict[str, Any]:
    """Minimise ``-2 log L`` of one point within the bounds, ``fixed`` parameters held.

    Each iteration solves the damped Newton system on the free parameters (those neither
    fixed nor held at a bound by the gradient), tries several step lengths along the
    projected path at once, keeps the lowest ``-2 log L`` and adapts the damping.

    At most ``max_iter`` Newton steps (a traced value: one compiled function serves any
    cap) start with damping ``lam0``, so that a fit can be continued where it stopped.

    Returns:
        ``theta``, ``value``, ``n_iter``, ``converged``, ``pgrad`` (largest projected
        gradient component) and ``lam`` (the damping reached).
    """
    lower, upper = a["lower"], a["upper"]
    theta0 = jnp.clip(init, lower, upper)
    n_par = init.shape[0]
    eye = jnp.eye(n_par, dtype=init.dtype)

    def projected(theta: Any, g: Any) -> tuple[Any, Any]:
        at_lo = theta <= lower + 1e-12 * (1.0 + jnp.abs(lower))
        at_hi = theta >= upper - 1e-12 * (1.0 + jnp.abs(upper))
        free = ~fixed & ~(at_lo & (g > 0)) & ~(at_hi & (g < 0))
        return free, jnp.max(jnp.abs(jnp.where(free, g, 0.0)))

    def cond(state: tuple[Any, ...]) -> Any:
        theta, f, g, _, lam, it = state
        _, pg = projected(theta, g)
        return (it == 0) | ((pg > s.gtol) & (it <= max_iter) & (lam < 1e12) & jnp.isfinite(f))

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        theta, f, g, h, lam, it = state
        free, _ = projected(theta, g)
        hf = jnp.where(free[:, None] & free[None, :], h, 0.0)
        diag = jnp.where(free, jnp.abs(jnp.diagonal(hf)) + 1e-8, 1.0)
        hd = hf + eye * jnp.where(free, lam * diag, 1.0)
        chol = jnp.linalg.cholesky(hd)
        step = jax.scipy.linalg.cho_solve((chol, True), -jnp.where(free, g, 0.0))
        ok = jnp.all(jnp.isfinite(step))
        step = jnp.where(free & ok, step, 0.0)
        # parallel backtracking along the projected path: the lowest -2 log L wins
        trials = jnp.clip(theta + _STEPS[:, None] * step, lower, upper)
        values = jax.vmap(lambda t: twice_nll(t, data, aux, a, s))(trials)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        best = jnp.argmin(values)
        trial = jnp.where(it == 0, theta, trials[best])
        ft, gt, ht = value_grad_hess(trial, data, aux, a, s)
        accept = (it == 0) | (ok & (values[best] < f) & jnp.isfinite(ft))
        new_lam = jnp.where(
            it == 0,
            lam,
            jnp.where(
                accept & (best == 0),
                jnp.maximum(lam * 0.1, 1e-12),
                jnp.where(accept, lam, lam * 10.0),
            ),
        )
        pick = partial(jnp.where, accept)
        return pick(trial, theta), pick(ft, f), pick(gt, g), pick(ht, h), new_lam, it + 1

    state = (
        theta0,
        jnp.asarray(jnp.inf, init.dtype),
        jnp.zeros_like(init),
        eye,
        jnp.asarray(lam0, init.dtype),
        jnp.asarray(0),
    )
    theta, f, g, _, lam, it = jax.lax.while_loop(cond, body, state)
    _, pg = projected(theta, g)
    # no step lowers -2 log L any more (rounding floor): accept a slightly larger gradient
    stalled = (lam >= 1e12) & (pg <= 100.0 * s.gtol)
    return {
        "theta": theta,
        "value": f,
        "n_iter": it - 1,
        "converged": ((pg <= s.gtol) | stalled) & jnp.isfinite(f),
        "pgrad": pg,
        "lam": lam,
    }


def prepare(a: Arrays, s: FitSettings) -> Arrays:
    """Add the derived arrays the fits need (log normsys factors, code4 coefficients)."""
    a = dict(a)
    a["n_lhi"], a["n_llo"] = jnp.log(a["n_hi"]), jnp.log(a["n_lo"])
    if s.normcode == "code4":
        a["coef"] = code4_coefficients(a["n_hi"], a["n_lo"])
    return a


@partial(jax.jit, static_argnames=("settings",))
def fit_batch(
    model: Arrays,
    init: Any,
    lam: Any,
    fixed: Any,
    data: Any,
    aux: Any,
    max_iter: Any,
    settings: FitSettings,
) -> dict[str, Any]:
    """:func:`newton_fit` over a batch of fits; row ``i`` has its own model arrays.

    ``max_iter`` is traced: one compiled function per set of shapes serves every pass.
    """

    def one(m: Arrays, i: Any, lm: Any, f: Any, d: Any, x: Any) -> dict[str, Any]:
        return newton_fit(i, f, d, x, prepare(m, settings), settings, max_iter, lm)

    return jax.vmap(one)(model, init, lam, fixed, data, aux)


@partial(jax.jit, static_argnames=("settings",))
def asimov_batch(model: Arrays, theta: Any, settings: FitSettings) -> dict[str, Any]:
    """Asimov main (``data``) and auxiliary (``aux``) data of every row at ``theta``."""

    def one(m: Arrays, t: Any) -> dict[str, Any]:
        a = prepare(m, settings)
        rate = _pieces(t, a, settings)["rate"]
        aux = jnp.where(a["gauss"], t, jnp.where(a["poisson"], t * a["tau"], a["aux"]))
        return {"data": rate, "aux": aux}

    return jax.vmap(one)(model, theta)


@partial(jax.jit, static_argnames=("settings",))
def twice_nll_jit(theta: Any, a: Arrays, settings: FitSettings) -> Any:
    """:func:`twice_nll` of one point (``a`` unprepared), compiled once per shape."""
    b = prepare(a, settings)
    return twice_nll(theta, b["data"], b["aux"], b, settings)
