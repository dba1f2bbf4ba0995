"""Signal grids: a background-only workspace plus one signal hypothesis per grid point.

A :class:`SignalGrid` is built from a pyhf ``PatchSet``, from HEPData jsonpatch files, from a
folder or ``.tar.gz`` archive holding either (the points are read by :mod:`pyhf_dask.points`;
an archive may be given by URL or DOI: :mod:`pyhf_dask.download`), from one workspace that
holds its signal already (a one-point grid), or from a Python function over a regular grid,
whose patches (or signal yields) are made where a chunk is fitted (:class:`FunctionPatches`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pyhf_dask.archives import FileTree, find_region
from pyhf_dask.exceptions import InvalidGrid, InvalidOption, InvalidPatch
from pyhf_dask.inputs import check_workspace, load_json
from pyhf_dask.points import (
    Points,
    check_labels,
    check_patch,
    load,
    parse_coordinates,
    patch_file_points,
    patchset_points,
    where,
)
from pyhf_dask.signals import (
    SignalArrays,
    SignalTarget,
    point_name,
    refuse_yields,
    signal_target,
)
from pyhf_dask.simplemodels import (
    Patch,
    scaled_signal,
    scaled_yields,
    signal_patch,
    simple_workspace,
)

__all__ = [
    "FunctionPatches",
    "SignalArrays",
    "SignalGrid",
    "materialize",
    "parse_coordinates",
    "scaled_signal",
    "scaled_yields",
    "signal_patch",
    "simple_workspace",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FunctionPatches:
    """Picklable recipe for the patches of a chunk of a function-defined grid (with a
    ``target``, for its yields: :class:`~pyhf_dask.signals.SignalArrays`)."""

    signal: Callable[..., Any]
    labels: tuple[str, ...]
    values: np.ndarray
    target: SignalTarget | None = None

    def materialize(self) -> list[Patch] | SignalArrays:
        """Call the signal function at every point of the chunk (or once, vectorized)."""
        if self.target is not None:
            return self.target.call(self.signal, self.labels, self.values)
        return [
            self.signal(**dict(zip(self.labels, map(float, row), strict=True)))
            for row in self.values
        ]


def materialize(source: Sequence[Patch] | FunctionPatches) -> Sequence[Patch]:
    """The patches of a chunk, calling the signal function if needed (for a function that
    returns yields, a :class:`~pyhf_dask.signals.SignalArrays`: patches on demand)."""
    if isinstance(source, FunctionPatches):
        return source.materialize()
    return source if isinstance(source, SignalArrays) else list(source)


def _is_json_file(path: str | os.PathLike[str]) -> bool:
    """A regular file (or a FIFO, a device: refused when read) named ``*.json``."""
    path = Path(path)
    return path.suffix.lower() == ".json" and path.exists() and not path.is_dir()


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
            (or yields) from its coordinates passed as keyword arguments.
        source: where the grid came from, for provenance.
        target: for a function that returns yields, the sample (and channels) they
            replace (:func:`~pyhf_dask.signals.signal_target`).
    """

    workspace: dict[str, Any]
    names: tuple[str, ...]
    labels: tuple[str, ...]
    values: np.ndarray
    patches: tuple[Patch, ...] | None = None
    signal: Callable[..., Any] | None = None
    source: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    target: SignalTarget | None = None

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
        ignore_digest: bool = False,
    ) -> SignalGrid:
        """Grid from a background-only workspace and a pyhf ``PatchSet``.

        Coordinates come from the patchset's ``labels`` and each patch's ``values``.
        ``ignore_digest=True`` uses a patchset whose digests do not match the workspace
        (e.g. one made for a simplified likelihood), with a warning naming the mismatch;
        by default it is refused.
        """
        ws_where = where(workspace, "workspace")
        spec = check_workspace(load(workspace), ws_where)
        points = patchset_points(
            spec,
            load(patchset),
            ws_where,
            where(patchset, "patchset"),
            labels,
            ignore_digest=ignore_digest,
        )
        return cls._from_points(spec, points)

    @classmethod
    def from_workspace(
        cls,
        workspace: str | os.PathLike[str] | dict[str, Any],
        *,
        name: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> SignalGrid:
        """One-point grid: a workspace that holds its signal already (as ``pyhf cls ws.json``).

        The point is named ``name``, by default the file's stem (``"workspace"`` for a
        dict), and its patch is empty. With ``labels``, the numbers in the name are its
        coordinates (as for patch files); without, the grid has no coordinates.

        Example:
            >>> ws = simple_workspace([5.0], [50.0], [5.0], [52.0])
            >>> grid = SignalGrid.from_workspace(ws, name="model_300_100", labels=["m1", "m2"])
            >>> grid.names, grid.values.tolist(), grid.patches
            (('model_300_100',), [[300.0, 100.0]], ([],))
        """
        ws_where = where(workspace, "workspace")
        spec = check_workspace(load(workspace), ws_where)
        if name is None:
            name = "workspace" if isinstance(workspace, dict) else Path(ws_where).stem
        values: tuple[float, ...] = ()
        names: tuple[str, ...] = ()
        if labels:
            values = parse_coordinates(name)
            names = check_labels(labels, len(values), f"{ws_where} (point {name!r})")
        return cls(
            workspace=spec,
            names=(name,),
            labels=names,
            values=np.array([values], dtype=np.float64),
            patches=([],),
            source=ws_where,
        )

    @classmethod
    def _from_points(cls, spec: dict[str, Any], points: Points) -> SignalGrid:
        return cls(workspace=spec, **points._asdict())

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
        ws_where = where(workspace, "workspace")
        spec = check_workspace(load(workspace), ws_where)
        loaded = [(os.fspath(f), load_json(f)) for f in files]
        return cls._from_points(spec, patch_file_points(loaded, labels, source=ws_where))

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        region: str | None = None,
        labels: Sequence[str] | None = None,
        ignore_digest: bool = False,
    ) -> SignalGrid:
        """Grid from a folder or a ``.tar.gz`` archive holding ``BkgOnly.json`` and patches.

        Patch files may be named ``patch.<name>.json`` or ``patch_<name>.json`` (the point
        is ``<name>``). A URL or a DOI (``https://doi.org/10.17182/...``) is downloaded
        first, into the download cache (:func:`pyhf_dask.download.fetch`), and read as a
        local archive. A single ``.json`` file is a workspace with its signal in it: a
        one-point grid (:meth:`from_workspace`).

        Args:
            path: folder, archive, URL or DOI of an archive, or a workspace file.
            region: sub-folder to use when there are several (e.g. ``"RegionA"``).
            labels: coordinate names for patch files (patchsets carry their own).
            ignore_digest: use a patchset whose digests do not match the workspace, with a
                warning (see :meth:`from_patchset`).
        """
        from pyhf_dask.download import fetch, is_remote

        if is_remote(path):
            url = os.fspath(path)
            local = fetch(url)
            grid = cls.from_path(local, region=region, labels=labels, ignore_digest=ignore_digest)
            return replace(grid, source=grid.source.replace(os.fspath(local), url, 1))
        if _is_json_file(path):
            if region is not None:
                msg = f"{os.fspath(path)}: --region only applies to a folder or archive input"
                raise InvalidGrid(msg)
            return cls.from_workspace(path, labels=labels)
        tree = FileTree.open(path)
        found = find_region(tree, region)
        ws_where = tree.where(found.workspace)
        spec = check_workspace(tree.load(found.workspace), ws_where)
        if found.patchset is not None:
            ps_where = tree.where(found.patchset)
            points = patchset_points(
                spec,
                tree.load(found.patchset),
                ws_where,
                ps_where,
                labels,
                ignore_digest=ignore_digest,
            )
            return cls._from_points(spec, points)
        loaded = [(tree.where(p), tree.load(p)) for p in found.patch_files]
        return cls._from_points(spec, patch_file_points(loaded, labels, source=ws_where))

    @classmethod
    def from_inputs(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        *,
        region: str | None = None,
        labels: Sequence[str] | None = None,
        ignore_digest: bool = False,
    ) -> SignalGrid:
        """Grid from command-line style inputs.

        - one folder or archive (or its URL or DOI): :meth:`from_path`;
        - one workspace with its signal in it: a one-point grid (:meth:`from_workspace`);
        - a workspace and a pyhf ``PatchSet``: :meth:`from_patchset`;
        - a workspace and jsonpatch files: :meth:`from_patch_files`.

        ``ignore_digest``: see :meth:`from_patchset`.
        """
        from pyhf_dask.download import fetch, is_remote

        if not paths:
            msg = "no input given: a folder, an archive, or a workspace and its patches"
            raise InvalidGrid(msg)
        if len(paths) == 1:
            return cls.from_path(
                paths[0], region=region, labels=labels, ignore_digest=ignore_digest
            )
        paths = [fetch(os.fspath(p)) if is_remote(p) else p for p in paths]
        first = Path(paths[0])
        if region is not None:
            msg = "--region only applies to a folder or archive input"
            raise InvalidGrid(msg)
        loaded = [(os.fspath(p), load_json(p)) for p in paths[1:]]
        ps_where, patchset = loaded[0]
        if len(loaded) > 1 or not isinstance(patchset, dict):
            patchset = None  # jsonpatch files
        elif "patches" not in patchset:
            msg = f"{ps_where}: neither a pyhf patchset (no 'patches') nor a jsonpatch"
            raise InvalidPatch(msg)
        ws_where = os.fspath(first)
        spec = check_workspace(load_json(first), ws_where)
        if patchset is not None:
            points = patchset_points(
                spec, patchset, ws_where, ps_where, labels, ignore_digest=ignore_digest
            )
        else:
            points = patch_file_points(loaded, labels, source=ws_where)
        return cls._from_points(spec, points)

    from_archive = from_path
    from_directory = from_path

    @classmethod
    def from_function(
        cls,
        workspace: dict[str, Any],
        signal: Callable[..., Any],
        /,
        *,
        sample: str | None = None,
        channel: str | Sequence[str] | None = None,
        vectorized: bool = False,
        **axes: Sequence[float],
    ) -> SignalGrid:
        """Regular grid whose signal is made by a function of the grid coordinates.

        Args:
            workspace: the background-only workspace spec.
            signal: ``signal(**coords) -> patch``, or with ``sample`` the yields of that
                sample (``(n_bins,)``, or a dict channel -> yields); it must be importable
                (a module-level function) to run in worker processes.
            sample: the sample whose data the function's yields replace.
            channel: the channel(s) of ``sample`` (default: every channel that has it).
            vectorized: call ``signal`` once per chunk with coordinate arrays
                ``(n_points,)``; it returns ``(n_points, n_bins)`` (or a dict of them).
            **axes: one sequence of values per coordinate; the grid is their product.

        Raises:
            InvalidOption: ``sample``/``channel`` not in the workspace, or given wrongly.
            InvalidPatch: the function's first return value (every one, vectorized) is
                not a patch, or not yields of the right shape, finite and non-negative.

        Example:
            >>> ws = simple_workspace([5.0], [50.0], [5.0], [50.0])
            >>> SignalGrid.from_function(ws, scaled_signal, scale=[1, 2]).names
            ('scale_1', 'scale_2')
            >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
            >>> grid = SignalGrid.from_function(ws, scaled_yields, sample="signal",
            ...                                 vectorized=True, scale=[1, 2])
            >>> materialize(grid.chunk(0, 2))[1]
            [{'op': 'replace', 'path': '/channels/0/samples/0/data', 'value': [24.0, 22.0]}]
        """
        if not axes:
            msg = "from_function needs at least one axis, e.g. mass=[100, 200]"
            raise InvalidGrid(msg)
        spec = check_workspace(workspace, "workspace")
        labels = tuple(axes)
        ticks = [np.asarray(v, dtype=np.float64).ravel() for v in axes.values()]
        values = np.stack(np.meshgrid(*ticks, indexing="ij"), axis=-1).reshape(-1, len(labels))
        words = [[point_name((k,), (v,)) for v in t] for k, t in zip(labels, ticks, strict=True)]
        names = tuple(map("_".join, itertools.product(*words)))  # point_name(labels, row)
        source = f"{getattr(signal, '__module__', '?')}.{getattr(signal, '__qualname__', signal)}"
        target = None
        if sample is not None:
            target = signal_target(spec, sample, channel, vectorized=vectorized, where=source)
        elif channel is not None or vectorized:
            msg = f"{source}: channel= and vectorized= need sample=, the sample of the yields"
            raise InvalidOption(msg)
        grid = cls(spec, names, labels, values, signal=signal, source=source, target=target)
        if target is not None:
            target.check(signal, labels, values)
        else:
            first = materialize(grid.chunk(0, 1))[0]
            refuse_yields(first, f"{source} at {names[0]}")
            check_patch(first, f"{source} at {names[0]}")
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
        return FunctionPatches(self.signal, self.labels, self.values[start:stop], self.target)

    def workspace_digest(self) -> str:
        """sha256 of the background-only workspace, as pyhf's ``PatchSet`` digests it."""
        from pyhf_dask.schema import digest

        return digest(self.workspace)

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
        if self.target is not None:
            payload["target"] = self.target.describe()
        return _digest(payload)
