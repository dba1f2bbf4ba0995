"""The JAX kernel's upper limits: every point's six root searches in lockstep, batched.

After a chunk's hypothesis tests (:func:`pyhf_dask.kernels.jax_kernel._run_group`), the
free fits on the data and on the Asimov data, and the Asimov data themselves (made at
POI = 0), do not depend on the tested POI: they are shared by every step. A step of the
search (:class:`~pyhf_dask.kernels.limits.Lockstep`) proposes, per point, one POI value
for the observed curve and one per expected curve; it costs one fixed-POI fit on the data
(observed curve only) and one fixed-POI fit on the Asimov data per curve, all points and
curves in one batch of :func:`~pyhf_dask.kernels.jax_batch.run_fits`. Expected CLs depend
on ``sqrt(q_A(mu))`` only, so their searches solve ``sqrt(q_A(mu)) = s_n``
(:func:`~pyhf_dask.kernels.limits.expected_targets`); the observed one solves
``Phi^-1(1 - CLs_obs(mu)) = Phi^-1(1 - alpha)``; both are close to linear in ``mu``.

Brackets: the tested POI values of the chunk and, where those do not bracket a curve,
the POI's bounds. pyhf's fits refuse POI values outside the bounds (and the JAX fitter
clips them), so a curve whose CLs stays above ``1 - cl`` at the upper bound has no limit
within the bounds: NaN and ``limit_status`` ``above_range`` (``below_range`` for CLs below
``1 - cl`` at the lower bound), never a clamped number.

Every fixed fit starts from the point's fit of the same data at the nearest POI value
already fitted; one that does not certify is started again from the free fit. A curve
whose fit still does not certify, or ends below the free fit of its data (the free fit
was not the minimum), stops with a NaN limit and ``limit_status`` ``failed``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pyhf_dask.kernels.limits import (
    ABOVE,
    BELOW,
    FAILED,
    FOUND,
    Lockstep,
    expected_targets,
    log_cls,
    z_of,
)

__all__ = ["fill_limits"]

log = logging.getLogger(__name__)

#: -2 log L by which a fixed fit may lie below the free fit of its data.
GAP = 1e-6


class _History:
    """Per point, the fixed-POI fits of one data set so far (warm starts)."""

    def __init__(self, mus: np.ndarray, theta: np.ndarray) -> None:
        self.mus = mus  # (n, H), NaN for free fits
        self.theta = theta  # (n, H, P)

    def nearest(self, rows: np.ndarray, mu: np.ndarray) -> np.ndarray:
        d = np.abs(self.mus[rows] - mu[:, None])
        d = np.where(np.isfinite(d), d, np.inf)
        return self.theta[rows, np.argmin(d, axis=1)]

    def add(self, rows: np.ndarray, mu: np.ndarray, theta: np.ndarray) -> None:
        n = self.mus.shape[0]
        col_mu = np.full((n, 1), np.nan)
        col_theta = np.zeros((n, 1, self.theta.shape[2]))
        # one column per call; a point with several fits in the call keeps the last
        col_mu[rows, 0] = mu
        col_theta[rows, 0] = theta
        self.mus = np.concatenate([self.mus, col_mu], axis=1)
        self.theta = np.concatenate([self.theta, col_theta], axis=1)


def fill_limits(
    out: dict[str, np.ndarray],
    stack: Any,
    options: dict[str, Any],
    device: Any,
    res: dict[str, np.ndarray],
    ok: np.ndarray,
) -> None:
    """Root-search the upper limits of the stack's points and write them into ``out``.

    Args:
        out: the chunk's result (:data:`~pyhf_dask.kernels.LIMIT_FIELDS` are filled).
        stack: the padded points (:class:`~pyhf_dask.kernels.jax_batch.Stack`).
        options: complete fit options.
        device: the JAX device.
        res: the hypothesis tests' fits (``_run_group``).
        ok: ``(n,)`` points whose tests were all certified: only they are searched.
    """
    import jax

    from pyhf_dask.kernels.jax_batch import batch_size, run_fits
    from pyhf_dask.kernels.jax_export import call
    from pyhf_dask.kernels.jax_fit import FitSettings, fit_batch
    from pyhf_dask.kernels.jax_kernel import _JAX_LOCK

    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])
    models = stack.arrays
    poi = np.asarray(stack.poi)
    index = np.asarray(stack.index)
    n = len(index)
    size = batch_size(stack.dims[0], getattr(device, "platform", "cpu"), 7 * n)

    def fit(model: dict[str, Any], *args: Any) -> dict[str, Any]:
        with _JAX_LOCK:
            got = call(fit_batch, settings, *jax.device_put((model, *args), device))
            return dict(jax.device_get(got))

    test_stat = options["test_stat"]
    alpha = 1.0 - float(options["cl"])
    z_alpha = float(z_of(np.log(np.array(alpha))))
    targets = expected_targets(float(options["cl"]))
    mus = np.asarray(options["poi_values"], dtype=np.float64)
    rows_all = np.arange(n)
    lo = models["lower"][rows_all, poi].astype(float)
    hi = models["upper"][rows_all, poi].astype(float)
    free_v, free_va = res["obs_value"][:, 1], res["asimov_value"][:, 0]
    muhat, muhat_a = res["obs_muhat"], res["asimov_muhat"]
    free_theta, free_theta_a = res["obs_theta"][:, 1], res["asimov_theta"][:, 0]
    data_a, aux_a = res["asimov_data"], res["asimov_aux"]
    hist = _History(
        np.concatenate([np.tile([0.0, np.nan], (n, 1)), np.tile(mus, (n, 1))], axis=1),
        res["obs_theta"].copy(),
    )
    hist_a = _History(
        np.concatenate([np.full((n, 1), np.nan), np.tile(mus, (n, 1))], axis=1),
        res["asimov_theta"].copy(),
    )
    base_fixed = models["fixed"].astype(bool)
    n_fits = np.zeros(n, dtype=np.int64)

    def fixed_fits(rows: np.ndarray, mu: np.ndarray, asimov: bool) -> tuple[np.ndarray, np.ndarray]:
        """``-2 log L`` (NaN: not certified) and parameters of fixed fits at ``mu``."""
        if not len(rows):
            return np.zeros(0), np.zeros((0, base_fixed.shape[1]))
        h = hist_a if asimov else hist
        data, aux = (data_a, aux_a) if asimov else (models["data"], models["aux"])
        fixed = base_fixed[rows].copy()
        fixed[np.arange(len(rows)), poi[rows]] = True
        value = np.full(len(rows), np.nan)
        theta = np.zeros((len(rows), base_fixed.shape[1]))
        todo = np.ones(len(rows), dtype=bool)
        free = free_theta_a if asimov else free_theta
        for start in (h.nearest(rows, mu), free[rows]):
            sel = np.flatnonzero(todo)
            if not len(sel):
                break
            init = start[sel].copy()
            init[np.arange(len(sel)), poi[rows[sel]]] = mu[sel]
            got = run_fits(
                fit, models, rows[sel], init, fixed[sel], data[rows[sel]], aux[rows[sel]], size
            )
            np.add.at(n_fits, rows[sel], 1)
            good = np.asarray(got["converged"], dtype=bool)
            value[sel[good]] = got["value"][good]
            theta[sel[good]] = got["theta"][good]
            todo[sel[good]] = False
        floor = (free_va if asimov else free_v)[rows]
        value = np.where(value < floor - GAP, np.nan, value)  # the free fit was no minimum
        good = np.isfinite(value)
        h.add(rows[good], mu[good], theta[good])
        return value, theta

    def curves(mu_obs: np.ndarray, mu_exp: np.ndarray) -> np.ndarray:
        """``(n, 6)`` function values (NaN where not asked or not certified)."""
        g = np.full((n, 6), np.nan)
        r_obs = np.flatnonzero(np.isfinite(mu_obs))
        v_obs, _ = fixed_fits(r_obs, mu_obs[r_obs], asimov=False)
        mu_a = np.concatenate([mu_obs[:, None], mu_exp], axis=1)
        pr, pk = np.nonzero(np.isfinite(mu_a))
        v_a, _ = fixed_fits(pr, mu_a[pr, pk], asimov=True)
        qa = np.where(muhat_a[pr] > mu_a[pr, pk], 0.0, np.clip(v_a - free_va[pr], 0.0, None))
        exp = pk > 0
        g[pr[exp], pk[exp]] = np.sqrt(qa[exp]) - targets[pk[exp] - 1]
        qa_obs = np.full(n, np.nan)
        qa_obs[pr[~exp]] = qa[~exp]
        q = np.full(n, np.nan)
        q[r_obs] = np.where(
            muhat[r_obs] > mu_obs[r_obs], 0.0, np.clip(v_obs - free_v[r_obs], 0.0, None)
        )
        with np.errstate(invalid="ignore"):
            g[:, 0] = z_of(log_cls(q, qa_obs, test_stat)) - z_alpha
        g[:, 0] = np.where(np.isfinite(mu_obs) & ~np.isnan(q) & ~np.isnan(qa_obs), g[:, 0], np.nan)
        return g

    # what the tests at the POI values say already, then the bounds where needed
    searched = ok.copy()
    g_tested = _tested_curves(res, mus, test_stat, targets, z_alpha)  # (n, 6, k)
    # a point needs an end where one of its wanted curves has no tested value on that side
    wanted = _wanted(options["curves"])
    above = np.any(g_tested > 0, axis=2) | ~wanted[None, :]
    below = np.any(g_tested < 0, axis=2) | ~wanted[None, :]
    need_hi = ~np.all(above, axis=1) & searched
    need_lo = ~np.all(below, axis=1) & searched
    g_ends = []
    for end, need in ((hi, need_hi), (lo, need_lo)):
        at = np.where(need, end, np.nan)
        at_exp = np.repeat(at[:, None], 5, axis=1) if wanted[1] else np.full((n, 5), np.nan)
        g_ends.append(curves(at if wanted[0] else np.full(n, np.nan), at_exp)[..., None])
    g_all = np.concatenate([g_tested, *g_ends], axis=2)  # (n, 6, k + 2)
    mu_all = np.concatenate([np.tile(mus, (n, 1)), hi[:, None], lo[:, None]], axis=1)
    evaluated = ~np.isnan(g_all)
    a, b, ga, gb, flag = _brackets(mu_all, g_all, evaluated)
    # an end that was needed but whose fits did not certify: no verdict, not "no root"
    for g_end, need, side in ((g_ends[0], need_hi, ABOVE), (g_ends[1], need_lo, BELOW)):
        lost = need[:, None] & np.isnan(g_end[..., 0]) & wanted[None, :] & (flag == side)
        flag = np.where(lost, FAILED, flag).astype(np.int8)
    a = np.where(searched[:, None], a, np.nan)
    a = np.where(wanted[None, :], a, np.nan)  # a curve not asked for is never fitted
    flag = np.where(wanted[None, :], flag, FOUND)
    solver = Lockstep(a, b, ga, gb, rtol=float(options["limit_rtol"]))
    while not solver.done.all():
        x = solver.propose()
        solver.update(x, curves(x[:, 0], x[:, 1:]))
    limits = np.where(solver.failed, np.nan, solver.root)
    flag = np.where(solver.failed & (flag == FOUND), FAILED, flag)
    flag = np.where(searched[:, None], flag, FAILED)
    status = np.where(
        (flag == FAILED).any(axis=1),
        FAILED,
        np.where(
            (flag == ABOVE).any(axis=1), ABOVE, np.where((flag == BELOW).any(axis=1), BELOW, FOUND)
        ),
    ).astype(np.int8)
    out["upper_limit_obs"][index] = limits[:, 0]
    out["upper_limit_exp"][index] = limits[:, 1:]
    out["limit_status"][index] = status
    for row in range(n):
        i = int(index[row])
        note = f"limits: {int(n_fits[row])} fits in {solver.steps} root-search steps"
        if status[row] == ABOVE:
            note += f"; CLs above {alpha:g} up to the POI's upper bound {hi[row]:g}"
        elif status[row] == BELOW:
            note += f"; CLs below {alpha:g} already at the POI's lower bound {lo[row]:g}"
        elif status[row] == FAILED:
            note += "; the search's fits could not be certified"
        out["message"][i] = f"{out['message'][i]}; {note}"
    log.debug("root search: %d points, %d steps, %d fits", n, solver.steps, int(n_fits.sum()))


def _wanted(curves: str) -> np.ndarray:
    """``(6,)`` the curves searched: observed, then the five expected."""
    return np.array([curves != "expected"] + [curves != "observed"] * 5)


def _tested_curves(
    res: dict[str, np.ndarray], mus: np.ndarray, test_stat: str, targets: np.ndarray, z_alpha: float
) -> np.ndarray:
    """``(n, 6, n_poi)`` function values at the tested POI values (NaN: not certified)."""
    n = len(res["obs_muhat"])
    conv = np.asarray(res["converged"], dtype=bool)
    k = len(mus)
    ok_data = conv[:, 1:2] & conv[:, 2 : 2 + k]
    ok_a = conv[:, 2 + k : 3 + k] & conv[:, 3 + k :]
    q = np.clip(res["obs_value"][:, 2:] - res["obs_value"][:, 1:2], 0.0, None)
    q = np.where(res["obs_muhat"][:, None] > mus[None, :], 0.0, q)
    qa = np.clip(res["asimov_value"][:, 1:] - res["asimov_value"][:, 0:1], 0.0, None)
    qa = np.where(res["asimov_muhat"][:, None] > mus[None, :], 0.0, qa)
    g = np.full((n, 6, k), np.nan)
    with np.errstate(invalid="ignore"):
        g[:, 0] = np.where(ok_data & ok_a, z_of(log_cls(q, qa, test_stat)) - z_alpha, np.nan)
    g[:, 1:] = np.where(ok_a[:, None, :], np.sqrt(qa)[:, None, :] - targets[None, :, None], np.nan)
    return g


def _brackets(
    mu: np.ndarray, g: np.ndarray, evaluated: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per point and curve the tightest bracket ``g(a) < 0 < g(b)`` among the values.

    Returns ``a, b, g(a), g(b)`` (NaN: none) and the flag: ``ABOVE`` (no value above 0:
    the limit lies above the highest POI tried), ``BELOW`` (none below 0), ``FAILED``
    (nothing evaluated), ``FOUND``.
    """
    n, m, _ = g.shape
    a = np.full((n, m), np.nan)
    b, ga, gb = a.copy(), a.copy(), a.copy()
    flag = np.full((n, m), FAILED, dtype=np.int8)
    for i in range(n):
        for k in range(m):
            sel = evaluated[i, k] & ~np.isnan(g[i, k]) & np.isfinite(mu[i])
            if not sel.any():
                continue
            x, y = mu[i][sel], g[i, k][sel]
            order = np.argsort(x)
            x, y = x[order], y[order]
            pos = np.flatnonzero(y > 0)
            if not pos.size:
                flag[i, k] = ABOVE
                continue
            j = int(pos[0])  # the lowest POI above the root
            neg = np.flatnonzero(y[:j] < 0)
            if not neg.size:
                flag[i, k] = BELOW if j == 0 else FAILED
                continue
            h = int(neg[-1])
            a[i, k], b[i, k], ga[i, k], gb[i, k] = x[h], x[j], y[h], y[j]
            flag[i, k] = FOUND
    return a, b, ga, gb, flag
