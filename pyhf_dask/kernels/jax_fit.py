"""Batched bounded Newton fits of the dense HistFactory likelihood, exact at kinks (JAX).

:func:`newton_fit` minimises ``-2 log L`` (:mod:`pyhf_dask.kernels.jax_nll`) within the
parameter bounds with a projected Newton method and Levenberg-Marquardt damping. Kinks of
``code0``/``code1`` interpolation at ``alpha = 0`` are treated like two-sided bounds, as
OWL-QN treats L1 terms (orthant-wise active set):

* a kinked parameter at 0 whose one-sided derivatives bracket 0 is held there and leaves
  the Newton system (it satisfies the kink's KKT condition);
* otherwise it leaves 0 on the side of steepest one-sided descent, with that side's
  gradient and Hessian;
* a kinked parameter never crosses 0 within a step: trial points are clipped at 0 (the
  parameter's orthant), and the next iteration decides again from both one-sided
  derivatives there.

Convergence is certified, never taken from a flag: the largest KKT residual (projected
gradient of the free parameters; held kinks and active bounds contribute 0) is below
``gtol``, and the Hessian of the free parameters is positive semi-definite (no saddle or
maximum). Where a free parameter has negative curvature, steps along it (both signs) join
the line search, so that a fit that starts on a saddle leaves it.

:func:`fit_batch` runs a batch of such fits (any points, any fixed parameters) as one
vmapped computation; :func:`asimov_batch` builds the Asimov data of a batch of points.

One rule keeps the computation from deadlocking on small machines: at most one LAPACK
call (Cholesky, triangular solve) may be runnable at any time. XLA's CPU runtime runs a
batched LAPACK call through its thread pool (``ParallelBatchMap``) and runs independent
operations at once; two such calls at once on a 2-thread pool wait for each other
forever. So LAPACK calls form one chain of data dependencies: none in the loop's
``cond`` (a batched ``while_loop`` evaluates ``cond`` of the old state inside the body,
beside the body's own), and one factorisation after the loop for both certificates.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from pyhf_dask.kernels.jax_nll import (
    FitSettings,
    asimov_rates,
    derivatives,
    prepare,
    twice_nll,
    twice_nll_jit,
    value_grad_hess,
)

__all__ = [
    "FitSettings",
    "asimov_batch",
    "fit_batch",
    "newton_fit",
    "other_sides",
    "prepare",
    "sides_batch",
    "twice_nll",
    "twice_nll_jit",
    "value_grad_hess",
]

Arrays = dict[str, Any]
#: Step lengths tried at once along each Newton direction.
_STEPS = jnp.asarray([1.0, 0.5, 0.25, 0.1, 0.03, 0.01])
#: Step lengths tried along a direction of negative curvature (both signs).
_CURVATURE_STEPS = jnp.asarray([1.0, -1.0, 0.25, -0.25])
#: Relative size of a negative Hessian diagonal entry that counts as negative curvature.
_NEGATIVE = 1e-6
#: Step of the one-sided differences that look across a kink.
_PROBE = 1e-7
#: Distances from a kink at which :func:`other_sides` looks at the other side.
_SIDE_STEPS = jnp.asarray([0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 2.0])
#: ``-2 log L`` a Newton step may still gain at a certified stall (rounding floor).
_STALL_GAIN = 1e-9
#: Kinked parameters closer to 0 than this after a step are put exactly on the kink.
_SNAP = 1e-12


def _bounds(a: Arrays, right: Any) -> tuple[Any, Any]:
    """Bounds of a step: the parameter bounds, and 0 on the far side of each kink."""
    lower = jnp.where(a["kink"] & right, jnp.maximum(a["lower"], 0.0), a["lower"])
    upper = jnp.where(a["kink"] & ~right, jnp.minimum(a["upper"], 0.0), a["upper"])
    return lower, upper


def _free(theta: Any, g: Any, fixed: Any, held: Any, lower: Any, upper: Any) -> Any:
    """Parameters in the Newton system: not fixed, not held at a kink, not pushed at a bound."""
    at_lo = theta <= lower + 1e-12 * (1.0 + jnp.abs(lower))
    at_hi = theta >= upper - 1e-12 * (1.0 + jnp.abs(upper))
    return ~fixed & ~held & ~(at_lo & (g > 0)) & ~(at_hi & (g < 0))


def _certificate(h: Any, g: Any, free: Any) -> tuple[Any, Any]:
    """Curvature and Newton-decrement certificates of the free parameters, from one Cholesky.

    Returns:
        ``psd``: the Hessian restricted to the free parameters is positive semi-definite
        (up to a relative shift of 1e-9); ``gain``: ``g^T H^-1 g / 2`` on the free
        subspace, the ``-2 log L`` a full Newton step would still gain (``inf`` where the
        Hessian is not positive definite). Unlike the gradient, the gain does not depend
        on the parameters' scales.

    One factorisation, and the solve depends on it: two independent LAPACK calls in one
    XLA computation can run at once and wait on each other's thread pool forever (2 cores).
    """
    n = h.shape[0]
    hf = jnp.where(free[:, None] & free[None, :], h, 0.0)
    scale = 1.0 + jnp.max(jnp.abs(jnp.diagonal(hf)))
    shifted = hf + jnp.eye(n, dtype=h.dtype) * jnp.where(free, 1e-9 * scale, 1.0)
    chol = jnp.linalg.cholesky(shifted)
    psd = jnp.all(jnp.isfinite(chol))
    gf = jnp.where(free, g, 0.0)
    step = jax.scipy.linalg.cho_solve((chol, True), gf)
    gain = 0.5 * jnp.dot(gf, step)
    return psd, jnp.where(psd & jnp.isfinite(gain) & (gain >= 0.0), gain, jnp.inf)


def _other_side_descends(
    theta: Any, fixed: Any, data: Any, aux: Any, a: Arrays, s: FitSettings
) -> Any:
    """Kinked parameters off 0 whose kink, with the others where they are, is concave.

    For each kinked parameter ``j`` on one side of 0, the slope into the other side at
    ``theta_j = 0`` (a one-sided difference): where it descends, the other side may hold
    a lower mode, and a start mirrored there is worth a try.
    """
    n_par = theta.shape[0]
    if not s.kinked:  # smooth codes: no kinks (and no -2 log L to compile for them)
        return jnp.zeros((n_par,), bool)
    off = a["kink"] & ~fixed & (theta != 0)

    def probes(j: Any) -> Any:
        at0 = theta.at[j].set(0.0)
        return jnp.stack([at0, at0.at[j].set(-jnp.sign(theta[j]) * _PROBE)])

    # every probe in one evaluation: (n_par, 2) values, at 0 and across
    values = jax.vmap(lambda t: twice_nll(t, data, aux, a, s))(
        jax.vmap(probes)(jnp.arange(n_par)).reshape(2 * n_par, n_par)
    ).reshape(n_par, 2)
    slopes = (values[:, 1] - values[:, 0]) / _PROBE
    return off & (slopes < -s.gtol)


def newton_fit(
    init: Any,
    fixed: Any,
    data: Any,
    aux: Any,
    a: Arrays,
    s: FitSettings,
    max_iter: Any,
    lam0: Any = 1e-3,
    flip: Any = False,
) -> dict[str, Any]:
    """Minimise ``-2 log L`` of one point within the bounds, ``fixed`` parameters held.

    Each iteration solves the damped Newton system on the free parameters, tries several
    step lengths along the projected path (and along a direction of negative curvature,
    if any) at once, keeps the lowest ``-2 log L`` and adapts the damping.

    At most ``max_iter`` Newton steps (a traced value: one compiled function serves any
    cap) start with damping ``lam0``, so that a fit can be continued where it stopped.
    ``flip`` takes the less steep side at concave kinks (a second start's other mode).

    Returns:
        ``theta``, ``value``, ``n_iter``, ``converged`` (certified: KKT residual below
        ``gtol`` and no negative curvature), ``pgrad`` (the KKT residual), ``lam``,
        ``n_kink`` (parameters held at a kink), ``concave`` (per parameter: a concave kink
        of it was met, so that its other side may hold a lower mode) and
        ``psd`` (the free Hessian is positive semi-definite).
    """
    theta0 = jnp.clip(init, a["lower"], a["upper"])
    theta0 = jnp.where(a["kink"] & (jnp.abs(theta0) < _SNAP), 0.0, theta0)
    n_par = init.shape[0]
    eye = jnp.eye(n_par, dtype=init.dtype)

    def residual(theta: Any, g: Any, held: Any, right: Any) -> tuple[Any, Any, Any]:
        lower, upper = _bounds(a, right)
        free = _free(theta, g, fixed, held, lower, upper)
        return free, jnp.max(jnp.abs(jnp.where(free, g, 0.0))), (lower, upper)

    def _line_search(theta: Any, moves: Any, lower: Any, upper: Any) -> tuple[Any, Any]:
        trials = jnp.clip(theta + moves, lower, upper)
        trials = jnp.where(a["kink"] & (jnp.abs(trials) < _SNAP), 0.0, trials)
        values = jax.vmap(lambda t: twice_nll(t, data, aux, a, s))(trials)
        return jnp.where(jnp.isfinite(values), values, jnp.inf), trials

    def negative_curvature(h: Any, free: Any) -> Any:
        curv = jnp.where(free, jnp.diagonal(h), 0.0)
        return jnp.any(curv < -_NEGATIVE * (1.0 + jnp.max(jnp.abs(curv))))

    def cond(state: tuple[Any, ...]) -> Any:
        theta, f, g, h, held, right, _, lam, it = state
        free, pg, _ = residual(theta, g, held, right)
        negative = negative_curvature(h, free)
        going = ((pg > s.gtol) | negative) & (it <= max_iter) & (lam < 1e12) & jnp.isfinite(f)
        return (it == 0) | going

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        theta, f, g, h, held, right, seen, lam, it = state
        free, _, (lower, upper) = residual(theta, g, held, right)
        hf = jnp.where(free[:, None] & free[None, :], h, 0.0)
        diag = jnp.where(free, jnp.abs(jnp.diagonal(hf)) + 1e-8, 1.0)
        hd = hf + eye * jnp.where(free, lam * diag, 1.0)
        chol = jnp.linalg.cholesky(hd)
        step = jax.scipy.linalg.cho_solve((chol, True), -jnp.where(free, g, 0.0))
        ok = jnp.all(jnp.isfinite(step))
        step = jnp.where(free & ok, step, 0.0)
        # no Newton progress: try a direction of negative curvature (the free parameter
        # of lowest curvature, both signs), which leaves a saddle or a local maximum
        curv = jnp.where(free, jnp.diagonal(h), jnp.inf)
        j = jnp.argmin(curv)
        bent = curv[j] < -_NEGATIVE * (1.0 + jnp.max(jnp.where(free, jnp.abs(curv), 0.0)))
        bend = jnp.where(bent, eye[j], 0.0)
        # parallel backtracking along the projected path, and the curvature trials, in one
        # evaluation (one copy of -2 log L in the compiled loop): the lowest wins
        moves = jnp.concatenate([_STEPS[:, None] * step, _CURVATURE_STEPS[:, None] * bend])
        all_values, all_trials = _line_search(theta, moves, lower, upper)
        n_steps = _STEPS.shape[0]
        values, trials = all_values[:n_steps], all_trials[:n_steps]
        c_values, c_trials = all_values[n_steps:], all_trials[n_steps:]
        # no Newton step (the damped system is not positive definite): no Newton trial, or
        # rounding noise between two evaluations of the same point would pass for progress
        values = jnp.where(ok & jnp.any(step != 0.0), values, jnp.inf)
        best = jnp.argmin(values)
        c_best = jnp.argmin(c_values)
        use_c = bent & (values[best] >= f) & (c_values[c_best] < f)
        values = jnp.where(use_c, c_values[c_best], values[best])
        chosen = jnp.where(use_c, c_trials[c_best], trials[best])
        best = jnp.where(use_c, -1, best)
        trial = jnp.where(it == 0, theta, chosen)
        d = derivatives(trial, data, aux, a, s, flip)
        accept = (it == 0) | ((values < f) & jnp.isfinite(d["value"]))
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
        return (
            pick(trial, theta),
            pick(d["value"], f),
            pick(d["grad"], g),
            pick(d["hess"], h),
            pick(d["held"], held),
            pick(d["right"], right),
            seen | (accept & d["concave"]),
            new_lam,
            it + 1,
        )

    false = jnp.zeros((n_par,), bool)
    state = (
        theta0,
        jnp.asarray(jnp.inf, init.dtype),
        jnp.zeros_like(init),
        eye,
        false,
        theta0 > 0,
        false,
        jnp.asarray(lam0, init.dtype),
        jnp.asarray(0),
    )
    theta, f, g, h, held, right, seen, lam, it = jax.lax.while_loop(cond, body, state)
    free, pg, _ = residual(theta, g, held, right)
    psd, gain = _certificate(h, g, free)
    seen = seen | _other_side_descends(theta, fixed, data, aux, a, s)
    # no step lowers -2 log L any more: at the rounding floor of a steep likelihood (large
    # curvature, as for shapesys constraints with tau ~ 1e12) the gradient cannot get below
    # gtol, but what a Newton step would still gain is negligible; a flat direction or a
    # stall away from the minimum gains more than that and is not certified
    stalled = (lam >= 1e12) & (gain <= _STALL_GAIN)
    return {
        "theta": theta,
        "value": f,
        "n_iter": it - 1,
        "converged": ((pg <= s.gtol) | stalled) & psd & jnp.isfinite(f),
        "pgrad": pg,
        "lam": lam,
        "n_kink": jnp.sum(held & ~fixed),
        "concave": seen,
        "psd": psd,
    }


def other_sides(
    theta: Any, fixed: Any, data: Any, aux: Any, a: Arrays, s: FitSettings
) -> dict[str, Any]:
    """The lowest ``-2 log L`` on the other side of each kink, the other parameters held.

    For each free kinked parameter ``j``, ``-2 log L`` at ``theta`` with ``theta_j`` moved
    to each of :data:`_SIDE_STEPS` on the other side of 0 (both sides for a parameter on
    the kink), within its bounds. Where that is lower than at ``theta``, a fit started
    there ends in a lower minimum than ``theta``'s: with code0/code1 kinks the likelihood
    has one local minimum per combination of sides, and this ranks which side to try.

    Returns:
        ``value`` (``inf`` for parameters without a kink) and ``x``, where it was found.
    """
    n_par = theta.shape[0]
    steps = jnp.concatenate([_SIDE_STEPS, -_SIDE_STEPS])

    def one(j: Any) -> tuple[Any, Any]:
        other = (jnp.sign(steps) != jnp.sign(theta[j])) | (theta[j] == 0)
        inside = (steps >= a["lower"][j]) & (steps <= a["upper"][j])
        trials = jnp.broadcast_to(theta, (steps.shape[0], n_par)).at[:, j].set(steps)
        values = jax.vmap(lambda t: twice_nll(t, data, aux, a, s))(trials)
        values = jnp.where(other & inside & jnp.isfinite(values), values, jnp.inf)
        best = jnp.argmin(values)
        return values[best], steps[best]

    values, xs = jax.vmap(one)(jnp.arange(n_par))
    return {"value": jnp.where(a["kink"] & ~fixed, values, jnp.inf), "x": xs}


@partial(jax.jit, static_argnames=("settings",))
def sides_batch(
    model: Arrays, theta: Any, fixed: Any, data: Any, aux: Any, settings: FitSettings
) -> dict[str, Any]:
    """:func:`other_sides` over a batch of rows; row ``i`` has its own model arrays."""

    def one(m: Arrays, t: Any, f: Any, d: Any, x: Any) -> dict[str, Any]:
        return other_sides(t, f, d, x, prepare(m, settings), settings)

    return jax.vmap(one)(model, theta, fixed, data, aux)


@partial(jax.jit, static_argnames=("settings",))
def fit_batch(
    model: Arrays,
    init: Any,
    lam: Any,
    fixed: Any,
    data: Any,
    aux: Any,
    flip: Any,
    max_iter: Any,
    settings: FitSettings,
) -> dict[str, Any]:
    """:func:`newton_fit` over a batch of fits; row ``i`` has its own model arrays.

    ``max_iter`` is traced: one compiled function per set of shapes serves every pass.
    """

    def one(m: Arrays, i: Any, lm: Any, f: Any, d: Any, x: Any, fl: Any) -> dict[str, Any]:
        return newton_fit(i, f, d, x, prepare(m, settings), settings, max_iter, lm, fl)

    return jax.vmap(one)(model, init, lam, fixed, data, aux, flip)


@partial(jax.jit, static_argnames=("settings",))
def asimov_batch(model: Arrays, theta: Any, settings: FitSettings) -> dict[str, Any]:
    """Asimov main (``data``) and auxiliary (``aux``) data of every row at ``theta``."""

    def one(m: Arrays, t: Any) -> dict[str, Any]:
        a = prepare(m, settings)
        rate = asimov_rates(t, a, settings)
        aux = jnp.where(a["gauss"], t, jnp.where(a["poisson"], t * a["tau"], a["aux"]))
        return {"data": rate, "aux": aux}

    return jax.vmap(one)(model, theta)
