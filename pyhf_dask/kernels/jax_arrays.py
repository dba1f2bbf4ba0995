"""Model building for a chunk given as signal yields: no patch per point.

A function grid whose signal function returns yields (``SignalGrid.from_function(...,
sample=...)``) ships each chunk as one :class:`~pyhf_dask.signals.SignalArrays`: the
yields of one sample, ``(n_points, n_bins)``. All its points share one model structure,
built once from the first point's patch; the yields are written into the sample's rows of
the group's nominal array, and what derives from a nominal (histosys deltas, staterror and
shapesys constraints) is recomputed, by :class:`~pyhf_dask.kernels.jax_vector._Fill`, the
fill that :func:`~pyhf_dask.kernels.jax_vector.build_chunk` uses for the numbers of patches,
so the arrays are identical to those of the same points given as patches. Points the fill
declines (or a first point that cannot be built) take the per-point path, whose patch is
made for that point only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pyhf_dask.kernels.jax_model import apply_patch, build_dense, structure_key
from pyhf_dask.kernels.jax_vector import Group, _Fill, _nan_rows, _per_point, _Slot
from pyhf_dask.signals import SignalArrays

__all__ = ["build_arrays"]

log = logging.getLogger(__name__)


def build_arrays(
    workspace: dict[str, Any], chunk: SignalArrays, options: dict[str, Any]
) -> tuple[list[Group], dict[int, str]]:
    """The dense models of a chunk given as signal yields (one group, as a rule).

    Args:
        workspace: background-only workspace spec.
        chunk: the points' yields.
        options: fit options (interpolation codes, measurement).

    Returns:
        As :func:`~pyhf_dask.kernels.jax_vector.build_chunk`: the groups, and the points no
        dense model could be built for (index -> reason).

    Example:
        >>> from pyhf_dask.signals import signal_target
        >>> from pyhf_dask.simplemodels import simple_workspace
        >>> from pyhf_dask.kernels import FitOptions
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> target = signal_target(ws, "signal", None, vectorized=True, where="f")
        >>> chunk = SignalArrays(target, np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> groups, failed = build_arrays(ws, chunk, FitOptions().to_dict())
        >>> len(groups), groups[0].varying["nominal"][:, :2].tolist(), failed
        (1, [[1.0, 2.0], [3.0, 4.0]], {})
    """
    n = len(chunk)
    groups: dict[Any, Group] = {}
    failed: dict[int, str] = {}
    if not n:
        return [], failed
    single: list[int] = []
    try:
        template = chunk[0]
        spec = apply_patch(workspace, template)
        key = structure_key(spec, options)
        model = build_dense(spec, options, key)
        fill = _Fill(model, spec, options, n)
        numbers = _numbers(chunk, spec, fill.slots)
        varying = fill.run(numbers)
    except Exception as exc:  # the per-point path says why, point by point
        log.debug("array build declined a chunk of %d: %s", n, exc)
        single = list(range(n))
    else:
        keep = ~(fill.bad | _nan_rows(numbers, n))
        if not keep.all():
            single = np.flatnonzero(~keep).tolist()
            varying = {k: v[keep] for k, v in varying.items()}
        rows = np.flatnonzero(keep)
        if len(rows):
            groups[(key, 0)] = Group(key, spec, model, rows, varying)
    if single:
        _per_point(workspace, chunk, single, options, groups, failed)
    return list(groups.values()), failed


def _numbers(
    chunk: SignalArrays, spec: dict[str, Any], slots: list[_Slot]
) -> dict[int, dict[Any, Any]]:
    """Slot -> ``{"data": (n, nbins)}`` of the target sample in each of its channels."""
    where = {id(s.sample): i for i, s in enumerate(slots)}
    target = chunk.target
    out: dict[int, dict[Any, Any]] = {}
    for name, (c, s) in zip(target.channels, target.places, strict=True):
        slot = where[id(spec["channels"][c]["samples"][s])]
        out[slot] = {"data": chunk.channel(name)}
    return out
