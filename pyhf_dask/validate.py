"""Checks of a whole signal grid before any fit is submitted.

Every patch is applied to the background-only workspace (cheaply, with structural sharing,
see :mod:`pyhf_dask.patching`); the yields it brings in must be finite and non-negative;
every sample, modifier and observation of a channel must have one value per bin, and no
channel more than ``pyhf-dask.max-bins`` bins (:func:`check_shapes`);
and the measurement's POI must be a ``normfactor`` of every patched model. For a grid
defined by a function only the first point is checked here (the grid may have millions of
points); the kernels record any later problem per point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from pyhf_dask.cache import keep, known
from pyhf_dask.exceptions import InvalidGrid, InvalidPatch, InvalidWorkspace
from pyhf_dask.grid import SignalGrid, materialize
from pyhf_dask.inputs import check_yields, limit, too_large
from pyhf_dask.patching import PatchConflict, apply_patch
from pyhf_dask.schema import digest, pyhf_version

__all__ = ["check_shapes", "validate_grid"]

log = logging.getLogger(__name__)


def _dicts(values: Any) -> Iterator[dict[str, Any]]:
    """The objects of a JSON list (anything else is left to the schema check)."""
    if isinstance(values, list):
        yield from (v for v in values if isinstance(v, dict))


def _length(values: Any) -> int | None:
    return len(values) if isinstance(values, list) else None


def check_shapes(spec: Mapping[str, Any], where: str, *, error: type = InvalidWorkspace) -> None:
    """Every sample, modifier and observation of a channel has as many values as it has bins,
    and no channel has more than ``max-bins`` bins.

    Raises:
        InputLimit: a channel has more bins than the limit.
        InvalidWorkspace: (or ``error``) a length differs from the channel's bins.
    """
    cap = int(limit("max-bins"))
    bins: dict[Any, int] = {}
    for channel in _dicts(spec.get("channels")):
        name = channel.get("name")
        samples = list(_dicts(channel.get("samples")))
        sizes = [_length(sample.get("data")) for sample in samples]
        n = next((k for k in sizes if k is not None), None)
        if n is None:
            continue
        if n > cap:
            raise too_large(
                where, "max-bins", f"channel {name!r} has {n} bins, more than {{limit}}"
            )
        bins[name] = n
        if len({k for k in sizes if k is not None}) > 1:
            shown = ", ".join(f"{s.get('name')}: {k}" for s, k in zip(samples, sizes, strict=True))
            raise error(f"{where}: channel {name!r}: samples differ in their bins ({shown})")
        for sample in samples:
            label = f"{where}: channel {name!r} has {n} bins but sample {sample.get('name')!r}"
            for mod in _dicts(sample.get("modifiers")):
                data = mod.get("data")
                parts = data.items() if isinstance(data, dict) else [("data", data)]
                for key, values in parts:
                    got = _length(values)
                    if got is not None and got != n and key in ("data", "hi_data", "lo_data"):
                        msg = f"{label} modifier {mod.get('name')!r} {key} has {got} values"
                        raise error(msg)
    for observation in _dicts(spec.get("observations")):
        name, size = observation.get("name"), _length(observation.get("data"))
        if size is not None and size > cap:
            what = f"observations of {name!r} hold {size} values, more than " + "{limit}"
            raise too_large(where, "max-bins", what)
        if size is not None and name in bins and size != bins[name]:
            msg = (
                f"{where}: observations of channel {name!r} hold {size} values but the "
                f"channel has {bins[name]} bins"
            )
            raise error(msg)


def _normfactors(spec: dict[str, Any]) -> Iterator[str]:
    for channel in spec.get("channels", []):
        for sample in channel.get("samples", []):
            for modifier in sample.get("modifiers", []):
                if modifier.get("type") == "normfactor":
                    yield str(modifier.get("name"))


def _check_values(ops: list[dict[str, Any]], where: str) -> None:
    """Yields brought in by a patch: added samples, channels, data arrays, observations."""
    for op in ops:
        value = op.get("value")
        path = str(op.get("path", ""))
        if isinstance(value, dict) and "data" in value and "modifiers" in value:
            check_yields({"channels": [{"name": path, "samples": [value]}]}, where)
        elif isinstance(value, dict) and "samples" in value:
            check_yields({"channels": [value]}, where)
        elif isinstance(value, list) and path.endswith("/data"):
            fake = {"name": path, "data": value, "modifiers": []}
            if "/observations/" in path:
                check_yields({"observations": [{"name": path, "data": value}]}, where)
            else:
                check_yields({"channels": [{"name": path, "samples": [fake]}]}, where)


def _check_model(grid: SignalGrid, poi_name: str, index: int) -> None:
    """Build pyhf's model of one point: catches specs that pass the schema only.

    A model that builds is remembered on disk (:mod:`pyhf_dask.cache`, keyed by the
    patched spec's digest, the POI and pyhf's version): a later scan of the same inputs
    needs no pyhf in this process (importing it takes 0.7 s).
    """
    ops = grid.patches[index] if grid.patches is not None else materialize(grid.chunk(0, 1))[0]
    spec = apply_patch(grid.workspace, ops)
    try:
        key = f"{digest(spec)}|{poi_name}|pyhf {pyhf_version()}"
    except ValueError:  # not JSON (a function's arrays): checked every time
        key = None
    if key is not None and known("model", key):
        return
    import pyhf

    try:
        workspace = pyhf.Workspace(spec, validate=False)
        model = workspace.model(poi_name=poi_name)
        workspace.data(model)
    except pyhf.exceptions.InvalidModel as exc:
        if poi_name in str(exc):
            return  # reported with the list of points below
        msg = f"{grid.source}: patch {grid.names[index]!r}: the model cannot be built: {exc}"
        raise InvalidWorkspace(msg) from exc
    except Exception as exc:
        msg = (
            f"{grid.source}: patch {grid.names[index]!r}: the model cannot be built: "
            f"{type(exc).__name__}: {exc}"
        )
        raise InvalidWorkspace(msg) from exc
    if key is not None:
        keep("model", key)


def validate_grid(grid: SignalGrid, *, poi_name: str) -> None:
    """Raise a clear :class:`~pyhf_dask.exceptions.InputError` for the first bad point.

    Args:
        grid: the signal grid.
        poi_name: the POI of the chosen measurement.
    """
    workspace = grid.workspace
    if grid.patches is not None:
        points = zip(grid.names, grid.patches, strict=True)
    else:
        points = zip(grid.names[:1], materialize(grid.chunk(0, 1)), strict=True)
    missing_poi = []
    checked = 0
    for name, ops in points:
        checked += 1
        where = f"{grid.source}: patch {name!r}"
        try:
            patched = apply_patch(workspace, ops)
        except PatchConflict as exc:
            msg = f"{where}: {exc}"
            raise InvalidPatch(msg) from exc
        try:
            _check_values(ops, where)
        except InvalidWorkspace as exc:
            raise InvalidPatch(str(exc)) from exc
        check_shapes(patched, where, error=InvalidPatch)
        if poi_name not in set(_normfactors(patched)):
            missing_poi.append(name)
    shown = ", ".join(missing_poi[:5]) + (" ..." if len(missing_poi) > 5 else "")
    if missing_poi and len(missing_poi) == checked:
        msg = (
            f"{grid.source}: the POI {poi_name!r} is not a normfactor of the model for "
            f"{'any' if checked > 1 else 'the'} point(s): {shown} (wrong --measurement?)"
        )
        raise InvalidGrid(msg)
    if missing_poi:
        # a published patch can be broken (RegionB sbottom_1500_1495_60 adds no signal):
        # those points fail with the kernel's message, the others are fitted
        log.warning(
            "the POI %r is not a normfactor of the model for %d of %d points (%s): they will "
            "be marked failed",
            poi_name,
            len(missing_poi),
            checked,
            shown,
        )
    first_ok = next(i for i, name in enumerate(grid.names) if name not in set(missing_poi))
    _check_model(grid, poi_name, first_ok)
    log.debug("validated %d points of %s", len(grid), grid.source)
