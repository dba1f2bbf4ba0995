"""Building the Dask graph of a scan: one fit task per chunk of grid points.

The background-only workspace enters the graph once, under its own key; every chunk task
refers to it. Keys are deterministic (derived from the inputs' digests and the settings),
so the same scan builds the same graph. Per-variable arrays are thin ``getitem`` tasks on
top of the chunk tasks, so computing several variables runs each fit once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import dask
import numpy as np
from dask.delayed import Delayed

from pyhf_dask.grid import FunctionPatches, SignalGrid
from pyhf_dask.kernels import BAND, FIELDS, LIMIT_FIELDS, TOY_FIELDS, empty_result, fit_chunk
from pyhf_dask.tasks import refuse_in_client

if TYPE_CHECKING:
    import dask.array as da

__all__ = [
    "FIT_PREFIX",
    "FitTask",
    "ScanGraph",
    "build_graph",
    "chunk_bounds",
    "extract",
    "split_patches",
]

#: Prefix of the keys of fit tasks (names only: executors route by :class:`FitTask`).
FIT_PREFIX = "pyhf-dask-fit-"

#: Bytes per point of a serialized result beyond the CLs arrays (status, message, time).
_RESULT_POINT_OVERHEAD = 400


def split_patches(patches: Any, parts: int) -> list[Any]:
    """Split a chunk's patches (a list or :class:`~pyhf_dask.grid.FunctionPatches`).

    Example:
        >>> [len(p) for p in split_patches([[1], [2], [3]], 2)]
        [2, 1]
    """
    n = _n_points(patches)
    bounds = np.array_split(np.arange(n), max(1, min(parts, n)))
    out: list[Any] = []
    for idx in bounds:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        if isinstance(patches, FunctionPatches):
            out.append(dataclasses.replace(patches, values=patches.values[start:stop]))
        else:
            out.append(list(patches[start:stop]))
    return out


def _n_points(patches: Any) -> int:
    values = getattr(patches, "values", None)
    return len(values) if isinstance(values, np.ndarray) else len(patches)


class FitTask:
    """The callable of a fit task: :func:`~pyhf_dask.kernels.fit_chunk` with the
    remote-task protocol (:class:`pyhf_dask.tasks.SplittableTask`).

    Executor adapters recognise it by its mark, also inside a task Dask has fused, send
    :attr:`worker` with the task's arguments ``(kernel, workspace, patches, options)``,
    split a call for payload limits and mark the points of a call that keeps failing.
    Run by an ordinary Dask scheduler, it fits in place.

    Example:
        >>> from pyhf_dask.grid import simple_workspace, signal_patch
        >>> from pyhf_dask.kernels import FitOptions
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> args = ("pyhf", ws, [signal_patch([12.0, 11.0])] * 3, FitOptions().to_dict())
        >>> fit = FitTask()
        >>> fit.n_points(args, {}), [fit.n_points(a, k) for a, k in fit.split(args, {}, 2)]
        (3, [2, 1])
        >>> fit.failed(args, {}, "lost")["status"].tolist()
        ['failed', 'failed', 'failed']
    """

    __pyhf_dask_remote__: ClassVar[bool] = True

    @property
    def worker(self) -> Callable[..., Any]:
        """The plain function sent to workers (serialized by reference)."""
        return fit_chunk

    def __call__(
        self, kernel: str, workspace: dict[str, Any], patches: Any, options: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        refuse_in_client("a fit task")
        return fit_chunk(kernel, workspace, patches, options)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FitTask, ())

    def __dask_tokenize__(self) -> str:
        return "pyhf_dask.graph.FitTask"

    def __repr__(self) -> str:
        return "FitTask()"

    def n_points(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Points of the chunk."""
        return _n_points(args[2])

    def split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], parts: int
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The chunk as up to ``parts`` smaller chunks, in order."""
        kernel, workspace, patches, options = args
        return [((kernel, workspace, p, options), kwargs) for p in split_patches(patches, parts)]

    def combine(self, results: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The result of a chunk from the results of its pieces."""
        if len(results) == 1:
            return results[0]
        # FIELDS, and the limit fields of upper_limit="root" when the results have them
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def failed(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
    ) -> dict[str, np.ndarray]:
        """Every point of the chunk ``"failed"`` with ``message``."""
        limits = args[3].get("upper_limit") == "root"
        toys = args[3].get("calctype") == "toybased"
        n_poi = len(args[3]["poi_values"])
        result = empty_result(_n_points(args[2]), n_poi, limits=limits, toys=toys)
        result["message"][:] = message
        return result

    def check(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """What is wrong with a worker's result (``""``: nothing)."""
        shape = (_n_points(args[2]), len(args[3]["poi_values"]))
        if not isinstance(result, dict) or not set(FIELDS) <= set(result):
            return f"worker returned {type(result).__name__}, not a result dict"
        if np.shape(result["CLs_obs"]) != shape:
            return f"worker returned CLs of shape {np.shape(result['CLs_obs'])}, not {shape}"
        return ""

    def result_bytes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Expected size of the serialized result (base64 of the float arrays and more)."""
        n_poi = len(args[3]["poi_values"])
        per_point = int((8 * n_poi * (1 + len(BAND)) + 8) * 4 / 3) + _RESULT_POINT_OVERHEAD
        if args[3].get("calctype") == "toybased":  # the TOY_FIELDS, one value per POI value
            per_point += int(8 * n_poi * len(TOY_FIELDS) * 4 / 3)
        return _n_points(args[2]) * per_point


class ScanGraph(NamedTuple):
    """The fit tasks of a scan and the chunk boundaries they cover."""

    token: str
    bounds: list[tuple[int, int]]
    parts: list[Delayed]


def chunk_bounds(n_points: int, chunk_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each chunk.

    Example:
        >>> chunk_bounds(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + chunk_size, n_points)) for s in range(0, n_points, chunk_size)]


def scan_token(grid: SignalGrid, kernel: str, options: dict[str, Any], chunk_size: int) -> str:
    """Deterministic identifier of a scan: its inputs, kernel, options and chunking."""
    payload = json.dumps(
        [grid.workspace_digest(), grid.patches_digest(), kernel, options, chunk_size],
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_graph(
    grid: SignalGrid,
    *,
    kernel: str,
    options: dict[str, Any],
    chunk_size: int,
    indices: Sequence[tuple[int, int]] | None = None,
    token: str | None = None,
) -> ScanGraph:
    """One delayed :class:`FitTask` (:func:`~pyhf_dask.kernels.fit_chunk`) per chunk.

    Args:
        grid: the signal grid.
        kernel: kernel name.
        options: plain-data fit options.
        chunk_size: points per task.
        indices: chunk bounds to build (default: the whole grid).
        token: the scan's :func:`scan_token`, when the caller has it (it digests every
            patch: computed here otherwise).
    """
    if token is None:
        token = scan_token(grid, kernel, options, chunk_size)
    bounds = list(indices) if indices is not None else chunk_bounds(len(grid), chunk_size)
    workspace = dask.delayed(grid.workspace, name=f"pyhf-dask-workspace-{token}", traverse=False)
    parts = []
    for start, stop in bounds:
        patches = dask.delayed(
            grid.chunk(start, stop), name=f"pyhf-dask-patches-{token}-{start}", traverse=False
        )
        key = f"{FIT_PREFIX}{token}-{start}"
        parts.append(dask.delayed(_FIT)(kernel, workspace, patches, options, dask_key_name=key))
    return ScanGraph(token, bounds, parts)


_FIT = FitTask()

#: Variables of a discovery scan (``test_stat="q0"``), from the kernels' CLs fields.
_DISCOVERY: dict[str, tuple[str, tuple[str, ...]]] = {
    "p0_obs": ("float64", ()),
    "p0_exp": ("float64", ("band",)),
    "Z_obs": ("float64", ()),
    "Z_exp": ("float64", ("band",)),
}


def extract(
    result: dict[str, np.ndarray], name: str, poi_values: list[float], cl: float, squeeze: bool
) -> np.ndarray:
    """One variable of a chunk result; upper limits are derived from the POI scan.

    A kernel's root-searched limits (``upper_limit="root"``: the result holds them) are
    taken as they are; otherwise limits are interpolated in the POI scan and
    ``limit_status`` says which lie outside it (NaN, never the grid's end). Under
    ``test_stat="q0"`` the kernels' CLs fields hold the discovery p-values: ``p0_obs``,
    ``p0_exp`` and their significances ``Z_obs``, ``Z_exp`` (``Phi^-1(1 - p0)``).
    """
    if name in _DISCOVERY:
        from scipy.special import ndtri

        p0 = result["CLs_obs" if name.endswith("_obs") else "CLs_exp"][:, 0]
        return -ndtri(p0) + 0.0 if name.startswith("Z") else p0  # + 0.0: Z = 0, not -0
    if name in ("upper_limit_obs", "upper_limit_exp", "limit_status"):
        if name in result:
            return result[name]
        from pyhf_dask.results import upper_limits

        obs, exp, flag = upper_limits(
            result["CLs_obs"], result["CLs_exp"], poi_values, cl=cl, return_status=True
        )
        return {"upper_limit_obs": obs, "upper_limit_exp": exp, "limit_status": flag}[name]
    value = result[name]
    if name == "message" and "limit_status" not in result and not squeeze and len(poi_values) > 1:
        return _grid_limit_notes(result, value, poi_values, cl)
    if squeeze and (name in ("CLs_obs", "CLs_exp") or name in TOY_FIELDS):
        value = value[:, 0]
    return value


def _grid_limit_notes(
    result: dict[str, np.ndarray], message: np.ndarray, poi_values: list[float], cl: float
) -> np.ndarray:
    """The messages, with a note where a limit lies outside the POI grid (and is NaN)."""
    from pyhf_dask.results import upper_limits

    *_, flag = upper_limits(
        result["CLs_obs"], result["CLs_exp"], poi_values, cl=cl, return_status=True
    )
    out = np.array(message, dtype=object, copy=True)
    where = {
        1: f"above the POI grid (CLs > {1 - cl:g} up to POI = {max(poi_values):g})",
        2: f"below the POI grid (CLs < {1 - cl:g} already at POI = {min(poi_values):g})",
    }
    for i in np.flatnonzero(np.isin(flag, (1, 2))):
        out[i] = f"{out[i]}; an upper limit lies {where[int(flag[i])]}: NaN"
    return out


def variable_arrays(
    graph: ScanGraph,
    poi_values: list[float],
    *,
    squeeze: bool,
    cl: float,
    limits: bool = False,
    discovery: bool = False,
    toys: bool = False,
) -> dict[str, tuple[tuple[str, ...], da.Array]]:
    """Dask arrays of every result variable, with their dimension names.

    ``limits``: the kernel root-searches the upper limits (``upper_limit="root"``);
    ``discovery``: ``test_stat="q0"`` (variables :data:`_DISCOVERY` instead of CLs).
    ``toys``: ``calctype="toybased"`` (the :data:`~pyhf_dask.kernels.TOY_FIELDS` too).
    """
    import dask.array as da  # here: a worker unpickling a fit task needs no dask.array

    n_poi = len(poi_values)
    specs: dict[str, tuple[str, tuple[str, ...]]] = dict(FIELDS)
    if discovery:  # test_stat="q0": p-values and significances instead of CLs
        del specs["CLs_obs"], specs["CLs_exp"]
        specs = {**_DISCOVERY, **specs}
    elif limits or (not squeeze and n_poi > 1):
        specs.update(LIMIT_FIELDS)
    if toys:
        specs.update(TOY_FIELDS)
    sizes = {"poi": n_poi, "band": len(BAND)}
    arrays: dict[str, tuple[tuple[str, ...], da.Array]] = {}
    for name, (dtype, extra) in specs.items():
        dims = tuple(d for d in extra if not (squeeze and d == "poi"))
        pieces = []
        for (start, stop), part in zip(graph.bounds, graph.parts, strict=True):
            shape = (stop - start, *(sizes[d] for d in dims))
            piece = dask.delayed(extract, pure=True)(part, name, poi_values, cl, squeeze)
            pieces.append(da.from_delayed(piece, shape=shape, dtype=np.dtype(dtype)))
        arrays[name] = (("point", *dims), da.concatenate(pieces, axis=0))
    return arrays


#: Most points per task of the JAX kernel by default (:func:`default_chunk_size`).
JAX_CHUNK_CAP = 2048


def default_chunk_size(kernel: str, n_points: int, n_workers: int) -> int:
    """Points per task when none is configured, capped by kernel.

    The reference kernel gets a few tasks per worker (load balance). The JAX kernel fits a
    chunk in fixed-size batches with per-process fixed costs (tracing, the structure
    check) and per-chunk costs (building, padding the last batch), so it gets one task
    per worker, and for large grids an equal number of tasks per worker of at most
    :data:`JAX_CHUNK_CAP` points (a finished chunk is also the unit a store keeps).

    Example:
        >>> default_chunk_size("jax", 217, 2), default_chunk_size("pyhf", 217, 2)
        (109, 8)
        >>> default_chunk_size("jax", 10_000, 2)  # 6 tasks, 3 per worker
        1667
    """
    workers = max(1, n_workers)
    if kernel == "jax":
        rounds = math.ceil(n_points / (workers * JAX_CHUNK_CAP))
        return max(1, math.ceil(n_points / (workers * max(1, rounds))))
    return max(1, min(8, math.ceil(n_points / (2 * workers))))
