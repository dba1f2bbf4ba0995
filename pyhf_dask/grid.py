"""Signal grids: a background-only workspace plus one signal hypothesis per grid point.

A :class:`SignalGrid` is built from a pyhf ``PatchSet``, from HEPData jsonpatch files, from a
folder or ``.tar.gz`` archive holding either, or from a Python function over a regular grid.

Example:
    >>> ws = simple_workspace(signal=[12.0, 11.0], bkg=[50.0, 52.0],
    ...                       bkg_uncertainty=[3.0, 7.0], observed=[51.0, 48.0])
    >>> grid = SignalGrid.from_function(ws, scaled_signal, scale=[0.5, 1.0, 2.0])
    >>> len(grid), grid.labels
    (3, ('scale',))
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pyhf_dask.exceptions import InvalidGrid, InvalidPatch
from pyhf_dask.inputs import FileTree, check_workspace, find_region, load_json, patch_name
from pyhf_dask.simplemodels import Patch, scaled_signal, signal_patch, simple_workspace

__all__ = [
    "FunctionPatches",
    "SignalGrid",
    "materialize",
    "parse_coordinates",
    "scaled_signal",
    "signal_patch",
    "simple_workspace",
]

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^-?\d+(?:[.p]\d+)?$")


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


@dataclass(frozen=True)
class FunctionPatches:
    """Picklable recipe for the patches of a chunk of a function-defined grid."""

    signal: Callable[..., Patch]
    labels: tuple[str, ...]
    values: np.ndarray

    def materialize(self) -> list[Patch]:
        """Call the signal function at every point of the chunk."""
        return [
            self.signal(**dict(zip(self.labels, map(float, row), strict=True)))
            for row in self.values
        ]


def materialize(source: Sequence[Patch] | FunctionPatches) -> list[Patch]:
    """Return the list of patches of a chunk, calling the signal function if needed."""
    if isinstance(source, FunctionPatches):
        return source.materialize()
    return list(source)


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class SignalGrid:
    """A background-only workspace and the signal hypotheses to test on it.

    Attributes:
        workspace: the background-only workspace spec.
        names: one name per point (the patch name).
        labels: the names of the grid coordinates, e.g. ``("msb", "mn2", "mn1")``.
        values: coordinates, shape ``(n_points, n_labels)``.
        patches: one jsonpatch (a list of operations) per point, or ``None`` for a
            function-defined grid.
        signal: for a function-defined grid, the function that returns a point's patch
            from its coordinates passed as keyword arguments.
        source: where the grid came from, for provenance.
    """

    workspace: dict[str, Any]
    names: tuple[str, ...]
    labels: tuple[str, ...]
    values: np.ndarray
    patches: tuple[Patch, ...] | None = None
    signal: Callable[..., Patch] | None = None
    source: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64).reshape(len(self.names), -1)
        object.__setattr__(self, "values", values)
        if not self.names:
            msg = f"{self.source or 'grid'}: the signal grid is empty"
            raise InvalidGrid(msg)
        if values.shape[1] != len(self.labels):
            msg = (
                f"{self.source or 'grid'}: {len(self.labels)} labels "
                f"({','.join(self.labels)}) for {values.shape[1]} coordinates per point"
            )
            raise InvalidGrid(msg)
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            msg = f"{self.source or 'grid'}: duplicate point names: {', '.join(dupes[:5])}"
            raise InvalidGrid(msg)
        if values.shape[1]:
            _, index, counts = np.unique(values, axis=0, return_index=True, return_counts=True)
            if (counts > 1).any():
                first = values[index[counts > 1][0]]
                same = [n for n, v in zip(self.names, values, strict=True) if (v == first).all()]
                msg = (
                    f"{self.source or 'grid'}: duplicate grid coordinates "
                    f"{dict(zip(self.labels, first.tolist(), strict=True))} for points "
                    f"{', '.join(same)}"
                )
                raise InvalidGrid(msg)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_patchset(
        cls,
        workspace: str | os.PathLike[str] | dict[str, Any],
        patchset: str | os.PathLike[str] | dict[str, Any],
        *,
        labels: Sequence[str] | None = None,
    ) -> SignalGrid:
        """Grid from a background-only workspace and a pyhf ``PatchSet``.

        Coordinates come from the patchset's ``labels`` and each patch's ``values``.
        """
        ws_where = _where(workspace, "workspace")
        ps_where = _where(patchset, "patchset")
        spec = check_workspace(_load(workspace), ws_where)
        return cls._from_patchset_spec(spec, _load(patchset), ws_where, ps_where, labels)

    @classmethod
    def _from_patchset_spec(
        cls,
        spec: dict[str, Any],
        ps_spec: Any,
        ws_where: str,
        ps_where: str,
        labels: Sequence[str] | None,
    ) -> SignalGrid:
        import pyhf

        try:
            patchset = pyhf.PatchSet(ps_spec)
        except pyhf.exceptions.InvalidSpecification as exc:
            detail = getattr(exc, "path", "")
            reason = str(getattr(exc, "message", None) or exc).splitlines()[0]
            at = f" at {detail}" if detail else ""
            msg = f"{ps_where}: not a valid pyhf patchset{at}: {reason}"
            raise InvalidPatch(msg) from exc
        except pyhf.exceptions.InvalidPatchSet as exc:
            msg = f"{ps_where}: not a valid pyhf patchset: {exc}"
            raise InvalidPatch(msg) from exc
        try:
            patchset.verify(spec)
        except pyhf.exceptions.PatchSetVerificationError as exc:
            msg = f"{ps_where}: patchset digest does not match the workspace {ws_where}"
            raise InvalidPatch(msg) from exc
        names = tuple(p.name for p in patchset.patches)
        values = np.array([p.values for p in patchset.patches], dtype=np.float64)
        meta_labels = tuple(patchset.labels)
        use_labels = _labels(labels, len(meta_labels), ps_where) if labels else meta_labels
        return cls(
            workspace=spec,
            names=names,
            labels=use_labels,
            values=values,
            patches=tuple(list(p.patch) for p in patchset.patches),
            source=ps_where,
            metadata={"analysis_id": str(ps_spec["metadata"].get("analysis_id") or "")},
        )

    @classmethod
    def from_patch_files(
        cls,
        workspace: str | os.PathLike[str] | dict[str, Any],
        files: Iterable[str | os.PathLike[str]],
        *,
        labels: Sequence[str] | None = None,
    ) -> SignalGrid:
        """Grid from a workspace and HEPData jsonpatch files (``patch.<name>.json``).

        Coordinates are the numbers in each name; ``labels`` names them (default
        ``x0, x1, ...``).
        """
        ws_where = _where(workspace, "workspace")
        spec = check_workspace(_load(workspace), ws_where)
        loaded = [(os.fspath(f), load_json(f)) for f in files]
        return cls._from_patches(spec, loaded, labels, source=ws_where)

    @classmethod
    def _from_patches(
        cls,
        spec: dict[str, Any],
        loaded: list[tuple[str, Any]],
        labels: Sequence[str] | None,
        *,
        source: str,
    ) -> SignalGrid:
        if not loaded:
            msg = f"{source}: no patch files given"
            raise InvalidGrid(msg)
        names: list[str] = []
        coords: list[tuple[float, ...]] = []
        patches: list[Patch] = []
        for where, ops in sorted(loaded, key=lambda item: patch_name(item[0])):
            _check_patch(ops, where)
            name = patch_name(where)
            values = parse_coordinates(name)
            if not values:
                msg = f"{where}: no grid coordinates can be parsed from the patch name {name!r}"
                raise InvalidGrid(msg)
            if coords and len(values) != len(coords[0]):
                msg = (
                    f"{where}: patch name {name!r} has {len(values)} coordinates, "
                    f"{names[0]!r} has {len(coords[0])}"
                )
                raise InvalidGrid(msg)
            names.append(name)
            coords.append(values)
            patches.append(ops)
        n_coords = len(coords[0])
        use_labels = _labels(labels, n_coords, source) if labels else _generic(n_coords)
        return cls(
            workspace=spec,
            names=tuple(names),
            labels=use_labels,
            values=np.array(coords, dtype=np.float64),
            patches=tuple(patches),
            source=source,
        )

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        region: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> SignalGrid:
        """Grid from a folder or a ``.tar.gz`` archive holding ``BkgOnly.json`` and patches.

        Args:
            path: folder or archive.
            region: sub-folder to use when there are several (e.g. ``"RegionA"``).
            labels: coordinate names for patch files (patchsets carry their own).
        """
        tree = FileTree.open(path)
        found = find_region(tree, region)
        ws_where = tree.where(found.workspace)
        spec = check_workspace(tree.load(found.workspace), ws_where)
        if found.patchset is not None:
            return cls._from_patchset_spec(
                spec, tree.load(found.patchset), ws_where, tree.where(found.patchset), labels
            )
        loaded = [(tree.where(p), tree.load(p)) for p in found.patch_files]
        return cls._from_patches(spec, loaded, labels, source=ws_where)

    @classmethod
    def from_inputs(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        *,
        region: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> SignalGrid:
        """Grid from command-line style inputs.

        - one folder or archive: :meth:`from_path`;
        - a workspace and a pyhf ``PatchSet``: :meth:`from_patchset`;
        - a workspace and jsonpatch files: :meth:`from_patch_files`.
        """
        if not paths:
            msg = "no input given: a folder, an archive, or a workspace and its patches"
            raise InvalidGrid(msg)
        first = Path(paths[0])
        if len(paths) == 1:
            if first.suffix == ".json" and first.is_file():
                msg = f"{first}: a workspace needs patches (a patchset or patch files) after it"
                raise InvalidGrid(msg)
            return cls.from_path(first, region=region, labels=labels)
        if region is not None:
            msg = "--region only applies to a folder or archive input"
            raise InvalidGrid(msg)
        loaded = [(os.fspath(p), load_json(p)) for p in paths[1:]]
        where, patchset = loaded[0]
        if len(loaded) > 1 or not isinstance(patchset, dict):
            patchset = None  # jsonpatch files
        elif "patches" not in patchset:
            msg = f"{where}: neither a pyhf patchset (no 'patches') nor a jsonpatch"
            raise InvalidPatch(msg)
        spec = check_workspace(load_json(first), os.fspath(first))
        if patchset is not None:
            return cls._from_patchset_spec(spec, patchset, os.fspath(first), where, labels)
        return cls._from_patches(spec, loaded, labels, source=os.fspath(first))

    from_archive = from_path
    from_directory = from_path

    @classmethod
    def from_function(
        cls,
        workspace: dict[str, Any],
        signal: Callable[..., Patch],
        /,
        **axes: Sequence[float],
    ) -> SignalGrid:
        """Regular grid whose signal is made by a function of the grid coordinates.

        Args:
            workspace: the background-only workspace spec.
            signal: ``signal(**coords) -> patch``; it must be importable (a module-level
                function) to run in worker processes.
            **axes: one sequence of values per coordinate; the grid is their product.

        Example:
            >>> ws = simple_workspace([5.0], [50.0], [5.0], [50.0])
            >>> SignalGrid.from_function(ws, scaled_signal, scale=[1, 2]).names
            ('scale_1', 'scale_2')
        """
        if not axes:
            msg = "from_function needs at least one axis, e.g. mass=[100, 200]"
            raise InvalidGrid(msg)
        spec = check_workspace(workspace, "workspace")
        labels = tuple(axes)
        rows = list(itertools.product(*(np.asarray(v, dtype=np.float64) for v in axes.values())))
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(labels))
        names = tuple(
            "_".join(f"{lab}_{v:g}" for lab, v in zip(labels, row, strict=True)) for row in values
        )
        source = f"{getattr(signal, '__module__', '?')}.{getattr(signal, '__qualname__', signal)}"
        grid = cls(spec, names, labels, values, signal=signal, source=source)
        if len(grid):
            _check_patch(materialize(grid.chunk(0, 1))[0], f"{source} at {names[0]}")
        return grid

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"SignalGrid({len(self)} points, labels={self.labels}, source={self.source!r})"

    def select(self, patterns: Iterable[str]) -> SignalGrid:
        """The points whose names match any of the shell-style ``patterns``.

        Example:
            >>> ws = simple_workspace([5.0], [50.0], [5.0], [50.0])
            >>> g = SignalGrid.from_function(ws, scaled_signal, scale=[1, 2, 10])
            >>> g.select(["scale_1*"]).names
            ('scale_1', 'scale_10')
        """
        patterns = list(patterns)
        if not patterns:
            return self
        keep = [
            i
            for i, name in enumerate(self.names)
            if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        ]
        if not keep:
            msg = f"{self.source}: no point matches {', '.join(map(repr, patterns))}"
            raise InvalidGrid(msg)
        return self.take(keep)

    def take(self, indices: Sequence[int]) -> SignalGrid:
        """A grid of the points at ``indices`` (in that order)."""
        idx = list(indices)
        return replace(
            self,
            names=tuple(self.names[i] for i in idx),
            values=self.values[idx],
            patches=None if self.patches is None else tuple(self.patches[i] for i in idx),
        )

    def chunk(self, start: int, stop: int) -> list[Patch] | FunctionPatches:
        """The patches of points ``start:stop`` as plain data (or a function recipe)."""
        if self.patches is not None:
            return list(self.patches[start:stop])
        assert self.signal is not None
        return FunctionPatches(self.signal, self.labels, self.values[start:stop])

    def workspace_digest(self) -> str:
        """sha256 of the background-only workspace, as pyhf's ``PatchSet`` digests it."""
        import pyhf

        return str(pyhf.utils.digest(self.workspace))

    def patches_digest(self) -> str:
        """sha256 over the point names, coordinates and patches (or the signal function)."""
        payload: dict[str, Any] = {
            "names": list(self.names),
            "labels": list(self.labels),
            "values": self.values.tolist(),
        }
        if self.patches is not None:
            payload["patches"] = list(self.patches)
        else:
            payload["signal"] = self.source
        return _digest(payload)


def _load(obj: str | os.PathLike[str] | dict[str, Any]) -> Any:
    return obj if isinstance(obj, dict) else load_json(obj)


def _where(obj: str | os.PathLike[str] | dict[str, Any], default: str) -> str:
    return default if isinstance(obj, dict) else os.fspath(Path(obj))


def _generic(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))


def _labels(labels: Sequence[str], n: int, where: str) -> tuple[str, ...]:
    labels = tuple(label.strip() for label in labels)
    if len(labels) != n or not all(labels):
        msg = f"{where}: {len(labels)} labels given ({','.join(labels)}) for {n} coordinates"
        raise InvalidGrid(msg)
    if len(set(labels)) != len(labels):
        msg = f"{where}: duplicate labels ({','.join(labels)})"
        raise InvalidGrid(msg)
    return labels


def _check_patch(ops: Any, where: str) -> None:
    if not isinstance(ops, list) or not all(
        isinstance(op, dict) and "op" in op and "path" in op for op in ops
    ):
        msg = f"{where}: not a jsonpatch (a list of operations with 'op' and 'path')"
        raise InvalidPatch(msg)
