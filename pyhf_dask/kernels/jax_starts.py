"""Families of fits of the same data, each fit started from several points.

A hypothesis test fits the same data several times: once with the POI free and once per
fixed POI value (plus POI = 0 on the observed data). Those fits check each other: the free
fit is the lowest of them all, by definition of a minimum. And a fixed-POI likelihood can
hold several minima where the free one holds one (ATLAS 1Lbb: two minima of a jet energy
scale parameter at POI = 1, 0.15 apart in ``-2 log L``; a Newton step from the suggested
start lands in the higher one). So :func:`fit_family` runs every fit of a set of points,
then, in one more batch,

* every fixed-POI fit again from the solutions of the point's other fits: the free fit,
  the neighbouring POI values (POI = 0 among them), pyhf's suggested start
  (``suggested``) and any starts the caller adds (``extra``: the fits of the same POI
  value on the other data set, :func:`more_starts`); starts equal to one already made
  are left out;
* and every fit of a point where a first answer is doubtful:

  - a fit did not certify its minimum (KKT residual, curvature),
  - a fit met a concave kink (both sides of a kink descend: two modes), or
  - the free fit ended above a fixed-POI fit of the same data (a local minimum),

  from the solutions of the point's other fits (the lowest one, the free one, the
  neighbouring POI values) and, after a concave kink, with the other side taken there: one
  start per such parameter from the fit's solution with the parameter mirrored to the
  other side of its kink, and one start that takes the other side at every concave kink.

Each fit keeps the lowest certified ``-2 log L`` it reached, and the spread of the
certified values of its starts (``spread``: how far apart its minima were; 0 when every
start agreed). A free fit started from a fixed fit's solution can only descend below it,
so the free fit never ends above a fixed one when both are certified.

Example:
    >>> consistency_gap(np.array([[3.0, 2.0, 5.0]]), 1).tolist()
    [0.0]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyhf_dask.kernels.jax_batch import run_batched, run_fits

__all__ = ["DISAGREE", "consistency_gap", "fit_family", "more_starts", "moved"]

log = logging.getLogger(__name__)

#: ``-2 log L`` by which a free fit may exceed a fixed one before it is called a local minimum.
GAP_TOLERANCE = 1e-6
#: ``-2 log L`` by which the certified minima of a fit's starts differ before they are
#: said to disagree (a fit's ``message``); below it, two starts found one minimum.
DISAGREE = 1e-4
#: A certified answer replaces a certified one only if it is lower by more than this.
SAME_MINIMUM = 1e-7
#: Two starts closer than this in every parameter are one start.
SAME_START = 1e-9
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

#: Second starts: point, fit, start parameters and flip flag of each, as arrays.
Todo = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def moved(theta: np.ndarray, src: int, dst: int, count: int, n_fit: int) -> np.ndarray:
    """Starts for a family of ``n_fit`` fits from the solutions ``theta`` of another.

    Fits ``dst .. dst + count - 1`` start from ``theta[:, src .. src + count - 1]`` (the
    fits of the same POI values on other data); the others get none (NaN).

    Example:
        >>> moved(np.arange(6.0).reshape(1, 3, 2), 1, 0, 2, 3)[0].tolist()
        [[2.0, 3.0], [4.0, 5.0], [nan, nan]]
    """
    out = np.full((theta.shape[0], n_fit, theta.shape[2]), np.nan)
    out[:, dst : dst + count] = theta[:, src : src + count]
    return out


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


def _todo(items: list[tuple[int, int, np.ndarray, bool]], n_par: int) -> Todo:
    """The arrays of a list of ``(point, fit, start, flip)`` second starts."""
    if not items:
        return (
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, n_par)),
            np.zeros(0, bool),
        )
    return (
        np.array([t[0] for t in items], dtype=np.int64),
        np.array([t[1] for t in items], dtype=np.int64),
        np.stack([t[2] for t in items]),
        np.array([t[3] for t in items], dtype=bool),
    )


def _join(parts: Sequence[Todo]) -> Todo:
    """One :data:`Todo` of several."""
    return (
        np.concatenate([t[0] for t in parts]),
        np.concatenate([t[1] for t in parts]),
        np.concatenate([t[2] for t in parts]),
        np.concatenate([t[3] for t in parts]),
    )


@dataclass
class _Family:
    """The fits of a family of ``n`` points on their data, and the best answer of each."""

    models: dict[str, np.ndarray]
    poi: np.ndarray
    data: np.ndarray
    aux: np.ndarray
    poi_of_kind: np.ndarray
    theta: np.ndarray  # (n, F, P)
    value: np.ndarray  # (n, F), the kept fit's -2 log L
    converged: np.ndarray
    n_iter: np.ndarray
    pgrad: np.ndarray
    n_kink: np.ndarray
    psd: np.ndarray
    restarts: np.ndarray
    concave: np.ndarray  # (n, F, P)
    first_init: np.ndarray  # (n, F, P), the first start of each fit
    low: np.ndarray  # lowest and highest certified -2 log L of any start of each fit
    high: np.ndarray

    @property
    def free_kind(self) -> int:
        return int(np.flatnonzero(np.isnan(self.poi_of_kind))[0])

    @property
    def order(self) -> list[int]:
        """The fixed-POI fits, by POI value."""
        fixed = [k for k in range(len(self.poi_of_kind)) if k != self.free_kind]
        return sorted(fixed, key=lambda k: float(self.poi_of_kind[k]))

    def starts(self, rows: np.ndarray, kinds: np.ndarray, theta: np.ndarray) -> tuple[Any, Any]:
        """Start parameters and fixed masks of fits ``kinds`` of points ``rows``."""
        init = np.array(theta, dtype=np.float64)
        fixed = np.asarray(self.models["fixed"][rows]).astype(bool)
        held = ~np.isnan(self.poi_of_kind[kinds])
        init[held, self.poi[rows[held]]] = self.poi_of_kind[kinds[held]]
        fixed[held, self.poi[rows[held]]] = True
        return init, fixed

    @classmethod
    def run_first(
        cls,
        fit: Any,
        models: dict[str, np.ndarray],
        poi: np.ndarray,
        start: np.ndarray,
        data: np.ndarray,
        aux: np.ndarray,
        poi_of_kind: np.ndarray,
        size: int,
    ) -> _Family:
        """Every fit of every point from ``start``."""
        n, n_fit, n_par = len(poi), len(poi_of_kind), start.shape[1]
        empty = np.zeros((0, 0))
        fam = cls(models, poi, data, aux, poi_of_kind, *([empty] * 12))
        rows = np.repeat(np.arange(n), n_fit)
        kinds = np.tile(np.arange(n_fit), n)
        init, fixed = fam.starts(rows, kinds, np.asarray(start)[rows])
        first = run_fits(fit, models, rows, init, fixed, data[rows], aux[rows], size)
        fam.first_init = init.reshape(n, n_fit, n_par)
        fam.theta = first["theta"].reshape(n, n_fit, n_par)
        fam.value = first["value"].reshape(n, n_fit)
        fam.converged = first["converged"].reshape(n, n_fit)
        fam.psd = first.get("psd", np.ones(n * n_fit, bool)).reshape(n, n_fit)
        fam.n_iter = first["n_iter"].reshape(n, n_fit).copy()
        fam.pgrad = first["pgrad"].reshape(n, n_fit)
        fam.n_kink = first.get("n_kink", np.zeros(n * n_fit, np.int64)).reshape(n, n_fit)
        concave = first.get("concave", np.zeros((n * n_fit, n_par), bool))
        fam.concave = concave.reshape(n, n_fit, n_par)
        fam.restarts = np.zeros((n, n_fit), dtype=np.int64)
        certified = np.where(fam.converged, fam.value, np.nan)
        fam.low, fam.high = certified.copy(), certified.copy()
        return fam

    @classmethod
    def of_result(
        cls,
        res: dict[str, np.ndarray],
        models: dict[str, np.ndarray],
        poi: np.ndarray,
        data: np.ndarray,
        aux: np.ndarray,
        poi_of_kind: np.ndarray,
    ) -> _Family:
        """The family of a result of :func:`fit_family`, to go on from."""
        n, n_fit, n_par = res["theta"].shape
        certified = np.where(res["converged"], res["value"], np.nan)
        spread = res.get("spread", np.zeros((n, n_fit)))
        return cls(
            models,
            poi,
            data,
            aux,
            poi_of_kind,
            theta=res["theta"].copy(),
            value=res["value"].copy(),
            converged=res["converged"].copy(),
            n_iter=res["n_iter"].copy(),
            pgrad=res["pgrad"].copy(),
            n_kink=res["n_kink"].copy(),
            psd=res["psd"].copy(),
            restarts=res["restarts"].copy(),
            concave=np.zeros((n, n_fit, n_par), bool),
            first_init=res["theta"].copy(),
            low=certified.copy(),
            high=certified + np.where(np.isfinite(spread), spread, 0.0),
        )

    def certified(self) -> np.ndarray:
        """``-2 log L`` of each fit where certified, else ``inf``."""
        return np.where(self.converged, self.value, np.inf)

    def inputs(self, todo: Todo) -> tuple[np.ndarray, ...]:
        """``which, init, fixed, data, aux, flip`` of the second starts ``todo``."""
        rows, kinds, theta, flip = todo
        init, fixed = self.starts(rows, kinds, theta)
        return rows, init, fixed, self.data[rows], self.aux[rows], flip

    def absorb(self, todo: Todo, second: dict[str, np.ndarray]) -> None:
        """Keep, per fit, the best of its current answer and its second starts' answers.

        The lowest certified answer wins; without any, the lowest uncertified one.
        """
        rows, kinds = todo[0], todo[1]
        n_fit = self.value.shape[1]
        conv = np.asarray(second["converged"], dtype=bool)
        value = np.asarray(second["value"], dtype=np.float64)
        np.add.at(self.restarts, (rows, kinds), 1)
        np.add.at(self.n_iter, (rows, kinds), second["n_iter"])
        good = np.flatnonzero(conv & np.isfinite(value))
        with np.errstate(invalid="ignore"):
            np.fmin.at(self.low, (rows[good], kinds[good]), value[good])
            np.fmax.at(self.high, (rows[good], kinds[good]), value[good])
        # the best second start of each fit: certified first, then the lowest value
        group = rows * n_fit + kinds
        rank = np.lexsort((np.where(np.isnan(value), np.inf, value), ~conv, group))
        first_of_group = np.ones(len(rank), dtype=bool)
        first_of_group[1:] = group[rank][1:] != group[rank][:-1]
        best = rank[first_of_group]
        i, k = rows[best], kinds[best]
        # between two certified answers, the lower must be lower than rounding and the
        # tolerance of one minimum: the first answer of a minimum found twice is kept
        margin = np.where(conv[best] & self.converged[i, k], SAME_MINIMUM, 0.0)
        lower = value[best] < self.value[i, k] - margin
        take = (conv[best] & (lower | ~self.converged[i, k])) | (lower & ~self.converged[i, k])
        for r, ii, kk in zip(best[take], i[take], k[take], strict=True):
            self.theta[ii, kk] = second["theta"][r]
            self.value[ii, kk] = second["value"][r]
            self.pgrad[ii, kk] = second["pgrad"][r]
            self.converged[ii, kk] = bool(second["converged"][r])
            if "n_kink" in second:
                self.n_kink[ii, kk] = second["n_kink"][r]
            if "psd" in second:
                self.psd[ii, kk] = second["psd"][r]

    def siblings(self, suggested: np.ndarray | None, extra: np.ndarray | None) -> Todo:
        """Every fixed-POI fit from the free fit, its POI neighbours, ``suggested``, ``extra``.

        A start equal (to :data:`SAME_START`) to the fit's first start, its solution or
        another start of the list is left out; so is a start with non-finite entries.
        """
        n, _, n_par = self.theta.shape
        free_kind, order = self.free_kind, self.order
        finite = np.isfinite(self.value) & np.isfinite(self.theta).all(axis=2)
        parts: list[Todo] = []
        every = np.arange(n)
        for pos, k in enumerate(order):
            sources: list[tuple[np.ndarray, np.ndarray]] = [
                (self.theta[:, free_kind], finite[:, free_kind])
            ]
            for nb in (pos - 1, pos + 1):
                if 0 <= nb < len(order):
                    sources.append((self.theta[:, order[nb]], finite[:, order[nb]]))
            if suggested is not None:
                sources.append((np.asarray(suggested, dtype=np.float64), np.ones(n, bool)))
            if extra is not None:
                sources.append((extra[:, k], np.isfinite(extra[:, k]).all(axis=1)))
            kinds = np.full(n, k)
            seen = [self.first_init[:, k], self.theta[:, k]]
            for theta, ok in sources:
                init, _ = self.starts(every, kinds, theta)
                keep = ok & np.isfinite(init).all(axis=1)
                for other in seen:
                    with np.errstate(invalid="ignore"):
                        keep &= ~(np.abs(init - other) <= SAME_START).all(axis=1)
                seen.append(init)
                idx = np.flatnonzero(keep)
                parts.append((idx, kinds[idx], init[idx], np.zeros(len(idx), bool)))
        return _join(parts) if parts else _todo([], n_par)

    def doubtful_starts(self) -> Todo:
        """Every fit of a doubtful point again, from its siblings and mirrored."""
        n_par = self.theta.shape[2]
        n_fit = self.value.shape[1]
        gap = consistency_gap(self.value, self.free_kind)
        doubtful = (~self.converged).any(axis=1) | self.concave.any(axis=(1, 2))
        doubtful |= gap > GAP_TOLERANCE
        items: list[tuple[int, int, np.ndarray, bool]] = []
        for p in np.flatnonzero(doubtful):
            for k in range(n_fit):
                for j in np.flatnonzero(self.concave[p, k])[:MAX_MIRRORS]:
                    items.append((int(p), k, _mirrored(self.theta[p, k], int(j)), False))
                if self.concave[p, k].any():
                    items.append((int(p), k, self.first_init[p, k], True))
                for j in _sources(k, self.value[p], self.free_kind, self.order):
                    items.append((int(p), k, self.theta[p, j], False))
        if items:
            log.debug("second starts: %d fits of %d points", len(items), int(doubtful.sum()))
        return _todo(items, n_par)

    def orthants(self, fit: Any, kinked: np.ndarray, sides: Any, size: int) -> None:
        """Modes a hair apart on either side of kinks: mirror one near-kink parameter at a
        time from each solution, keep the lowest, and go on while that finds lower minima."""
        n, n_fit, n_par = self.theta.shape
        base_fixed = np.asarray(self.models["fixed"]).astype(bool)
        improving = np.ones((n, n_fit), dtype=bool)
        for _ in range(ORTHANT_ROUNDS):
            before = self.certified()
            pairs = np.argwhere(improving)
            probe = _probe(
                sides, self.models, pairs, self.theta, base_fixed, self.data, self.aux, size
            )
            items: list[tuple[int, int, np.ndarray, bool]] = []
            for r, (p, k) in enumerate(pairs):
                x = self.theta[p, k]
                near = np.flatnonzero(kinked[p] & (x != 0) & (np.abs(x) < NEAR_KINK))
                near = near[np.argsort(np.abs(x[near]))]
                starts_pk = [_mirrored(x, int(j)) for j in near[:MAX_NEAR]]
                if probe is not None:
                    lower = np.flatnonzero(probe["value"][r] < self.value[p, k] - GAP_TOLERANCE)
                    lower = lower[np.argsort(probe["value"][r][lower])]
                    for j in lower[:MAX_MIRRORS]:
                        y = x.copy()
                        y[j] = probe["x"][r, j]
                        starts_pk.append(y)
                else:
                    starts_pk += [_mirrored(x, int(j)) for j in near[MAX_NEAR:MAX_MIRRORS]]
                items += [(int(p), int(k), y, False) for y in starts_pk]
            if not items:
                break
            _run(fit, size, [(self, _todo(items, n_par))])
            improving = self.certified() < before - GAP_TOLERANCE
            if not improving.any():
                break

    def consistent(self, fit: Any, size: int) -> None:
        """A fixed fit may have found a lower mode: the free fit starts from it, until
        consistent."""
        n_par = self.theta.shape[2]
        free_kind = self.free_kind
        n_fit = self.value.shape[1]
        for _ in range(MAX_ROUNDS):
            gap = consistency_gap(self.value, free_kind)
            late = np.flatnonzero(gap > GAP_TOLERANCE)
            if not late.size:
                break
            others = np.delete(self.value[late], free_kind, axis=1)
            lowest = np.delete(np.arange(n_fit), free_kind)[np.argmin(others, axis=1)]
            items = [
                (int(p), free_kind, self.theta[p, j], False)
                for p, j in zip(late, lowest, strict=True)
            ]
            _run(fit, size, [(self, _todo(items, n_par))])

    def result(self) -> dict[str, np.ndarray]:
        """The fits' answers (see :func:`fit_family`)."""
        with np.errstate(invalid="ignore"):
            spread = np.where(np.isfinite(self.high - self.low), self.high - self.low, 0.0)
        return {
            "theta": self.theta,
            "value": self.value,
            "converged": self.converged,
            "n_iter": self.n_iter,
            "pgrad": self.pgrad,
            "n_kink": self.n_kink,
            "psd": self.psd,
            "restarts": self.restarts,
            "spread": spread,
        }


def _run(fit: Any, size: int, jobs: Sequence[tuple[_Family, Todo]]) -> None:
    """Run the second starts of one or more families in one batch, and absorb them.

    Families of the same model arrays share the batch: their fits fill each other's rows.
    """
    jobs = [(fam, todo) for fam, todo in jobs if len(todo[0])]
    by_models: dict[int, list[tuple[_Family, Todo]]] = {}
    for fam, todo in jobs:
        by_models.setdefault(id(fam.models), []).append((fam, todo))
    for group in by_models.values():
        inputs = [fam.inputs(todo) for fam, todo in group]
        joined = [np.concatenate([x[j] for x in inputs]) for j in range(6)]
        which, init, fixed, data, aux, flip = joined
        out = run_fits(fit, group[0][0].models, which, init, fixed, data, aux, size, flip=flip)
        offset = 0
        for fam, todo in group:
            m = len(todo[0])
            fam.absorb(todo, {k: v[offset : offset + m] for k, v in out.items()})
            offset += m


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
    *,
    suggested: np.ndarray | None = None,
    extra: np.ndarray | None = None,
    siblings: bool = True,
) -> dict[str, np.ndarray]:
    """Every fit of ``n`` points on their data, from several starts each.

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
        suggested: ``(n, P)`` another start of every fixed-POI fit (pyhf's suggested
            init, where ``start`` is not it).
        extra: ``(n, F, P)`` one more start per fit (NaN rows: none), for example the
            solutions of the same POI value's fits on other data.
        siblings: start every fixed-POI fit also from the solutions of the point's
            other fits, ``suggested`` and ``extra`` (in the batch of the doubtful
            points' second starts); ``False``: only doubtful points get second starts.

    Returns:
        Per fit, shape ``(n, F)`` (``theta``: ``(n, F, P)``): ``theta``, ``value``,
        ``converged``, ``n_iter`` (all starts), ``pgrad``, ``n_kink``, ``psd``,
        ``restarts`` (second starts run for the fit) and ``spread`` (the highest
        certified ``-2 log L`` of its starts minus the lowest: above :data:`DISAGREE`,
        the starts found different minima and the lowest was kept).

    Example:
        A bimodal fixed-POI fit (``tests/kernels/test_multistart.py``) keeps the lower
        minimum; ``res["spread"][:, k] > DISAGREE`` says where starts disagreed.
    """
    fam = _Family.run_first(fit, models, poi, start, data, aux, poi_of_kind, size)
    todo = fam.doubtful_starts()
    if siblings:
        todo = _join([todo, fam.siblings(suggested, extra)])
    _run(fit, size, [(fam, todo)])
    if kinked is not None:
        fam.orthants(fit, kinked, sides, size)
    fam.consistent(fit, size)
    return fam.result()


def more_starts(
    fit: Any,
    models: dict[str, np.ndarray],
    poi: np.ndarray,
    family: dict[str, np.ndarray],
    data: np.ndarray,
    aux: np.ndarray,
    poi_of_kind: np.ndarray,
    size: int,
    extra: np.ndarray,
    *,
    kinds: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """The fits of a :func:`fit_family` result started once more, from ``extra``.

    Each fit ``k`` of ``kinds`` (default: every fixed-POI fit) runs from ``extra[:, k]``
    (non-finite rows and starts equal to the fit's solution are skipped) and keeps the
    lowest certified answer; then the free fit starts from any fixed fit that went below
    it. ``spread`` and the counts carry on from ``family``.

    Args:
        fit, models, poi, data, aux, poi_of_kind, size: as for :func:`fit_family`.
        family: a result of :func:`fit_family` for these points and data.
        extra: ``(n, F, P)`` the new start of each fit.
        kinds: the fits that get one.

    Returns:
        The updated result, with the keys of :func:`fit_family`.
    """
    fam = _Family.of_result(family, models, poi, data, aux, poi_of_kind)
    n, n_fit, _ = fam.theta.shape
    if kinds is None:
        kinds = [k for k in range(n_fit) if k != fam.free_kind]
    parts = []
    every = np.arange(n)
    for k in kinds:
        init, _ = fam.starts(every, np.full(n, k), extra[:, k])
        with np.errstate(invalid="ignore"):
            keep = np.isfinite(init).all(axis=1)
            keep &= ~(np.abs(init - fam.theta[:, k]) <= SAME_START).all(axis=1)
        idx = np.flatnonzero(keep)
        parts.append((idx, np.full(len(idx), k), init[idx], np.zeros(len(idx), bool)))
    if parts:
        _run(fit, size, [(fam, _join(parts))])
    fam.consistent(fit, size)
    return fam.result()
