"""Padding of dense models to bucket shapes, and the fixed-size batch scheduler of the fits.

XLA compiles one executable per set of array shapes, and on CPU compiling the batched fit
takes seconds. So that every chunk, every model structure and every pass over the fits
share as few executables as possible:

* every dimension of a dense model (parameters, cells, bins, normsys slots, multiplicative
  parameters, multiplicative factors per cell) is padded up to a bucket
  (:func:`bucket`); padded parameters are fixed and enter no rate, padded cells have no
  rate, padded bins no data, so ``-2 log L``, its gradient and Hessian are unchanged;
* the model arrays are per point (structural ones included), so points of different
  structures with the same bucket shapes are fitted in the same batch;
* fits run in batches of a fixed number of rows (:func:`batch_size`) and a fixed number
  of Newton iterations per call (:data:`ROUND`); between calls, finished rows are
  replaced by waiting fits ("refill"), so that slow fits do not hold a whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pyhf_dask.kernels.jax_model import ARRAY_FIELDS, DenseModel

if TYPE_CHECKING:
    from pyhf_dask.kernels.jax_vector import Group

__all__ = [
    "MODEL_FIELDS",
    "PAD_FILL",
    "Dims",
    "Stack",
    "batch_size",
    "bucket",
    "dims_of",
    "field_shapes",
    "pad_model",
    "pad_rows",
    "padded_dims",
    "run_batched",
    "run_fits",
    "run_rows",
    "stack_groups",
    "stack_models",
]

log = logging.getLogger(__name__)

#: Arrays of one padded point: :data:`ARRAY_FIELDS` plus the structural ones.
MODEL_FIELDS = (
    *ARRAY_FIELDS,
    "cell_bin",
    "gather",
    "gather_local",
    "mult_index",
    "mult_select",
    "cell_norm",
)
#: Newton iterations per call, and the most iterations a fit gets in all.
ROUND = 20
MAX_ITER = 220
#: Rows per batch of models with 32 parameters or more.
LARGE_MODEL_BATCH = 64
#: Smallest and largest rows per batch on a GPU (:func:`batch_size`).
GPU_MIN_BATCH = 256
GPU_MAX_BATCH = 65536

Dims = tuple[int, int, int, int, int, int]  # params, cells, bins, norm slots, mult, width

#: Value of the padded entries of each per-point array: padded parameters are fixed and
#: enter no rate, padded cells have no rate, padded bins no data.
PAD_FILL: dict[str, Any] = {
    "nominal": 0.0,
    "h_up": 0.0,
    "h_dn": 0.0,
    "n_hi": 1.0,
    "n_lo": 1.0,
    "data": 0.0,
    "init": 0.0,
    "lower": -1.0,
    "upper": 1.0,
    "fixed": True,
    "gauss": False,
    "sigma": 1.0,
    "aux": 0.0,
    "poisson": False,
    "tau": 1.0,
}


def bucket(n: int) -> int:
    """Padded size of a model dimension (at most 12.5 % padding above 64).

    A power of two up to 16, then a multiple of an eighth of the power of two below
    (at least 8): few distinct shapes, little padded work.

    Example:
        >>> [bucket(n) for n in (1, 3, 9, 16, 17, 60, 66, 300)]
        [1, 4, 16, 16, 24, 64, 72, 320]
    """
    if n <= 16:
        return 1 << max(0, (n - 1).bit_length())
    step = max(8, 1 << ((n - 1).bit_length() - 4))
    return -(-n // step) * step


def dims_of(model: DenseModel) -> Dims:
    """Unpadded dimensions of a dense model."""
    a = model.arrays
    return (
        len(a["init"]),
        len(model.cell_bin),
        len(a["data"]),
        int(a["n_hi"].shape[1]),
        len(model.mult_index),
        int(model.gather.shape[1]),
    )


def padded_dims(models: list[DenseModel]) -> Dims:
    """Bucketed dimensions that hold every model of the list."""
    raw = np.max(np.array([dims_of(m) for m in models]), axis=0)
    return tuple(bucket(int(n)) for n in raw)  # type: ignore[return-value]


def field_shapes(dims: Dims) -> dict[str, tuple[int, ...]]:
    """Shape of each array of :data:`ARRAY_FIELDS` of one point padded to ``dims``."""
    pp, pc, pb, pk = dims[:4]
    shapes: dict[str, tuple[int, ...]] = {k: (pp,) for k in ARRAY_FIELDS}
    shapes.update(
        nominal=(pc,), h_up=(pp, pc), h_dn=(pp, pc), n_hi=(pp, pk), n_lo=(pp, pk), data=(pb,)
    )
    return shapes


def pad_rows(name: str, rows: np.ndarray, dims: Dims) -> np.ndarray:
    """Stacked values ``(n, ...)`` of the per-point array ``name``, padded to ``dims``.

    The same numbers as :func:`pad_model` point by point, in one array operation.

    Example:
        >>> pad_rows("init", np.ones((2, 3)), (4, 4, 2, 1, 1, 1)).tolist()
        [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    """
    shape = (len(rows), *field_shapes(dims)[name])
    if rows.shape == shape:
        return rows
    out = np.full(shape, PAD_FILL[name], dtype=rows.dtype)
    out[tuple(slice(0, s) for s in rows.shape)] = rows
    return out


def pad_model(model: DenseModel, dims: Dims) -> dict[str, np.ndarray]:
    """The arrays of :data:`MODEL_FIELDS` of one point, padded to ``dims``."""
    n_par, n_cell, n_bin, n_norm, n_mult, width = dims_of(model)
    pp, pc, pb, pk, pm, pw = dims
    a = model.arrays

    def vec(x: np.ndarray, size: int, fill: Any) -> np.ndarray:
        out = np.full(size, fill, dtype=x.dtype)
        out[: len(x)] = x
        return out

    def mat(x: np.ndarray, shape: tuple[int, int], fill: Any) -> np.ndarray:
        out = np.full(shape, fill, dtype=x.dtype)
        out[: x.shape[0], : x.shape[1]] = x
        return out

    shapes = field_shapes(dims)
    out = {}
    for k in ARRAY_FIELDS:
        x = a[k]
        padded = np.full(shapes[k], PAD_FILL[k], dtype=x.dtype)
        padded[tuple(slice(0, s) for s in x.shape)] = x
        out[k] = padded
    # structure: the constant-1 index moves from n_par to pp, "not multiplicative" to pm
    gather = np.where(model.gather < n_par, model.gather, pp)
    out["gather"] = mat(gather, (pc, pw), pp)
    local = np.full(pp + 1, pm, dtype=np.int64)
    local[model.mult_index] = np.arange(n_mult)
    out["gather_local"] = local[out["gather"]]
    out["mult_index"] = vec(model.mult_index, pm, int(model.mult_index[0]))
    select = np.zeros((pp, pm))
    select[model.mult_index, np.arange(n_mult)] = 1.0
    out["mult_select"] = select
    cell_bin = np.zeros((pc, pb))
    cell_bin[np.arange(n_cell), model.cell_bin] = 1.0
    out["cell_bin"] = cell_bin
    cell_norm = np.zeros((pc, pk))
    has = model.cell_norm >= 0
    cell_norm[np.flatnonzero(has), model.cell_norm[has]] = 1.0
    out["cell_norm"] = cell_norm
    del n_bin, n_norm, width
    return out


@dataclass
class Stack:
    """Padded arrays of :data:`MODEL_FIELDS` of many points, stacked along axis 0.

    Fields the same for every point may be read-only broadcast views.
    """

    index: np.ndarray
    arrays: dict[str, np.ndarray]
    poi: np.ndarray
    dims: Dims
    #: Per group, its parameters' labels; ``group[row]`` is a row's group.
    labels: list[list[str]] = field(default_factory=list)
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def stack_groups(groups: Sequence[Group]) -> Stack:
    """Pad every group to common bucket shapes and stack them (the kernel's batch input).

    Fields that do not vary stay read-only broadcast views when there is one group.
    """
    raw = np.max(np.array([dims_of(g.model) for g in groups]), axis=0)
    dims: Dims = tuple(bucket(int(n)) for n in raw)  # type: ignore[assignment]
    parts: list[dict[str, np.ndarray]] = []
    for g in groups:
        n = len(g.index)
        template = pad_model(g.model, dims)
        part = {}
        for k in MODEL_FIELDS:
            if k in g.varying:
                part[k] = pad_rows(k, g.varying[k], dims)
            else:
                part[k] = np.broadcast_to(template[k], (n, *template[k].shape))
        parts.append(part)
    if len(parts) == 1:
        arrays = parts[0]
    else:
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in MODEL_FIELDS}
    index = np.concatenate([g.index for g in groups])
    poi = np.concatenate([np.full(len(g.index), g.model.poi_index) for g in groups])
    labels = [_labels(g.model) for g in groups]
    group = np.concatenate([np.full(len(g.index), k) for k, g in enumerate(groups)])
    return Stack(index=index, arrays=arrays, poi=poi, dims=dims, labels=labels, group=group)


def _labels(model: DenseModel) -> list[str]:
    """One label per parameter of ``model`` (positions when its set sizes are unknown)."""
    from pyhf_dask.kernels.evidence import parameter_labels

    if sum(model.par_sizes) != len(model.arrays["init"]):
        return [f"parameter {j}" for j in range(len(model.arrays["init"]))]
    return parameter_labels(model.par_names, model.par_sizes)


def stack_models(models: Sequence[DenseModel]) -> Stack:
    """The :class:`Stack` of a list of per-point dense models (benchmarks, diagnostics)."""
    from pyhf_dask.kernels.jax_vector import Group

    groups = [Group(key=m.key, spec={}, model=m, index=np.array([i])) for i, m in enumerate(models)]
    return stack_groups(groups)


def batch_size(n_par: int, platform: str = "cpu", rows: int | None = None) -> int:
    """Rows per fit batch for models of ``n_par`` (padded) parameters on a device.

    On CPU, small batches of large models run faster per fit than large ones (the
    per-row matrices stay in cache); small models need large batches to amortise the
    per-iteration overhead. A GPU runs every row of a batch at once and pays per call
    (launches, transfers, the host's refill), so its batches are as large as the work:
    ``rows`` (the fits waiting) rounded up to a power of two, at least
    :data:`GPU_MIN_BATCH`, at most a cap that keeps a batch's Hessians near 1 GiB.

    Example:
        >>> batch_size(6), batch_size(6, "gpu", rows=651), batch_size(6, "gpu", rows=3_000_000)
        (2048, 1024, 65536)
    """
    if platform == "cpu":
        if n_par >= 32:
            return LARGE_MODEL_BATCH
        return 1024 if n_par >= 8 else 2048
    cap = GPU_MAX_BATCH
    while cap > GPU_MIN_BATCH and cap * n_par * n_par * 8 > 2**30:
        cap //= 2
    want = GPU_MIN_BATCH if rows is None else max(GPU_MIN_BATCH, 1 << (rows - 1).bit_length())
    return min(cap, want)


def _take(x: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    """Rows ``idx`` of ``x``, padded to ``size`` rows by repeating the first."""
    if len(idx) < size:
        idx = np.concatenate([idx, np.full(size - len(idx), idx[0])])
    return x[idx]


def run_rows(
    func: Any, models: dict[str, np.ndarray], rows: np.ndarray, size: int
) -> dict[str, np.ndarray]:
    """``func(model, rows)`` over every point, in batches of ``size`` rows, concatenated."""
    n = len(rows)
    parts = []
    for start in range(0, n, size):
        idx = np.arange(start, min(n, start + size))
        res = func({k: _take(v, idx, size) for k, v in models.items()}, _take(rows, idx, size))
        parts.append({k: np.asarray(v)[: len(idx)] for k, v in res.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_batched(
    func: Any,
    models: dict[str, np.ndarray],
    which: np.ndarray,
    arrays: Sequence[np.ndarray],
    size: int,
) -> dict[str, np.ndarray]:
    """``func(model, *arrays)`` over rows of point ``which``, in batches of ``size`` rows."""
    n = len(which)
    parts = []
    for start in range(0, n, size):
        idx = np.arange(start, min(n, start + size))
        model = {k: _take(v, which[idx], size) for k, v in models.items()}
        res = func(model, *(_take(x, idx, size) for x in arrays))
        parts.append({k: np.asarray(v)[: len(idx)] for k, v in res.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_fits(
    fit: Any,
    models: dict[str, np.ndarray],
    which: np.ndarray,
    init: np.ndarray,
    fixed: np.ndarray,
    data: np.ndarray,
    aux: np.ndarray,
    size: int,
    flip: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Run every fit to the end through batches of fixed sizes, refilling finished rows.

    Args:
        fit: ``fit(model, init, lam, fixed, data, aux, flip, max_iter)`` over a batch of
            rows (a compiled :func:`~pyhf_dask.kernels.jax_fit.fit_batch`).
        models: padded per-point arrays, stacked over the points.
        which: point of each fit.
        init, fixed, data, aux: per-fit start, fixed mask and data.
        size: rows per batch.
        flip: per fit, take the other side at concave kinks (default: no fit does).

    Returns:
        ``theta``, ``value``, ``n_iter``, ``converged``, ``pgrad`` per fit, and where the
        fit function reports them, ``n_kink``, ``concave`` (met in any call) and ``psd``.
    """
    n = len(which)
    flip = np.zeros(n, dtype=bool) if flip is None else np.asarray(flip, dtype=bool)
    theta = np.array(init, dtype=np.float64)
    lam = np.full(n, 1e-3)
    value = np.full(n, np.inf)
    pgrad = np.full(n, np.inf)
    n_iter = np.zeros(n, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    extra: dict[str, np.ndarray] = {}
    queue = list(range(n))[::-1]  # pop() from the end takes the next fit
    active: list[int] = []
    calls = 0
    while queue or active:
        while queue and len(active) < size:
            active.append(queue.pop())
        idx = np.asarray(active[:size])
        model = {k: _take(v, which[idx], size) for k, v in models.items()}
        args = [_take(x, idx, size) for x in (theta, lam, fixed, data, aux, flip)]
        out = fit(model, *args, ROUND)
        calls += 1
        k = len(idx)
        theta[idx] = np.asarray(out["theta"])[:k]
        lam[idx] = np.asarray(out["lam"])[:k]
        value[idx] = np.asarray(out["value"])[:k]
        pgrad[idx] = np.asarray(out["pgrad"])[:k]
        done_now = np.asarray(out["converged"])[:k]
        steps = np.asarray(out["n_iter"])[:k]
        converged[idx] = done_now
        n_iter[idx] += steps
        for key in ("n_kink", "concave", "psd"):
            if key in out:
                got = np.asarray(out[key])[:k]
                if key not in extra:
                    extra[key] = np.zeros((n, *got.shape[1:]), dtype=got.dtype)
                extra[key][idx] = (extra[key][idx] | got) if key == "concave" else got
        # finished: converged, stopped early without converging, or out of iterations
        finished = done_now | (steps < ROUND) | (n_iter[idx] >= MAX_ITER)
        rest = [int(i) for i, f in zip(idx, finished, strict=True) if not f]
        active = active[size:] + rest
    log.debug("JAX kernel: %d fits in %d batch calls", n, calls)
    return {
        "theta": theta,
        "value": value,
        "n_iter": n_iter,
        "converged": converged,
        "pgrad": pgrad,
        **extra,
    }
