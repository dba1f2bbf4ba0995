"""The points of a signal grid from published inputs: names, coordinates and patches.

A pyhf ``PatchSet`` carries its labels and each patch's coordinates; HEPData jsonpatch
files (``patch.<name>.json`` or ``patch_<name>.json``, the point named ``<name>`` either
way) carry them in their names (``sbottom_1300_205_60``; a ``p``
is a decimal point, ``100p5`` reads 100.5). Both become :class:`Points`, from which
:class:`~pyhf_dask.grid.SignalGrid` is made; every problem is one
:mod:`pyhf_dask.exceptions` error naming the file.

Example:
    >>> points = patch_file_points(
    ...     [("patch.sig_100_50.json", [{"op": "add", "path": "/x", "value": 1}])],
    ...     ["m1", "m2"], source="BkgOnly.json")
    >>> points.names, points.labels, points.values.tolist()
    (('sig_100_50',), ('m1', 'm2'), [[100.0, 50.0]])
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pyhf_dask.archives import patch_name
from pyhf_dask.exceptions import InvalidGrid, InvalidPatch
from pyhf_dask.reading import load_json
from pyhf_dask.simplemodels import Patch

__all__ = [
    "Points",
    "check_labels",
    "check_patch",
    "load",
    "parse_coordinates",
    "patch_file_points",
    "patchset_points",
    "where",
]

_NUMBER = re.compile(r"^-?\d+(?:[.p]\d+)?$")


class Points(NamedTuple):
    """What a grid's inputs say of its points (the fields of a ``SignalGrid`` but the
    workspace)."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    values: np.ndarray
    patches: tuple[Patch, ...]
    source: str
    metadata: Mapping[str, str]


def parse_coordinates(name: str) -> tuple[float, ...]:
    """Numbers in a patch name, from its ``_``-separated numeric parts.

    A ``p`` stands for a decimal point, as in HEPData names (``100p5`` is 100.5).

    Example:
        >>> parse_coordinates("sbottom_1300_205_60")
        (1300.0, 205.0, 60.0)
        >>> parse_coordinates("C1N2_Wh_hbb_300p5_0")
        (300.5, 0.0)
    """
    return tuple(
        float(token.replace("p", ".")) for token in name.split("_") if _NUMBER.match(token)
    )


def patchset_points(
    spec: dict[str, Any],
    ps_spec: Any,
    ws_where: str,
    ps_where: str,
    labels: Sequence[str] | None,
    *,
    ignore_digest: bool = False,
) -> Points:
    """The points of a pyhf ``PatchSet`` spec, verified against the workspace ``spec``.

    Coordinates come from the patchset's ``labels`` (renamed by ``labels``) and each
    patch's ``values``. ``ignore_digest``: a digest that does not match the workspace is
    a warning instead of an error (:func:`~pyhf_dask.patchsets.verify_digests`).
    """
    from pyhf_dask.patchsets import read_patchset, verify_digests

    patches = read_patchset(ps_spec, ps_where)  # pyhf.PatchSet's checks, fast
    verify_digests(ps_spec, spec, ws_where, ps_where, ignore=ignore_digest)
    meta_labels = tuple(ps_spec["metadata"]["labels"])
    return Points(
        names=tuple(p.name for p in patches),
        labels=check_labels(labels, len(meta_labels), ps_where) if labels else meta_labels,
        values=np.array([p.values for p in patches], dtype=np.float64),
        patches=tuple(list(p.patch) for p in patches),
        source=ps_where,
        metadata={"analysis_id": str(ps_spec["metadata"].get("analysis_id") or "")},
    )


def patch_file_points(
    loaded: list[tuple[str, Any]], labels: Sequence[str] | None, *, source: str
) -> Points:
    """The points of parsed jsonpatch files ``(file, operations)``, sorted by name.

    A point's name is its file name without ``patch.`` or ``patch_`` and ``.json``; both
    forms may be mixed, but two files naming one point are refused. Coordinates are the
    numbers in each name; ``labels`` names them (default ``x0, x1, ...``).
    """
    if not loaded:
        msg = f"{source}: no patch files given"
        raise InvalidGrid(msg)
    names: list[str] = []
    coords: list[tuple[float, ...]] = []
    patches: list[Patch] = []
    files: dict[str, str] = {}
    from pyhf_dask.results import natural_key  # numbers as numbers: _300_ before _1000_

    for file, ops in sorted(loaded, key=lambda item: natural_key(patch_name(item[0]))):
        check_patch(ops, file)
        name = patch_name(file)
        if name in files:  # patch.A.json and patch_A.json in one folder
            msg = f"{file}: names the same point {name!r} as {files[name]}; keep one of them"
            raise InvalidGrid(msg)
        files[name] = file
        values = parse_coordinates(name)
        if not values:
            msg = f"{file}: no grid coordinates can be parsed from the patch name {name!r}"
            raise InvalidGrid(msg)
        if coords and len(values) != len(coords[0]):
            msg = (
                f"{file}: patch name {name!r} has {len(values)} coordinates, "
                f"{names[0]!r} has {len(coords[0])}"
            )
            raise InvalidGrid(msg)
        names.append(name)
        coords.append(values)
        patches.append(ops)
    n_coords = len(coords[0])
    return Points(
        names=tuple(names),
        labels=check_labels(labels, n_coords, source) if labels else _generic(n_coords),
        values=np.array(coords, dtype=np.float64),
        patches=tuple(patches),
        source=source,
        metadata={},
    )


def load(obj: str | os.PathLike[str] | dict[str, Any]) -> Any:
    """A spec given as a dict, or read from a JSON file."""
    return obj if isinstance(obj, dict) else load_json(obj)


def where(obj: str | os.PathLike[str] | dict[str, Any], default: str) -> str:
    """Where a spec comes from, for messages: its path, or ``default`` for a dict."""
    return default if isinstance(obj, dict) else os.fspath(Path(obj))


def _generic(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))


def check_labels(labels: Sequence[str], n: int, where: str) -> tuple[str, ...]:
    """``labels`` as a tuple, if they name ``n`` coordinates, each once.

    Example:
        >>> check_labels([" msb", "mn2 "], 2, "grid")
        ('msb', 'mn2')
    """
    labels = tuple(label.strip() for label in labels)
    if len(labels) != n or not all(labels):
        msg = f"{where}: {len(labels)} labels given ({','.join(labels)}) for {n} coordinates"
        raise InvalidGrid(msg)
    if len(set(labels)) != len(labels):
        msg = f"{where}: duplicate labels ({','.join(labels)})"
        raise InvalidGrid(msg)
    return labels


def check_patch(ops: Any, where: str) -> None:
    """Refuse anything but a jsonpatch: a list of operations with ``op`` and ``path``."""
    if not isinstance(ops, list) or not all(
        isinstance(op, dict) and "op" in op and "path" in op for op in ops
    ):
        msg = f"{where}: not a jsonpatch (a list of operations with 'op' and 'path')"
        raise InvalidPatch(msg)
