"""``-2 log L`` of the dense HistFactory model in JAX (float64), with exact one-sided derivatives.

``twice_nll`` is ``-2 log L`` of :mod:`pyhf_dask.kernels.jax_model`'s dense model, without
the constant ``lgamma`` terms. :func:`derivatives` returns it with its exact gradient and
Hessian, computed analytically from the model's structure (rates are sums of products of
univariate functions), which costs a few small matrix products instead of a Hessian through
an autodiff graph.

Kinks. pyhf's ``code0`` histosys (slope ``up`` above 0, ``down`` below) and ``code1`` normsys
(``hi**alpha`` above 0, ``lo**-alpha`` below) have a jump in the first derivative at
``alpha = 0`` wherever the two sides differ. A parameter with such a term is *kinked*.
At a kinked parameter that sits exactly at 0, :func:`derivatives` computes both one-sided
derivatives and decides which side the fit may move to:

* ``g_left <= 0 <= g_right``: 0 is a minimum along that parameter; it is *held* (the KKT
  condition of a kink, as for a two-sided bound);
* otherwise the side of steepest one-sided descent (``g_right < 0`` or ``g_left > 0``);
  the gradient and Hessian returned are that side's. A kink where both sides descend is
  *concave* (a local maximum along the parameter); ``flip`` picks the other side there,
  which is how a second start explores the other mode.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = [
    "FitSettings",
    "asimov_rates",
    "code4_coefficients",
    "derivatives",
    "prepare",
    "twice_nll",
    "twice_nll_jit",
    "value_grad_hess",
]

Arrays = dict[str, Any]

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

    def __init__(self, normcode: str, histcode: str, gtol: float = 1e-4) -> None:
        self.normcode = normcode
        self.histcode = histcode
        self.gtol = gtol

    @property
    def kinked(self) -> bool:
        """Whether the interpolation codes have a kink at ``alpha = 0``."""
        return self.normcode == "code1" or self.histcode == "code0"

    def _key(self) -> tuple[Any, ...]:
        return (self.normcode, self.histcode, self.gtol)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FitSettings) and self._key() == other._key()

    def __repr__(self) -> str:
        return f"FitSettings({self.normcode!r}, {self.histcode!r}, gtol={self.gtol!r})"


def _histosys(alpha: Any, up: Any, dn: Any, code: str, pos: Any) -> tuple[Any, Any, Any]:
    """Additive histosys delta and its first two derivatives (``pos``: upper branch)."""
    zero = jnp.zeros_like(up)
    if code == "code0":
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


def _normsys(alpha: Any, a: Arrays, code: str, pos: Any) -> tuple[Any, Any, Any]:
    """Multiplicative normsys factor f, f'/f and f''/f (``pos``: upper branch at 0)."""
    lhi, llo = a["n_lhi"], a["n_llo"]
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
    up = alpha > 0
    log_base = jnp.where(up, lhi, llo)
    r_out = jnp.where(up, lhi, -llo)
    f = jnp.where(outer, jnp.exp(jnp.abs(alpha) * log_base), p)
    r = jnp.where(outer, r_out, dp / p)
    s = jnp.where(outer, r_out * r_out, ddp / p)
    return f, r, s


def _branch(theta: Any, right: Any) -> Any:
    """Upper-branch mask per parameter, ``(P, 1)``: above 0, or at 0 on the right side."""
    return ((theta > 0) | ((theta == 0) & right))[:, None]


def _pieces(theta: Any, a: Arrays, s: FitSettings, right: Any = False) -> dict[str, Any]:
    alpha = theta[:, None]
    pos = _branch(theta, right)
    hval, hd1, hd2 = _histosys(alpha, a["h_up"], a["h_dn"], s.histcode, pos)
    nf, nr, ns = _normsys(alpha, a, s.normcode, pos)  # (P, K) over the slots with normsys
    amount = a["nominal"] + jnp.sum(hval, axis=0)
    norm_slot = jnp.prod(nf, axis=0)
    norm = a["cell_norm"] @ (norm_slot - 1.0) + 1.0
    ext = jnp.concatenate([theta, jnp.ones((1,), theta.dtype)])
    gathered = ext[a["gather"]]  # (C, M)
    mult = jnp.prod(gathered, axis=1)
    rate = (amount * norm * mult) @ a["cell_bin"]
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
    return jnp.sum(gauss) + jnp.sum(_poisson_constraint(theta, aux, a))


def _poisson_constraint(theta: Any, aux: Any, a: Arrays) -> Any:
    """Poisson constraints (shapesys) as deviances, exact for any ``tau``.

    ``-2 [aux log(theta tau) - theta tau]`` minus its value at ``theta = aux / tau`` is
    ``2 tau b [r - 1 - log r]`` with ``b = aux / tau`` and ``r = theta / b``. A shapesys of
    tiny relative uncertainty has ``tau`` near 1e12: written as the raw log-likelihood,
    the term would be about 1e13 and its rounding would swamp every change a fit makes.
    """
    tau = jnp.where(a["poisson"], a["tau"], 1.0)
    b = jnp.where(a["poisson"], aux / tau, 1.0)
    ok = a["poisson"] & (b > 0)
    r = jnp.where(ok, theta / jnp.where(ok, b, 1.0), 1.0)
    dev = 2.0 * tau * b * ((r - 1.0) - jnp.log1p(r - 1.0))
    # aux = 0: the term is 2 theta tau (log 0 * 0 = 0)
    zero = a["poisson"] & (b <= 0)
    return jnp.where(ok, dev, jnp.where(zero, 2.0 * theta * tau, 0.0))


def _main(rate: Any, data: Any) -> Any:
    value = 2.0 * jnp.sum(rate - xlogy(data, rate))
    bad = jnp.any((rate <= 0) & (data > 0)) | ~jnp.isfinite(value)
    return jnp.where(bad, jnp.inf, value)


def asimov_rates(theta: Any, a: Arrays, s: FitSettings) -> Any:
    """Expected main-measurement rates per bin at ``theta``."""
    return _pieces(theta, a, s)["rate"]


def twice_nll(theta: Any, data: Any, aux: Any, a: Arrays, s: FitSettings) -> Any:
    """``-2 log L`` without constants (``+inf`` where a rate is invalid)."""
    return _main(_pieces(theta, a, s)["rate"], data) + _constraint(theta, aux, a)


def _mult_derivatives(pc: dict[str, Any], a: Arrays, u: Any, dtype: Any) -> tuple[Any, Any]:
    """d mult / d theta over the multiplicative subspace and its (weighted) second block."""
    gathered = pc["gathered"]
    n_cell, width = gathered.shape
    cells = jnp.arange(n_cell)
    n_mult = a["mult_index"].shape[0]
    local = a["gather_local"]  # (C, M) indices into the multiplicative subspace
    ones = jnp.ones((n_cell,), dtype)
    dmult = jnp.zeros((n_mult + 1, n_cell), dtype)
    h_tt = jnp.zeros((n_mult + 1, n_mult + 1), dtype)
    scale = u * pc["amount"] * pc["norm"]
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
    return dmult[:n_mult], h_tt[:n_mult, :n_mult]


def derivatives(
    theta: Any, data: Any, aux: Any, a: Arrays, s: FitSettings, flip: Any = False
) -> dict[str, Any]:
    """``-2 log L`` with its exact gradient and Hessian, one-sided at kinks (one point).

    With ``rate[c] = amount[c] * norm[c] * mult[c]`` per cell: histosys terms are additive
    in ``amount``, normsys terms multiply ``norm`` per sample (slot), and the
    multiplicative parameters (a small subspace ``mult_index``) multiply ``mult``. The
    Hessian is the Gauss-Newton part ``J W J^T`` plus ``sum_c u_c d2 rate_c``, assembled
    from small matrix products over the normsys slots and the multiplicative subspace.

    Returns:
        ``value``, ``grad`` and ``hess`` (of the side chosen at each kink), ``held`` (kinked
        parameters at 0 where 0 is a one-sided minimum), ``right`` (the side of each
        parameter: the fit keeps kinked parameters on it), ``concave`` (kinked parameters
        at 0 where both sides descend) and ``g_left``/``g_right`` (one-sided gradients).
    """
    pc = _pieces(theta, a, s)
    cell_norm = a["cell_norm"]  # (C, K) one-hot
    cell_bin = a["cell_bin"]
    rate = pc["rate"]
    w1 = 2.0 * (1.0 - jnp.where(data > 0, data / rate, 0.0))  # d f / d rate
    w2 = 2.0 * jnp.where(data > 0, data / rate**2, 0.0)  # d2 f / d rate2
    u = cell_bin @ w1  # per cell
    amount, norm, mult = pc["amount"], pc["norm"], pc["mult"]
    dmult, h_tt = _mult_derivatives(pc, a, u, theta.dtype)
    mult_index = a["mult_index"]
    g_gauss = jnp.where(a["gauss"], 2.0 * (theta - aux) / a["sigma"] ** 2, 0.0)
    # 2 tau (theta - b) / theta with b = aux / tau, without the cancellation of two large terms
    tau_p = jnp.where(a["poisson"], a["tau"], 1.0)
    g_pois = jnp.where(a["poisson"], 2.0 * tau_p * (theta - aux / tau_p) / theta, 0.0)
    mult_jac = ((amount * norm) * dmult) @ cell_bin

    def alpha_side(right: Any) -> tuple[Any, ...]:
        pos = _branch(theta, right)
        alpha = theta[:, None]
        _, d1, d2 = _histosys(alpha, a["h_up"], a["h_dn"], s.histcode, pos)
        _, nr, ns = _normsys(alpha, a, s.normcode, pos)
        alpha_part = d1 + amount * (nr @ cell_norm.T)  # d (amount * norm) / d alpha / norm
        jac = ((mult * norm) * alpha_part) @ cell_bin  # (P, B)
        jac = jac.at[mult_index].add(mult_jac)
        return d1, d2, nr, ns, alpha_part, jac, jac @ w1 + g_gauss + g_pois

    left = alpha_side(False)
    if s.kinked:
        rightside = alpha_side(True)
        g_left, g_right = left[-1], rightside[-1]
        at0 = a["kink"] & (theta == 0) & ~a["fixed"]
        down_r, down_l = g_right < 0, g_left > 0
        concave = at0 & down_r & down_l
        choose_r = jnp.where(concave, (-g_right >= g_left) ^ flip, down_r)
        held = at0 & ~down_r & ~down_l
        right = (theta > 0) | (at0 & choose_r)
        parts = tuple(
            jnp.where(right if x.ndim == 1 else right[:, None], y, x)
            for x, y in zip(left, rightside, strict=True)
        )
    else:
        parts = left
        g_left = g_right = left[-1]
        held = concave = jnp.zeros(theta.shape, bool)
        right = theta > 0
    d1, d2, nr, ns, alpha_part, jac, grad = parts
    # alpha-alpha: normsys x (histosys + normsys) cross terms over the normsys slots
    w = u * mult * norm
    d_slot = (d1 * w) @ cell_norm  # (P, K)
    wa_slot = (w * amount) @ cell_norm  # (K,)
    diag = jnp.sum(w * d2, axis=1) + (ns - nr * nr) @ wa_slot
    # alpha-mult and mult-mult blocks, embedded with the selection matrix of mult_index
    h_at = (alpha_part * (u * norm)) @ dmult.T  # (P, n_mult)
    select = a["mult_select"]  # (P, n_mult) one-hot
    # the whole Hessian as one product of thin factors plus a diagonal
    lhs = jnp.concatenate([jac * w2, d_slot, nr, nr * wa_slot, h_at, select, select @ h_tt], 1)
    rhs = jnp.concatenate([jac, nr, d_slot, nr, select, h_at, select], axis=1)
    h_gauss = jnp.where(a["gauss"], 2.0 / a["sigma"] ** 2, 0.0)
    h_pois = jnp.where(a["poisson"], 2.0 * aux / theta**2, 0.0)
    hess = lhs @ rhs.T + jnp.diag(diag + h_gauss + h_pois)
    return {
        "value": _main(rate, data) + _constraint(theta, aux, a),
        "grad": grad,
        "hess": hess,
        "held": held,
        "right": right,
        "concave": concave,
        "g_left": g_left,
        "g_right": g_right,
    }


def value_grad_hess(
    theta: Any, data: Any, aux: Any, a: Arrays, s: FitSettings
) -> tuple[Any, Any, Any]:
    """``-2 log L``, its gradient and its exact Hessian at ``theta`` (one point)."""
    d = derivatives(theta, data, aux, a, s)
    return d["value"], d["grad"], d["hess"]


def prepare(a: Arrays, s: FitSettings) -> Arrays:
    """Add the derived arrays the fits need (log normsys factors, code4 coefficients, kinks).

    ``kink`` marks the parameters whose likelihood has a kink at 0 under the settings'
    codes: a ``code0`` histosys with different up and down slopes, or a ``code1`` normsys
    with ``log(hi) != -log(lo)``.
    """
    a = dict(a)
    a["n_lhi"], a["n_llo"] = jnp.log(a["n_hi"]), jnp.log(a["n_lo"])
    if s.normcode == "code4":
        a["coef"] = code4_coefficients(a["n_hi"], a["n_lo"])
    kink = jnp.zeros(a["init"].shape, bool)
    if s.histcode == "code0":
        kink = kink | jnp.any(a["h_up"] != a["h_dn"], axis=1)
    if s.normcode == "code1":
        kink = kink | jnp.any(a["n_lhi"] != -a["n_llo"], axis=1)
    a["kink"] = kink
    return a


@partial(jax.jit, static_argnames=("settings",))
def twice_nll_jit(theta: Any, a: Arrays, settings: FitSettings) -> Any:
    """:func:`twice_nll` of one point (``a`` unprepared), compiled once per shape."""
    b = prepare(a, settings)
    return twice_nll(theta, b["data"], b["aux"], b, settings)
