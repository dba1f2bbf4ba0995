"""Families of fits of the same data, with second starts where a first answer is doubtful.

A hypothesis test fits the same data several times: once with the POI free and once per
fixed POI value (plus POI = 0 on the observed data). Those fits check each other: the free
fit is the lowest of them all, by definition of a minimum. :func:`fit_family` runs every
fit of a set of points and then takes a second look at each point where

* a fit did not certify its minimum (KKT residual, curvature),
* a fit met a concave kink (both sides of a kink descend: two modes), or
* the free fit ended above a fixed-POI fit of the same data (a local minimum),

by fitting again from the solutions of the point's other fits (the lowest one, the free
one, the neighbouring POI values) and, after a concave kink, with the other side taken
there: one start per such parameter from the fit's solution with the parameter mirrored to
the other side of its kink, and one start that takes the other side at every concave kink.
Each fit keeps the lowest certified ``-2 log L`` it reached;
a free fit started from a fixed fit's solution can only descend below it, so the free fit
never ends above a fixed one when both are certified.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pyhf_dask.kernels.jax_batch import run_batched, run_fits

__all__ = ["consistency_gap", "fit_family"]

log = logging.getLogger(__name__)

#: ``-2 log L`` by which a free fit may exceed a fixed one before it is called a local minimum.
GAP_TOLERANCE = 1e-6
#: Rounds of free fits restarted from a lower fixed fit.
MAX_ROUNDS = 3
#: Parameters mirrored per fit and round, one second start each (the most promising first).
MAX_MIRRORS = 24
#: Of those, started from the mirror image of the closest to their kink, whatever the probe.
MAX_NEAR = 6
#: Rounds of one-parameter mirrors while they find lower minima.
ORTHANT_ROUNDS = 4
#: Kinked parameters closer to 0 than this at a solution are mirrored in a second start.
NEAR_KINK = 0.1
#: Distance from the kink at which a mirrored start puts a parameter that ended on it.
MIRROR_OFFSET = 0.1


def _mirrored(theta: np.ndarray, j: int) -> np.ndarray:
    """``theta`` with parameter ``j`` moved to the other side of its kink at 0."""
    out = theta.copy()
    out[j] = -theta[j] if theta[j] != 0 else MIRROR_OFFSET
    return out


def consistency_gap(value: np.ndarray, free_kind: int) -> np.ndarray:
    """How far each point's free fit lies above the lowest of its other fits (``>= 0``).

    Example:
        >>> consistency_gap(np.array([[3.0, 2.0, 5.0], [1.0, 2.5, 4.0]]), 1).tolist()
        [0.0, 1.5]
    """
    others = np.delete(value, free_kind, axis=1)
    lowest = np.min(others, axis=1) if others.shape[1] else np.full(len(value), np.inf)
    with np.errstate(invalid="ignore"):
        gap = value[:, free_kind] - lowest
    return np.where(np.isfinite(gap), np.maximum(gap, 0.0), np.where(np.isnan(gap), 0.0, gap))


def _sources(k: int, values: np.ndarray, free_kind: int, order: list[int]) -> set[int]:
    """Other fits of a point whose solutions start fit ``k`` again."""
    out: set[int] = set()
    finite = np.isfinite(values)
    others = [j for j in range(len(values)) if j != k and finite[j]]
    if others:
        out.add(min(others, key=lambda j: values[j]))
    if k != free_kind and finite[free_kind]:
        out.add(free_kind)
    if k in order:
        pos = order.index(k)
        for nb in (pos - 1, pos + 1):
            if 0 <= nb < len(order) and finite[order[nb]]:
                out.add(order[nb])
    out.discard(k)
    return out


def _probe(
    sides: Any,
    models: dict[str, np.ndarray],
    pairs: np.ndarray,
    theta: np.ndarray,
    fixed: np.ndarray,
    data: np.ndarray,
    aux: np.ndarray,
    size: int,
) -> dict[str, np.ndarray] | None:
    """The other-side probe at the solution of each ``(point, fit)`` pair, or ``None``."""
    if sides is None or not len(pairs):
        return None
    p, k = pairs[:, 0], pairs[:, 1]
    return run_batched(sides, models, p, (theta[p, k], fixed[p], data[p], aux[p]), size)


def fit_family(
    fit: Any,
    models: dict[str, np.ndarray],
    poi: np.ndarray,
    start: np.ndarray,
    data: np.ndarray,
    aux: np.ndarray,
    poi_of_kind: np.ndarray,
    size: int,
    kinked: np.ndarray | None = None,
    sides: Any = None,
) -> dict[str, np.ndarray]:
    """Every fit of ``n`` points on their data, with second starts where needed.

    Args:
        fit: the batched fit function of :func:`~pyhf_dask.kernels.jax_batch.run_fits`.
        models: padded per-point model arrays, stacked over the ``n`` points.
        poi: POI index per point.
        start: ``(n, P)`` start parameters per point.
        data, aux: ``(n, B)`` and ``(n, P)`` data of each point.
        poi_of_kind: ``(F,)`` POI value of each fit of a point, NaN for the free fit.
        size: rows per batch.
        kinked: ``(n, P)`` parameters with a kink at 0. Modes on either side of a kink
            can be a hair apart: every fit starts again from its solution with one
            kinked parameter near its kink (``0 < |theta| < NEAR_KINK``) mirrored, one
            start per parameter, keeps the lowest and repeats while that finds lower
            minima (a descent over orthants, up to ``ORTHANT_ROUNDS``).
        sides: the batched :func:`~pyhf_dask.kernels.jax_fit.other_sides` probe,
            ``sides(model, theta, fixed, data, aux)``. With it, the second starts of each
            round are the points of the probe lower than the fit (up to ``MAX_MIRRORS``,
            lowest first), plus the mirror images of the ``MAX_NEAR`` parameters
            closest to their kink.

    Returns:
        Per fit, shape ``(n, F)`` (``theta``: ``(n, F, P)``): ``theta``, ``value``,
        ``converged``, ``n_iter`` (all starts), ``pgrad``, ``n_kink``, ``psd`` and ``restarts``
        (second starts run for the fit).
    """
    n, n_fit = len(poi), len(poi_of_kind)
    free_kind = int(np.flatnonzero(np.isnan(poi_of_kind))[0])
    fixed_kinds = [k for k in range(n_fit) if k != free_kind]
    order = sorted(fixed_kinds, key=lambda k: float(poi_of_kind[k]))
    base_fixed = models["fixed"].astype(bool)

    def starts(rows: np.ndarray, kinds: np.ndarray, theta: np.ndarray) -> tuple[Any, Any]:
        init = theta.copy()
        fixed = base_fixed[rows].copy()
        held = ~np.isnan(poi_of_kind[kinds])
        init[held, poi[rows[held]]] = poi_of_kind[kinds[held]]
        fixed[held, poi[rows[held]]] = True
        return init, fixed

    rows = np.repeat(np.arange(n), n_fit)
    kinds = np.tile(np.arange(n_fit), n)
    init, fixed = starts(rows, kinds, start[rows])
    first = run_fits(fit, models, rows, init, fixed, data[rows], aux[rows], size)
    theta = first["theta"].reshape(n, n_fit, -1)
    raw_value = first["value"].reshape(n, n_fit)
    converged = first["converged"].reshape(n, n_fit)
    psd = first.get("psd", np.ones(n * n_fit, bool)).reshape(n, n_fit)

    def certified_value() -> np.ndarray:
        """``-2 log L`` of each fit where certified, else ``inf``."""
        return np.where(converged, raw_value, np.inf)

    n_iter = first["n_iter"].reshape(n, n_fit).copy()
    pgrad = first["pgrad"].reshape(n, n_fit)
    n_kink = first.get("n_kink", np.zeros(n * n_fit, np.int64)).reshape(n, n_fit)
    n_par = start.shape[1]
    concave = first.get("concave", np.zeros((n * n_fit, n_par), bool)).reshape(n, n_fit, n_par)
    restarts = np.zeros((n, n_fit), dtype=np.int64)

    def second_starts(todo: list[tuple[int, int, np.ndarray, bool]]) -> None:
        rows2 = np.array([t[0] for t in todo])
        kinds2 = np.array([t[1] for t in todo])
        init2, fixed2 = starts(rows2, kinds2, np.stack([t[2] for t in todo]))
        flip2 = np.array([t[3] for t in todo])
        second = run_fits(
            fit, models, rows2, init2, fixed2, data[rows2], aux[rows2], size, flip=flip2
        )
        for r, (i, k, _, _) in enumerate(todo):
            restarts[i, k] += 1
            n_iter[i, k] += second["n_iter"][r]
            lower = second["value"][r] < raw_value[i, k]
            # a certified fit is replaced by a lower certified one only; an uncertified
            # one by any certified one, or by a lower uncertified one
            if (second["converged"][r] and (lower or not converged[i, k])) or (
                lower and not converged[i, k]
            ):
                theta[i, k] = second["theta"][r]
                raw_value[i, k] = second["value"][r]
                pgrad[i, k] = second["pgrad"][r]
                converged[i, k] = bool(second["converged"][r])
                if "n_kink" in second:
                    n_kink[i, k] = second["n_kink"][r]
                if "psd" in second:
                    psd[i, k] = second["psd"][r]

    # first look: every fit of a doubtful point again, from its siblings and mirrored
    gap = consistency_gap(raw_value, free_kind)
    doubtful = (~converged).any(axis=1) | concave.any(axis=(1, 2)) | (gap > GAP_TOLERANCE)
    todo: list[tuple[int, int, np.ndarray, bool]] = []
    for p in np.flatnonzero(doubtful):
        for k in range(n_fit):
            for j in np.flatnonzero(concave[p, k])[:MAX_MIRRORS]:
                todo.append((int(p), k, _mirrored(theta[p, k], int(j)), False))
            if concave[p, k].any():
                todo.append((int(p), k, start[p], True))
            for j in _sources(k, raw_value[p], free_kind, order):
                todo.append((int(p), k, theta[p, j], False))
    if todo:
        log.debug("second starts: %d fits of %d points", len(todo), int(doubtful.sum()))
        second_starts(todo)
    # modes a hair apart on either side of kinks: mirror one near-kink parameter at a time
    # from each solution, keep the lowest, and go on while that finds lower minima
    if kinked is not None:
        improving = np.ones((n, n_fit), dtype=bool)
        for _ in range(ORTHANT_ROUNDS):
            before = certified_value()
            pairs = np.argwhere(improving)
            probe = _probe(sides, models, pairs, theta, base_fixed, data, aux, size)
            todo = []
            for r, (p, k) in enumerate(pairs):
                x = theta[p, k]
                near = np.flatnonzero(kinked[p] & (x != 0) & (np.abs(x) < NEAR_KINK))
                near = near[np.argsort(np.abs(x[near]))]
                starts_pk = [_mirrored(x, int(j)) for j in near[:MAX_NEAR]]
                if probe is not None:
                    lower = np.flatnonzero(probe["value"][r] < raw_value[p, k] - GAP_TOLERANCE)
                    lower = lower[np.argsort(probe["value"][r][lower])]
                    for j in lower[:MAX_MIRRORS]:
                        y = x.copy()
                        y[j] = probe["x"][r, j]
                        starts_pk.append(y)
                else:
                    starts_pk += [_mirrored(x, int(j)) for j in near[MAX_NEAR:MAX_MIRRORS]]
                todo += [(int(p), int(k), y, False) for y in starts_pk]
            if not todo:
                break
            second_starts(todo)
            improving = certified_value() < before - GAP_TOLERANCE
            if not improving.any():
                break
    # a fixed fit may have found a lower mode: the free fit starts from it, until consistent
    for _ in range(MAX_ROUNDS):
        gap = consistency_gap(raw_value, free_kind)
        late = np.flatnonzero(gap > GAP_TOLERANCE)
        if not late.size:
            break
        others = np.delete(raw_value[late], free_kind, axis=1)
        lowest = np.delete(np.arange(n_fit), free_kind)[np.argmin(others, axis=1)]
        second_starts(
            [(int(p), free_kind, theta[p, j], False) for p, j in zip(late, lowest, strict=True)]
        )
    return {
        "theta": theta,
        "value": raw_value,
        "converged": converged,
        "n_iter": n_iter,
        "pgrad": pgrad,
        "n_kink": n_kink,
        "psd": psd,
        "restarts": restarts,
    }
