"""Toy-based CLs on the JAX kernel: pseudo-experiments drawn and fitted in batches.

Per point and tested POI value ``mu`` (pyhf's ``ToyCalculator.distributions``):

* the fits on the data: POI = 0, free, and POI = ``mu`` (as the asymptotic path,
  :func:`~pyhf_dask.kernels.jax_starts.fit_family`);
* ``ntoys`` s+b toys drawn from the model at the parameters of the POI = ``mu`` fit, and
  ``ntoys`` b toys at those of the POI = 0 fit: main data Poisson in every bin, auxiliary
  data from the constraint terms (Gaussian ``Normal(theta, sigma)``, Poisson
  ``Poisson(gamma * tau)``), drawn on the device with :mod:`jax.random`;
* each toy's statistic from its own two fits (free and POI = ``mu``), every toy of every
  point of the chunk in one batch through :func:`fit_family` (same structure, different
  data), started at the parameters the toy was drawn from;
* p-values, errors and the expected band by :mod:`pyhf_dask.kernels.toys`.

Seeds. The toys of a point come from the key ``fold_in(fold_in(key(seed), w0), w1)`` with
the words of :func:`~pyhf_dask.kernels.toys.stream_words` (a digest of the point's
patch, the POI value and the hypothesis), and toy ``i`` from ``fold_in(key, i)``: the same
seed gives the same toys whatever the chunking, the worker or the executor, and the
first ``n`` toys of a longer run are the toys of a run of ``n``.

Failed toys. A toy whose fits are not certified (KKT residual, curvature, the free fit not
the lowest) is left out of the distributions and counted in ``ntoys_failed``; where those
could move a p-value by more than its Monte Carlo error
(:func:`~pyhf_dask.kernels.toys.failure_bound_exceeded`) the point is ``"partial"`` and
its message says how many failed.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import numpy as np

from pyhf_dask.grid import Patch
from pyhf_dask.kernels import empty_result
from pyhf_dask.kernels.toys import (
    expected_band,
    failure_bound_exceeded,
    qmu_statistic,
    stream_words,
    toy_pvalues,
)

__all__ = ["hypotest_chunk", "sample_toys"]

log = logging.getLogger(__name__)

#: Toys drawn per call of the sampler (a fixed shape: one compiled sampler per model size).
SAMPLE_BLOCK = 4096


def _sampler() -> Any:
    import jax
    import jax.numpy as jnp

    @partial(jax.jit, static_argnames=("block",))
    def sample(
        key: Any,
        offset: Any,
        rate: Any,
        mean_aux: Any,
        aux: Any,
        gauss: Any,
        sigma: Any,
        poisson: Any,
        block: int,
    ) -> tuple[Any, Any]:
        def one(i: Any) -> tuple[Any, Any]:
            k_main, k_gauss, k_pois = jax.random.split(jax.random.fold_in(key, i), 3)
            main = jax.random.poisson(k_main, rate, dtype=jnp.int64).astype(rate.dtype)
            normal = mean_aux + sigma * jax.random.normal(k_gauss, mean_aux.shape, rate.dtype)
            lam = jnp.where(poisson, mean_aux, 0.0)
            counts = jax.random.poisson(k_pois, lam, dtype=jnp.int64).astype(rate.dtype)
            return main, jnp.where(gauss, normal, jnp.where(poisson, counts, aux))

        return jax.vmap(one)(offset + jnp.arange(block, dtype=jnp.uint32))

    return sample


_SAMPLE: Any = None


def sample_toys(
    seed: int,
    words: tuple[int, int],
    n_toys: int,
    rate: np.ndarray,
    mean_aux: np.ndarray,
    aux: np.ndarray,
    gauss: np.ndarray,
    sigma: np.ndarray,
    poisson: np.ndarray,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_toys`` toys of one model at one set of parameters: main and auxiliary data.

    Args:
        seed: the user's seed.
        words: the point's stream (:func:`~pyhf_dask.kernels.toys.stream_words`).
        n_toys: number of toys.
        rate: ``(B,)`` expected main counts at the parameters.
        mean_aux: ``(P,)`` expected auxiliary data there (``theta`` for Gaussian
            constraints, ``theta * tau`` for Poisson ones).
        aux: ``(P,)`` the data's auxiliary values (kept for unconstrained parameters).
        gauss, sigma, poisson: the constraint terms of each parameter.
        device: the JAX device (default: JAX's).

    Returns:
        ``(n_toys, B)`` main data and ``(n_toys, P)`` auxiliary data.

    Example:
        >>> import numpy as np
        >>> main, aux = sample_toys(1, (2, 3), 5, np.array([4.0]), np.array([1.0]),
        ...                         np.array([1.0]), np.array([True]), np.array([0.1]),
        ...                         np.array([False]))
        >>> main.shape, aux.shape, bool((main == np.round(main)).all())
        ((5, 1), (5, 1), True)
    """
    global _SAMPLE  # noqa: PLW0603
    import jax

    from pyhf_dask.kernels.jax_kernel import _JAX_LOCK, _configure_jax

    _configure_jax()
    if _SAMPLE is None:
        _SAMPLE = _sampler()
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), words[0]), words[1])
    block = min(SAMPLE_BLOCK, 1 << max(0, (n_toys - 1).bit_length()))
    args = (rate, mean_aux, aux, gauss, sigma, poisson)
    mains, auxes = [], []
    with _JAX_LOCK:
        placed = jax.device_put((key, *args), device)
        for offset in range(0, n_toys, block):
            main, toy_aux = _SAMPLE(placed[0], np.uint32(offset), *placed[1:], block=block)
            mains.append(np.asarray(main))
            auxes.append(np.asarray(toy_aux))
    return np.concatenate(mains)[:n_toys], np.concatenate(auxes)[:n_toys]


class _Rows:
    """Rows of a stacked per-point array, seen through a toy -> point map (no copy)."""

    def __init__(self, base: np.ndarray, point: np.ndarray) -> None:
        self.base = base
        self.point = point

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.base[self.point[idx]])


def _view(arrays: dict[str, np.ndarray], point: np.ndarray) -> dict[str, Any]:
    """The stacked model arrays of the points, one row per entry of ``point`` (lazily)."""
    return {key: _Rows(value, point) for key, value in arrays.items()}


def _identity(patches: Any, i: int) -> Any:
    """What selects point ``i``'s toy stream: its patch, or its signal yields."""
    yields = getattr(patches, "yields", None)
    if yields is not None:
        return np.asarray(yields[i]).tolist()
    return patches[i]


def _seed(options: dict[str, Any]) -> int:
    seed = options.get("seed")
    return 0 if seed is None else int(seed)


def hypotest_chunk(
    workspace: dict[str, Any], patches: list[Patch], options: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Toy-based hypothesis tests of a chunk of points (the kernel contract, toy fields too).

    Args:
        workspace: background-only workspace spec.
        patches: one jsonpatch per point (or a chunk's signal yields).
        options: :meth:`~pyhf_dask.kernels.FitOptions.to_dict` output with
            ``calctype="toybased"``, ``ntoys`` and ``seed``.

    Returns:
        The fields of :data:`~pyhf_dask.kernels.FIELDS` and
        :data:`~pyhf_dask.kernels.TOY_FIELDS` as NumPy arrays.
    """
    from pyhf_dask.kernels.jax_check import structure_verdict
    from pyhf_dask.kernels.jax_kernel import _configure_jax, _device
    from pyhf_dask.kernels.jax_vector import build_chunk, stack_groups

    start = time.perf_counter()
    _configure_jax()
    poi_values = [float(v) for v in options["poi_values"]]
    n = len(patches)
    out = empty_result(n, len(poi_values), toys=True)
    if options.get("test_stat") not in ("qtilde", "q"):
        out["message"][:] = f"test statistic {options.get('test_stat')!r} is not supported by toys"
        return out
    groups, unsupported = build_chunk(workspace, patches, options)
    checked = []
    for group in groups:
        reason = structure_verdict(group.spec, options, group.model)
        if reason is None:
            checked.append(group)
        else:
            unsupported.update(dict.fromkeys(group.index.tolist(), reason))
    for i, reason in unsupported.items():
        out["message"][i] = f"toy-based CLs need the JAX kernel's dense model: {reason}"
    if checked:
        _toys(out, stack_groups(checked), patches, options, _device(options.get("device")))
    out["fit_time"][:] = (time.perf_counter() - start) / max(n, 1)
    return out


def _closures(options: dict[str, Any], device: Any) -> tuple[Any, Any, Any, Any]:
    """The batched fit, Asimov and kink-probe functions on ``device`` (one at a time)."""
    import jax

    from pyhf_dask.kernels.jax_export import call
    from pyhf_dask.kernels.jax_fit import FitSettings, asimov_batch, fit_batch, sides_batch
    from pyhf_dask.kernels.jax_kernel import _JAX_LOCK

    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])

    def run(fn: Any) -> Any:
        def go(model: dict[str, Any], *args: Any) -> dict[str, Any]:
            with _JAX_LOCK:
                res = call(fn, settings, *jax.device_put((model, *args), device))
                return dict(jax.device_get(res))

        return go

    return run(fit_batch), run(asimov_batch), run(sides_batch), settings


def _kinked(arrays: dict[str, np.ndarray], settings: Any) -> np.ndarray | None:
    from pyhf_dask.kernels.jax_kernel import _kinked as kinked

    result: np.ndarray | None = kinked(arrays, settings)
    return result


def _toys(
    out: dict[str, np.ndarray],
    stack: Any,
    patches: Any,
    options: dict[str, Any],
    device: Any,
) -> None:
    """Observed fits, toys and CLs of the stacked points, written into ``out``."""
    from pyhf_dask.kernels.jax_batch import batch_size, run_rows
    from pyhf_dask.kernels.jax_starts import consistency_gap, fit_family

    fit, asimov, sides, settings = _closures(options, device)
    arrays = stack.arrays
    n = len(stack.index)
    poi = stack.poi
    mus = np.asarray(options["poi_values"], dtype=np.float64)
    n_toys = int(options["ntoys"])
    seed = _seed(options)
    kinked = _kinked(arrays, settings)
    probe = sides if kinked is not None else None
    platform = getattr(device, "platform", "cpu")
    size = batch_size(stack.dims[0], platform, n * (2 + len(mus)))
    obs = fit_family(
        fit,
        arrays,
        poi,
        arrays["init"],
        arrays["data"],
        arrays["aux"],
        np.concatenate([[0.0, np.nan], mus]),
        size,
        kinked,
        probe,
    )
    obs_ok = obs["converged"] & (consistency_gap(obs["value"], 1) <= 1e-6)[:, None]
    index = np.asarray(stack.index)
    failed_msgs: dict[int, list[str]] = {}
    for k, mu in enumerate(mus):
        ok = obs_ok[:, 0] & obs_ok[:, 1] & obs_ok[:, 2 + k]
        rows = np.flatnonzero(ok)
        for r in np.flatnonzero(~ok).tolist():
            failed_msgs.setdefault(r, []).append(f"POI={mu:g}: fits on the data not certified")
        if not len(rows):
            continue
        # s+b toys at the POI = mu fit, b toys at the POI = 0 fit, per point
        gen = np.concatenate([obs["theta"][rows, 2 + k], obs["theta"][rows, 0]])
        gen_point = np.concatenate([rows, rows])
        expect = run_rows(asimov, _view(arrays, gen_point), gen, size)
        datas, auxes = [], []
        for j, p in enumerate(gen_point.tolist()):
            hyp = "sb" if j < len(rows) else "b"
            words = stream_words(_identity(patches, int(index[p])), float(mu), hyp)
            main, aux = sample_toys(
                seed,
                words,
                n_toys,
                expect["data"][j],
                expect["aux"][j],
                arrays["aux"][p],
                arrays["gauss"][p],
                arrays["sigma"][p],
                arrays["poisson"][p],
                device,
            )
            datas.append(main)
            auxes.append(aux)
        toy_point = np.repeat(gen_point, n_toys)
        models = _view(arrays, toy_point)
        models["fixed"] = np.asarray(arrays["fixed"])[toy_point]
        toy_size = batch_size(stack.dims[0], platform, 2 * len(toy_point))
        fits = fit_family(
            fit,
            models,
            poi[toy_point],
            np.repeat(gen, n_toys, axis=0),
            np.concatenate(datas),
            np.concatenate(auxes),
            np.array([np.nan, mu]),
            toy_size,
            None if kinked is None else kinked[toy_point],
            probe,
        )
        muhat = fits["theta"][np.arange(len(toy_point)), 0, poi[toy_point]]
        q = qmu_statistic(fits["value"][:, 1], fits["value"][:, 0], muhat, float(mu))
        good = fits["converged"].all(axis=1) & (consistency_gap(fits["value"], 0) <= 1e-6)
        good &= np.isfinite(q)
        q = q.reshape(2, len(rows), n_toys)
        good = good.reshape(2, len(rows), n_toys)
        q_obs = qmu_statistic(
            obs["value"][rows, 2 + k],
            obs["value"][rows, 1],
            obs["theta"][rows, 1, poi[rows]],
            float(mu),
        )
        for j, r in enumerate(rows.tolist()):
            _fill_point(
                out, int(index[r]), k, float(mu), q_obs[j], q[:, j], good[:, j], failed_msgs, r
            )
    for r in range(n):
        i = int(index[r])
        problems = failed_msgs.get(r, [])
        finite = np.isfinite(out["CLs_obs"][i])
        if not problems and finite.all():
            out["status"][i] = "converged"
        elif finite.any():
            out["status"][i] = "partial"
        else:
            out["status"][i] = "failed"
        total = int(np.nansum(np.maximum(out["ntoys_failed"][i], 0)))
        head = f"toys: {n_toys} per hypothesis and POI value, seed {seed}, {total} failed"
        out["message"][i] = "; ".join([head, *problems])


def _fill_point(
    out: dict[str, np.ndarray],
    i: int,
    k: int,
    mu: float,
    q_obs: float,
    q: np.ndarray,
    good: np.ndarray,
    failed_msgs: dict[int, list[str]],
    row: int,
) -> None:
    """CLs of point ``i`` at POI value ``k`` from its toys (``q``, ``good``: ``(2, ntoys)``)."""
    n_toys = q.shape[1]
    q_sb, q_b = q[0][good[0]], q[1][good[1]]
    res = toy_pvalues(float(q_obs), q_sb, q_b)
    n_failed = (n_toys - int(good[0].sum()), n_toys - int(good[1].sum()))
    out["ntoys"][i, k] = n_toys
    out["ntoys_failed"][i, k] = sum(n_failed)
    out["CLsb_obs"][i, k] = res["CLsb"]
    out["CLsb_obs_err"][i, k] = res["CLsb_err"]
    out["CLb_obs"][i, k] = res["CLb"]
    out["CLb_obs_err"][i, k] = res["CLb_err"]
    out["CLs_obs"][i, k] = res["CLs"]
    out["CLs_obs_err"][i, k] = res["CLs_err"]
    out["CLs_exp"][i, k] = expected_band(q_sb, q_b)
    if not np.isfinite(res["CLs"]):
        failed_msgs.setdefault(row, []).append(
            f"POI={mu:g}: no b toy as extreme as the data (CLb = 0): more toys needed"
        )
    for name, p, nf in (("s+b", res["CLsb"], n_failed[0]), ("b", res["CLb"], n_failed[1])):
        if failure_bound_exceeded(nf, n_toys, p):
            failed_msgs.setdefault(row, []).append(
                f"POI={mu:g}: {nf} of {n_toys} {name} toy fits not certified "
                f"(could move the p-value by more than its Monte Carlo error)"
            )
