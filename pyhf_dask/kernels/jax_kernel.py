"""The JAX kernel: every hypothesis test of a chunk as one batched float64 computation.

Points are grouped by model structure (:func:`~pyhf_dask.kernels.jax_model.structure_key`);
each checked point's dense arrays are padded to bucket shapes
(:mod:`~pyhf_dask.kernels.jax_batch`), so that points of all structures of a chunk, and
all chunks of similar models, share one compiled
:func:`~pyhf_dask.kernels.jax_fit.fit_batch` (bounded Newton fits with exact Hessians),
run in fixed-size batches.
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
import threading
import time
from typing import Any

import numpy as np

from pyhf_dask.cache import cache_root
from pyhf_dask.grid import Patch
from pyhf_dask.kernels import empty_result
from pyhf_dask.kernels.asymptotics import cls_from_fits
from pyhf_dask.kernels.evidence import disagreement, fit_detail, fit_evidence
from pyhf_dask.kernels.jax_batch import batch_size, run_rows
from pyhf_dask.kernels.jax_check import structure_verdict
from pyhf_dask.kernels.jax_vector import Group, Stack, build_chunk, stack_groups

__all__ = ["cls_from_fits", "hypotest_chunk"]

log = logging.getLogger(__name__)

_CONFIGURED = False
#: One JAX computation of this process at a time. XLA's CPU client runs each computation
#: on the process's thread pool; two at once from two threads (Dask's threaded scheduler)
#: can wait on each other's pool threads forever (LAPACK custom calls).
_JAX_LOCK = threading.Lock()


def _configure_jax() -> None:
    """float64 and the persistent compilation cache, once per process."""
    global _CONFIGURED  # noqa: PLW0603
    import jax

    jax.config.update("jax_enable_x64", True)
    if _CONFIGURED:
        return
    _CONFIGURED = True
    path = cache_root()
    if path is None:
        return
    if getattr(jax.config, "jax_compilation_cache_dir", None) is None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(path))
            # every executable is kept: a worker's first chunk loads them all in ~0.1 s
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        except OSError as exc:  # a read-only home must not stop the scan
            log.warning("no persistent JAX compilation cache at %s: %s", path, exc)


def warm_up() -> None:
    """Import and configure everything a fit needs (a worker's start, before its first task).

    JAX with float64 and the persistent compilation cache, its default backend and the
    kernel's modules (pyhf is imported only if a structure check has to run: agreements
    are kept on disk, :func:`pyhf_dask.kernels.jax_export.known_to_agree`).
    """
    import jax

    from pyhf_dask.kernels import jax_export, jax_fit, jax_starts, jax_vector  # noqa: F401

    _configure_jax()
    jax.devices()


def _device(name: str | None) -> Any:
    import jax

    if name is None:
        return jax.devices()[0]
    return jax.devices(name)[0]


def _fit_names(poi_values: list[float]) -> list[str]:
    names = ["POI=0 on data (Asimov)", "free on data"]
    names += [f"POI={mu:g} on data" for mu in poi_values]
    names += ["free on Asimov"] + [f"POI={mu:g} on Asimov" for mu in poi_values]
    return names


def _run_group(stack: Stack, options: dict[str, Any], device: Any) -> dict[str, np.ndarray]:
    """Every fit of the hypothesis tests of a list of points (any structures)."""
    import jax

    from pyhf_dask.kernels.jax_export import call
    from pyhf_dask.kernels.jax_fit import FitSettings, asimov_batch, fit_batch, sides_batch
    from pyhf_dask.kernels.jax_starts import consistency_gap, fit_family, more_starts, moved

    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])
    dims = stack.dims
    n = len(stack.index)
    batched = stack.arrays  # built by jax_vector; fields equal for all points are views
    poi = stack.poi
    # the fits of a family wait together: the data family holds 2 + n_poi per point
    rows = n * (2 + len(options["poi_values"]))
    size = batch_size(dims[0], getattr(device, "platform", "cpu"), rows)

    def fit(model: dict[str, Any], *args: Any) -> dict[str, Any]:
        with _JAX_LOCK:
            out = call(fit_batch, settings, *jax.device_put((model, *args), device))
            return dict(jax.device_get(out))

    def asimov(model: dict[str, Any], theta: Any) -> dict[str, Any]:
        with _JAX_LOCK:
            out = call(asimov_batch, settings, *jax.device_put((model, theta), device))
            return dict(jax.device_get(out))

    def sides(model: dict[str, Any], *args: Any) -> dict[str, Any]:
        with _JAX_LOCK:
            out = call(sides_batch, settings, *jax.device_put((model, *args), device))
            return dict(jax.device_get(out))

    mus = np.asarray(options["poi_values"], dtype=np.float64)
    n_poi = len(mus)
    kinked = _kinked(batched, settings)
    probe = sides if kinked is not None else None
    # fits on the data: POI=0 (Asimov parameters; POI=1 for q0, as pyhf), free, each value
    asimov_mu = 1.0 if options["test_stat"] == "q0" else 0.0
    obs = fit_family(
        fit,
        batched,
        poi,
        batched["init"],
        batched["data"],
        batched["aux"],
        np.concatenate([[asimov_mu, np.nan], mus]),
        size,
        kinked,
        probe,
    )
    theta0 = obs["theta"][:, 0]
    asi_data = run_rows(asimov, batched, theta0, size)
    # fits on the Asimov data, started at the Asimov parameters: free, POI at each value,
    # each fixed one also from pyhf's init and from the data's fit of the same POI value
    asi = fit_family(
        fit,
        batched,
        poi,
        theta0,
        asi_data["data"],
        asi_data["aux"],
        np.concatenate([[np.nan], mus]),
        size,
        kinked,
        probe,
        suggested=batched["init"],
        extra=moved(obs["theta"], 2, 1, n_poi, 1 + n_poi),
    )
    # and the data's fits of each POI value from the Asimov fit of that value (another
    # basin: 1Lbb C1N2_Wh_hbb_450_50); the fit that made the Asimov data stays as it is
    obs = more_starts(
        fit,
        batched,
        poi,
        obs,
        batched["data"],
        batched["aux"],
        np.concatenate([[asimov_mu, np.nan], mus]),
        size,
        moved(asi["theta"], 1, 2, n_poi, 2 + n_poi),
        kinds=range(2, 2 + n_poi),
    )
    converged = np.concatenate([obs["converged"], asi["converged"]], axis=1)
    gaps = (consistency_gap(obs["value"], 1), consistency_gap(asi["value"], 0))
    local = np.zeros_like(converged)
    for gap, column in zip(gaps, (1, 2 + n_poi), strict=True):
        local[:, column] = gap > 1e-6  # a free fit above a fixed one: not the minimum
    converged &= ~local
    return {
        "obs_theta": obs["theta"],
        "asimov_theta": asi["theta"],
        "asimov_data": asi_data["data"],
        "asimov_aux": asi_data["aux"],
        "obs_value": obs["value"],
        "obs_muhat": obs["theta"][np.arange(n), 1, poi],
        "asimov_value": asi["value"],
        "asimov_muhat": asi["theta"][np.arange(n), 0, poi],
        "converged": converged,
        "n_iter": np.concatenate([obs["n_iter"], asi["n_iter"]], axis=1),
        "pgrad": np.concatenate([obs["pgrad"], asi["pgrad"]], axis=1),
        "n_kink": np.concatenate([obs["n_kink"], asi["n_kink"]], axis=1),
        "restarts": np.concatenate([obs["restarts"], asi["restarts"]], axis=1),
        "theta": np.concatenate([obs["theta"], asi["theta"]], axis=1),
        "value": np.concatenate([obs["value"], asi["value"]], axis=1),
        "psd": np.concatenate([obs["psd"], asi["psd"]], axis=1),
        "spread": np.concatenate([obs["spread"], asi["spread"]], axis=1),
        "local": local,
    }


def _kinked(batched: dict[str, np.ndarray], settings: Any) -> np.ndarray | None:
    """``(n, P)`` parameters with a kink at 0 under the codes, or ``None`` (smooth codes)."""
    if not settings.kinked:
        return None
    kink = np.zeros(batched["init"].shape, dtype=bool)
    if settings.histcode == "code0":
        kink |= np.any(batched["h_up"] != batched["h_dn"], axis=2)
    if settings.normcode == "code1":
        with np.errstate(divide="ignore"):
            log_hi, log_lo = np.log(batched["n_hi"]), np.log(batched["n_lo"])
        kink |= np.any(log_hi != -log_lo, axis=2)
    return kink & ~batched["fixed"].astype(bool)


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
    out = empty_result(n, len(poi_values), limits=options["upper_limit"] == "root")
    unsupported = None
    if options.get("calctype", "asymptotics") != "asymptotics":
        unsupported = f"calctype {options.get('calctype')!r} is not supported"
    elif options.get("test_stat") not in ("qtilde", "q", "q0"):
        unsupported = f"test statistic {options.get('test_stat')!r} is not supported"
    groups: list[Group] = []
    if unsupported is not None:
        fallback = dict.fromkeys(range(n), unsupported)
    else:  # one dense build per patch shape, array fills for the points (jax_vector)
        groups, fallback = build_chunk(workspace, patches, options)

    device = _device(options.get("device"))
    names = _fit_names(poi_values)
    if options["test_stat"] == "q0":  # the Asimov parameters: the fit at POI = 1 (pyhf)
        names[0] = "POI=1 on data (Asimov)"
    checked = []
    for group in groups:
        reason = structure_verdict(group.spec, options, group.model)
        if reason is None:
            checked.append(group)
        else:
            fallback.update(dict.fromkeys(group.index.tolist(), reason))
    if checked:
        pending = _fill(out, stack_groups(checked), options, device, names)
        if pending:
            _second_path(workspace, patches, options, pending, out)
    if fallback:
        _fallback(workspace, patches, options, fallback, out)
    out["fit_time"][:] = (time.perf_counter() - start) / max(n, 1)
    return out


def _fill(
    out: dict[str, np.ndarray],
    stack: Stack,
    options: dict[str, Any],
    device: Any,
    names: list[str],
) -> dict[int, tuple[np.ndarray, str]]:
    """Fit the given points in one padded batch and write their results into ``out``.

    Returns:
        The points (index -> failed POI values mask, reason) whose fits could not all be
        certified: they go to the second path (:func:`_second_path`).
    """
    poi_values = np.asarray(options["poi_values"], dtype=np.float64)
    n_poi = len(poi_values)
    res = _run_group(stack, options, device)
    cls_obs, cls_exp = cls_from_fits(
        res["obs_value"],
        res["obs_muhat"],
        res["asimov_value"],
        res["asimov_muhat"],
        poi_values,
        options["test_stat"],
    )
    from pyhf_dask.kernels.jax_nll import FitSettings

    conv = np.asarray(res["converged"], dtype=bool)
    gtol = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"]).gtol
    shared = conv[:, 0] & conv[:, 1] & conv[:, 2 + n_poi]
    poi_ok = shared[:, None] & conv[:, 2 : 2 + n_poi] & conv[:, 3 + n_poi :]
    poi_ok &= np.isfinite(cls_obs) & np.isfinite(cls_exp).all(axis=2)
    index = np.asarray(stack.index)
    out["CLs_obs"][index] = np.where(poi_ok, cls_obs, np.nan)
    out["CLs_exp"][index] = np.where(poi_ok[..., None], cls_exp, np.nan)
    details = [
        fit_detail(len(names), iters, kinks, restarts, disagreed=disagreement(spread, names))
        for iters, kinks, restarts, spread in zip(
            res["n_iter"].sum(axis=1).tolist(),
            res["n_kink"].max(axis=1).tolist(),
            res["restarts"].sum(axis=1).tolist(),
            res["spread"],
            strict=True,
        )
    ]
    all_ok = poi_ok.all(axis=1)
    good = np.flatnonzero(all_ok)
    out["status"][index[good]] = "converged"
    out["message"][index[good]] = [details[row] for row in good.tolist()]
    if options["upper_limit"] == "root":  # the root search reuses the free fits, Asimov data
        from pyhf_dask.kernels.jax_limits import fill_limits

        fill_limits(out, stack, options, device, res, all_ok)
    pending: dict[int, tuple[np.ndarray, str]] = {}
    for row in np.flatnonzero(~all_ok).tolist():
        i = int(index[row])
        ok = poi_ok[row]
        bad = np.flatnonzero(~conv[row])
        if bad.size:
            k = int(bad[0])
            why = (
                f"{len(bad)} of {len(names)} fits not certified; first: {names[k]} after "
                f"{int(res['n_iter'][row, k])} iterations: {fit_evidence(res, stack, row, k, gtol)}"
            )
        else:
            why = "non-finite CLs from certified fits"
        out["status"][i] = "partial" if ok.any() else "failed"
        out["message"][i] = f"JAX: {why} ({details[row]})"
        pending[i] = (~ok, out["message"][i])
    return pending


def _second_path(
    workspace: dict[str, Any],
    patches: list[Patch],
    options: dict[str, Any],
    pending: dict[int, tuple[np.ndarray, str]],
    out: dict[str, np.ndarray],
) -> None:
    """Refit the POI values the JAX fits could not certify with the reference kernel.

    The reference kernel judges pyhf's fits with the same kink-aware KKT test; what it
    certifies fills the missing values and marks the point ``"fallback"``; what it cannot
    stays NaN, and the point is ``"partial"`` (some values certified) or ``"failed"``.
    """
    from pyhf_dask.kernels import reference

    poi_values = np.asarray(options["poi_values"], dtype=np.float64)
    for i, (missing, why) in sorted(pending.items()):
        sub = {**options, "poi_values": [float(v) for v in poi_values[missing]]}
        ref = reference.hypotest_chunk(workspace, [patches[i]], sub)
        if ref["status"][0] == "converged":
            out["CLs_obs"][i, missing] = ref["CLs_obs"][0]
            out["CLs_exp"][i, missing] = ref["CLs_exp"][0]
            for name in ("upper_limit_obs", "upper_limit_exp", "limit_status"):
                if name in ref:  # the point's limits searched by pyhf too
                    out[name][i] = ref[name][0]
            out["status"][i] = "fallback"
            out["message"][i] = f"{why}; {int(missing.sum())} POI value(s) by pyhf: " + str(
                ref["message"][0]
            )
        else:
            out["message"][i] = f"{why}; pyhf did not certify them either: {ref['message'][0]}"


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
        for name in ("upper_limit_obs", "upper_limit_exp", "limit_status"):
            if name in ref:
                out[name][i] = ref[name][row]
        status = str(ref["status"][row])
        out["status"][i] = "fallback" if status == "converged" else status
        out["message"][i] = f"computed by pyhf: {reasons[i]}; pyhf: {ref['message'][row]}"
