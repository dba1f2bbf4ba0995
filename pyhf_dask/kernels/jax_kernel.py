"""The JAX kernel: every hypothesis test of a chunk as one batched float64 computation.

Points are grouped by model structure (:func:`~pyhf_dask.kernels.jax_model.structure_key`);
each group's dense arrays are stacked, padded to a fixed bucket size so that one compiled
function serves every chunk of that size, and fitted at once by
:func:`~pyhf_dask.kernels.jax_fit.fit_batch` (bounded Newton fits with exact Hessians).
CLs values follow pyhf's asymptotic calculator (``pyhf/infer/calculators.py``).

Compiled functions are cached per process (JAX's in-memory cache of the jitted function)
and on disk (JAX's persistent compilation cache, in ``$PYHF_DASK_JAX_CACHE`` or
``~/.cache/pyhf_dask/jax``; set the variable to ``off`` to disable it).

A point whose model the dense builder does not support, or whose structure disagrees with
pyhf's own model in a one-time check, is computed by the reference kernel and marked
``"fallback"`` with the reason. A point whose fits do not converge is ``"failed"`` with NaN
CLs and a message naming the fit, its iterations and its projected gradient.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

from pyhf_dask.grid import Patch
from pyhf_dask.kernels import empty_result
from pyhf_dask.kernels.jax_model import (
    ARRAY_FIELDS,
    DenseModel,
    Unsupported,
    apply_patch,
    build_dense,
    structure_key,
)

__all__ = ["bucket_size", "cls_from_fits", "hypotest_chunk"]

log = logging.getLogger(__name__)

#: structure key -> None (checked, agrees with pyhf) or the reason it does not.
_CHECKED: dict[Any, str | None] = {}
_CONFIGURED = False
_BAND_NSIGMA = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
#: Newton iterations of the first pass over a batch, and of the pass over the stragglers.
_FIRST_PASS = 20
_SECOND_PASS = 200


def _configure_jax() -> None:
    """float64 and the persistent compilation cache, once per process."""
    global _CONFIGURED  # noqa: PLW0603
    import jax

    jax.config.update("jax_enable_x64", True)
    if _CONFIGURED:
        return
    _CONFIGURED = True
    where = os.environ.get("PYHF_DASK_JAX_CACHE", "")
    if where.lower() in ("off", "none", "0"):
        return
    if getattr(jax.config, "jax_compilation_cache_dir", None) is None:
        path = Path(where) if where else Path.home() / ".cache" / "pyhf_dask" / "jax"
        try:
            path.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(path))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        except OSError as exc:  # a read-only home must not stop the scan
            log.warning("no persistent JAX compilation cache at %s: %s", path, exc)


def _device(name: str | None) -> Any:
    import jax

    if name is None:
        return jax.devices()[0]
    return jax.devices(name)[0]


def bucket_size(n: int) -> int:
    """Padded batch size: a power of two up to 1024, then a multiple of 1024.

    Example:
        >>> bucket_size(217), bucket_size(1), bucket_size(3000)
        (256, 8, 3072)
    """
    if n <= 1024:
        return max(8, 1 << (n - 1).bit_length())
    return -(-n // 1024) * 1024


def cls_from_fits(
    obs_value: np.ndarray,
    obs_muhat: np.ndarray,
    asimov_value: np.ndarray,
    asimov_muhat: np.ndarray,
    poi_values: np.ndarray,
    test_stat: str,
) -> tuple[np.ndarray, np.ndarray]:
    """CLs and the expected band from the fitted ``-2 log L`` values (pyhf's asymptotics).

    Args:
        obs_value: ``(n, 2 + n_poi)``: fixed POI=0, free, fixed at each POI value (data).
        obs_muhat: ``(n,)`` best-fit POI on the data.
        asimov_value: ``(n, 1 + n_poi)``: free, fixed at each POI value (Asimov data).
        asimov_muhat: ``(n,)`` best-fit POI on the Asimov data.
        poi_values: ``(n_poi,)`` tested POI values.
        test_stat: ``"qtilde"`` or ``"q"``.

    Returns:
        ``CLs_obs`` ``(n, n_poi)`` and ``CLs_exp`` ``(n, n_poi, 5)``.
    """
    mu = poi_values[None, :]
    tmu = np.clip(obs_value[:, 2:] - obs_value[:, 1:2], 0.0, None)
    qmu = np.where(obs_muhat[:, None] > mu, 0.0, tmu)
    tmu_a = np.clip(asimov_value[:, 1:] - asimov_value[:, 0:1], 0.0, None)
    qmu_a = np.where(asimov_muhat[:, None] > mu, 0.0, tmu_a)
    sqrtq, sqrtq_a = np.sqrt(qmu), np.sqrt(qmu_a)
    if test_stat == "qtilde":
        with np.errstate(divide="ignore", invalid="ignore"):
            teststat = np.where(sqrtq <= sqrtq_a, sqrtq - sqrtq_a, (qmu - qmu_a) / (2.0 * sqrtq_a))
    else:
        teststat = sqrtq - sqrtq_a
    cls_obs = ndtr(-(teststat + sqrtq_a)) / ndtr(-teststat)
    band = _BAND_NSIGMA[None, None, :]
    cls_exp = ndtr(-(band + sqrtq_a[..., None])) / ndtr(-band)
    return cls_obs, cls_exp


def _stack(models: list[DenseModel], size: int) -> dict[str, np.ndarray]:
    out = {}
    for name in ARRAY_FIELDS:
        stacked = np.stack([m.arrays[name] for m in models])
        if size > len(models):
            pad = np.repeat(stacked[:1], size - len(models), axis=0)
            stacked = np.concatenate([stacked, pad])
        out[name] = stacked
    return out


def _fit_names(poi_values: list[float]) -> list[str]:
    names = ["POI=0 on data (Asimov)", "free on data"]
    names += [f"POI={mu:g} on data" for mu in poi_values]
    names += ["free on Asimov"] + [f"POI={mu:g} on Asimov" for mu in poi_values]
    return names


def _fit_size(n: int) -> int:
    """Padded number of fits: a power of two up to 64, then a multiple of 64."""
    if n <= 64:
        return max(8, 1 << (n - 1).bit_length())
    return -(-n // 64) * 64


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if size == len(x):
        return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def _fits(
    points: dict[str, Any],
    shared: dict[str, Any],
    settings: Any,
    device: Any,
    which: np.ndarray,
    init: np.ndarray,
    fixed: np.ndarray,
    data: np.ndarray,
    aux: np.ndarray,
) -> dict[str, np.ndarray]:
    """Run fits in a padded batch with an iteration cap, then the stragglers to the end."""
    import jax

    from pyhf_dask.kernels.jax_fit import fit_batch

    def run(idx: np.ndarray, start: np.ndarray, max_iter: int) -> dict[str, np.ndarray]:
        size = _fit_size(len(idx))
        args = [_pad(x[idx], size) for x in (which, start, fixed, data, aux)]
        out = fit_batch(points, shared, *jax.device_put(args, device), max_iter, settings)
        return {k: np.array(v[: len(idx)]) for k, v in jax.device_get(out).items()}

    everything = np.arange(len(which))
    res = run(everything, init, _FIRST_PASS)
    again = np.flatnonzero(~res["converged"])
    if len(again):
        log.debug("JAX kernel: %d of %d fits continue", len(again), len(which))
        more = run(again, res["theta"], _SECOND_PASS)
        for k in ("theta", "value", "converged", "pgrad"):
            res[k][again] = more[k]
        res["n_iter"][again] += more["n_iter"]
    return res


def _run_group(
    models: list[DenseModel], options: dict[str, Any], device: Any
) -> dict[str, np.ndarray]:
    """Every fit of the hypothesis tests of a group of points of one structure."""
    import jax

    from pyhf_dask.kernels.jax_fit import FitSettings, asimov_batch

    first = models[0]
    poi = first.poi_index
    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])
    n = len(models)
    batched = _stack(models, bucket_size(n))
    points = jax.device_put(batched, device)
    shared = jax.device_put(first.shared(), device)
    mus = np.asarray(options["poi_values"], dtype=np.float64)
    n_poi = len(mus)
    # fits on the data: POI=0 (Asimov parameters), free, POI at each value
    f1 = 2 + n_poi
    which = np.repeat(np.arange(n), f1)
    init = np.repeat(batched["init"][:n], f1, axis=0)
    fixed = np.repeat(batched["fixed"][:n], f1, axis=0)
    kind = np.tile(np.arange(f1), n)
    mu_of = np.concatenate([[0.0, np.nan], mus])[kind]
    held = kind != 1
    init[held, poi] = mu_of[held]
    fixed[held, poi] = True
    obs = _fits(
        points,
        shared,
        settings,
        device,
        which,
        init,
        fixed,
        batched["data"][which],
        batched["aux"][which],
    )
    theta0 = obs["theta"][kind == 0]
    data_a, aux_a = jax.device_get(
        asimov_batch(
            points, shared, jax.device_put(_pad(theta0, len(batched["init"])), device), settings
        )
    )
    data_a, aux_a = np.asarray(data_a)[:n], np.asarray(aux_a)[:n]
    # fits on the Asimov data, started at the Asimov parameters: free, POI at each value
    f2 = 1 + n_poi
    which2 = np.repeat(np.arange(n), f2)
    kind2 = np.tile(np.arange(f2), n)
    init2 = theta0[which2].copy()
    fixed2 = np.repeat(batched["fixed"][:n], f2, axis=0)
    held2 = kind2 > 0
    init2[held2, poi] = mus[kind2[held2] - 1]
    fixed2[held2, poi] = True
    asi = _fits(
        points, shared, settings, device, which2, init2, fixed2, data_a[which2], aux_a[which2]
    )
    obs_value = obs["value"].reshape(n, f1)
    asi_value = asi["value"].reshape(n, f2)
    return {
        "obs_value": obs_value,
        "obs_muhat": obs["theta"][kind == 1, poi],
        "asimov_value": asi_value,
        "asimov_muhat": asi["theta"][kind2 == 0, poi],
        "converged": np.concatenate(
            [obs["converged"].reshape(n, f1), asi["converged"].reshape(n, f2)], axis=1
        ),
        "n_iter": np.concatenate(
            [obs["n_iter"].reshape(n, f1), asi["n_iter"].reshape(n, f2)], axis=1
        ),
        "pgrad": np.concatenate([obs["pgrad"].reshape(n, f1), asi["pgrad"].reshape(n, f2)], axis=1),
    }


def _check(spec: dict[str, Any], options: dict[str, Any], model: DenseModel) -> str | None:
    if model.key in _CHECKED:
        return _CHECKED[model.key]
    import jax.numpy as jnp

    from pyhf_dask.kernels.jax_fit import FitSettings, prepare, twice_nll

    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])
    arrays = {k: jnp.asarray(v) for k, v in {**model.arrays, **model.shared()}.items()}
    arrays = prepare(arrays, settings)

    def nll(theta: np.ndarray, _: dict[str, np.ndarray]) -> float:
        return float(twice_nll(jnp.asarray(theta), arrays["data"], arrays["aux"], arrays, settings))

    from pyhf_dask.kernels.jax_check import check_against_pyhf

    try:
        reason = check_against_pyhf(spec, options, model, nll)
    except Exception as exc:  # pyhf rejects the model: the reference kernel will say why
        reason = f"pyhf could not build the model ({type(exc).__name__}: {exc})"
    if reason is not None:
        log.warning("JAX kernel falls back to pyhf for a model structure: %s", reason)
    _CHECKED[model.key] = reason
    return reason


def hypotest_chunk(
    workspace: dict[str, Any], patches: list[Patch], options: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Hypothesis tests of a chunk of points, batched in JAX (same contract as the reference).

    Args:
        workspace: background-only workspace spec.
        patches: one jsonpatch per point.
        options: :meth:`pyhf_dask.kernels.FitOptions.to_dict` output.

    Returns:
        The fields of :data:`pyhf_dask.kernels.FIELDS` as NumPy arrays.
    """
    start = time.perf_counter()
    _configure_jax()
    poi_values = [float(v) for v in options["poi_values"]]
    n = len(patches)
    out = empty_result(n, len(poi_values))
    fallback: dict[int, str] = {}
    groups: dict[Any, list[tuple[int, DenseModel, dict[str, Any]]]] = {}
    unsupported = None
    if options.get("calctype", "asymptotics") != "asymptotics":
        unsupported = f"calctype {options.get('calctype')!r} is not supported"
    elif options.get("test_stat") not in ("qtilde", "q"):
        unsupported = f"test statistic {options.get('test_stat')!r} is not supported"
    for i, patch in enumerate(patches):
        if unsupported is not None:
            fallback[i] = unsupported
            continue
        try:
            spec = apply_patch(workspace, patch)
            key = structure_key(spec, options)
            model = build_dense(spec, options, key)
        except Unsupported as exc:
            fallback[i] = str(exc)
            continue
        except Exception as exc:  # a broken spec: the reference kernel reports it
            fallback[i] = f"dense model not built ({type(exc).__name__}: {exc})"
            continue
        groups.setdefault(key, []).append((i, model, spec))

    device = _device(options.get("device"))
    names = _fit_names(poi_values)
    for members in groups.values():
        reason = _check(members[0][2], options, members[0][1])
        if reason is not None:
            for i, _, _ in members:
                fallback[i] = reason
            continue
        index = np.array([i for i, _, _ in members])
        res = _run_group([m for _, m, _ in members], options, device)
        cls_obs, cls_exp = cls_from_fits(
            res["obs_value"],
            res["obs_muhat"],
            res["asimov_value"],
            res["asimov_muhat"],
            np.asarray(poi_values),
            options["test_stat"],
        )
        ok = np.asarray(np.asarray(res["converged"]).all(axis=1), dtype=bool)
        for row, i in enumerate(index):
            iters = int(res["n_iter"][row].sum())
            if ok[row]:
                out["CLs_obs"][i] = cls_obs[row]
                out["CLs_exp"][i] = cls_exp[row]
                out["status"][i] = "converged"
                out["message"][i] = f"{len(names)} fits, {iters} Newton iterations"
            else:
                bad = np.flatnonzero(~res["converged"][row])
                k = int(bad[0])
                out["message"][i] = (
                    f"{len(bad)} of {len(names)} fits did not converge; first: "
                    f"{names[k]} after {int(res['n_iter'][row, k])} iterations, "
                    f"|projected grad| {float(res['pgrad'][row, k]):.3g}"
                )
    if fallback:
        _fallback(workspace, patches, options, fallback, out)
    out["fit_time"][:] = (time.perf_counter() - start) / max(n, 1)
    return out


def _fallback(
    workspace: dict[str, Any],
    patches: list[Patch],
    options: dict[str, Any],
    reasons: dict[int, str],
    out: dict[str, np.ndarray],
) -> None:
    """Compute the given points with the reference kernel and mark them ``"fallback"``."""
    from pyhf_dask.kernels import reference

    index = sorted(reasons)
    log.info("JAX kernel: %d point(s) computed by the reference kernel", len(index))
    ref = reference.hypotest_chunk(workspace, [patches[i] for i in index], options)
    for row, i in enumerate(index):
        out["CLs_obs"][i] = ref["CLs_obs"][row]
        out["CLs_exp"][i] = ref["CLs_exp"][row]
        converged = ref["status"][row] == "converged"
        out["status"][i] = "fallback" if converged else "failed"
        out["message"][i] = f"computed by pyhf: {reasons[i]}; pyhf: {ref['message'][row]}"
