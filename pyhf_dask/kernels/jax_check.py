"""One-time check of a dense model structure against pyhf's own model of the same point."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pyhf_dask.kernels.jax_model import DenseModel

__all__ = ["check_against_pyhf", "structure_verdict"]

log = logging.getLogger(__name__)

#: structure key -> None (checked, agrees with pyhf) or the reason it does not.
_CHECKED: dict[Any, str | None] = {}


def _pyhf_order(model: Any, dense: DenseModel) -> np.ndarray:
    """Index map: position in pyhf's parameter vector -> position in the dense vector."""
    offsets = {}
    pos = 0
    for name in dense.par_names:
        offsets[name] = pos
        pos += model.config.param_set(name).n_parameters
    perm = np.zeros(model.config.npars, dtype=np.int64)
    for name in model.config.par_order:
        sl = model.config.par_slice(name)
        perm[sl] = offsets[name] + np.arange(sl.stop - sl.start)
    return perm


def check_against_pyhf(
    spec: dict[str, Any], options: dict[str, Any], dense: DenseModel, twice_nll: Any
) -> str | None:
    """Compare a built point with pyhf's model; return a reason if they disagree.

    Args:
        spec: the patched workspace spec of the point.
        options: kernel options (interpolation codes, measurement).
        dense: the dense model of the same point.
        twice_nll: ``twice_nll(theta, arrays) -> float`` of the dense model.
    """
    import pyhf

    ws = pyhf.Workspace(spec, validate=False)
    with _NumpyBackend():
        model = ws.model(
            validate=False,  # the workspace was validated when it was read
            measurement_name=options.get("measurement"),
            modifier_settings={
                "normsys": {"interpcode": options["normsys_interpcode"]},
                "histosys": {"interpcode": options["histosys_interpcode"]},
            },
        )
        data = np.asarray(ws.data(model), dtype=float)
        if set(model.config.par_order) != set(dense.par_names):
            return "parameter names differ from pyhf's"
        perm = _pyhf_order(model, dense)
        a = dense.arrays
        checks = {
            "inits": (np.asarray(model.config.suggested_init()), a["init"]),
            "bounds": (
                np.asarray(model.config.suggested_bounds()),
                np.stack([a["lower"], a["upper"]], axis=1),
            ),
            "fixed": (np.asarray(model.config.suggested_fixed(), dtype=float), a["fixed"]),
        }
        for what, (ref, mine) in checks.items():
            if not np.allclose(ref, np.asarray(mine, dtype=float)[perm], rtol=1e-12, atol=0):
                return f"{what} differ from pyhf's"
        if model.config.poi_index is None or perm[model.config.poi_index] != dense.poi_index:
            return "POI differs from pyhf's"
        rng = np.random.default_rng(1)
        base = a["init"].copy()
        ref0 = -2.0 * float(model.logpdf(base[perm], data)[0])
        mine0 = float(twice_nll(base, a))
        for _ in range(3):
            theta = base + np.where(a["fixed"], 0.0, rng.uniform(-0.3, 0.3, base.size))
            theta = np.clip(theta, a["lower"] + 1e-3, a["upper"])
            d_ref = -2.0 * float(model.logpdf(theta[perm], data)[0]) - ref0
            d_mine = float(twice_nll(theta, a)) - mine0
            if not abs(d_ref - d_mine) <= 1e-7 * (1.0 + abs(d_ref)):
                return f"likelihood differs from pyhf's ({d_mine!r} vs {d_ref!r})"
    return None


class _NumpyBackend:
    """Context manager: pyhf's NumPy backend, restoring the previous backend on exit."""

    def __enter__(self) -> None:
        import pyhf

        self._saved = pyhf.get_backend()
        pyhf.set_backend("numpy")

    def __exit__(self, *exc: object) -> None:
        import pyhf

        pyhf.set_backend(*self._saved)


def structure_verdict(
    spec: dict[str, Any], options: dict[str, Any], model: DenseModel
) -> str | None:
    """``None`` when the structure of ``model`` agrees with pyhf's model of ``spec``, else
    why not: checked once per structure and process (:func:`check_against_pyhf` on the
    CPU), an agreement kept on disk for later processes
    (:func:`~pyhf_dask.kernels.jax_export.known_to_agree`)."""
    if model.key in _CHECKED:
        return _CHECKED[model.key]
    from pyhf_dask.kernels.jax_export import keep_agreement, known_to_agree

    if known_to_agree(model.key):  # checked by an earlier process of this machine
        _CHECKED[model.key] = None
        return None
    from pyhf_dask.kernels.jax_batch import pad_model, padded_dims
    from pyhf_dask.kernels.jax_fit import FitSettings, twice_nll_jit

    settings = FitSettings(options["normsys_interpcode"], options["histosys_interpcode"])
    dims = padded_dims([model])
    arrays = pad_model(model, dims)

    import jax

    cpu = jax.devices("cpu")[0]  # a few single points: the CPU compiles them fastest

    def nll(theta: np.ndarray, _: dict[str, np.ndarray]) -> float:
        full = np.zeros(dims[0])
        full[: len(theta)] = theta
        with jax.default_device(cpu):
            return float(twice_nll_jit(full, arrays, settings))

    try:
        reason = check_against_pyhf(spec, options, model, nll)
    except Exception as exc:  # pyhf rejects the model: the reference kernel will say why
        reason = f"pyhf could not build the model ({type(exc).__name__}: {exc})"
    if reason is not None:
        log.warning("JAX kernel falls back to pyhf for a model structure: %s", reason)
    _CHECKED[model.key] = reason
    if reason is None:  # only agreement is kept: a refusal is checked again next time
        keep_agreement(model.key)
    return reason
