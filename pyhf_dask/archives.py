"""Folders and ``.tar.gz`` archives of published likelihoods: their JSON files and regions.

A :class:`FileTree` indexes the JSON files of a folder or an archive. Archives are read in
memory, member by member, after every member has passed the checks of
:func:`tarfile.data_filter` (no absolute paths, no ``..``, no links leaving the archive), so
nothing is ever written outside; an archive's members together are capped
(``max-archive-size`` MB, ``max-archive-members``) and each member by ``max-file-size``
(:mod:`pyhf_dask.reading`). :func:`find_region` picks the folder holding a background-only
workspace and its patches (a patchset or HEPData patch files, named ``patch.<name>.json``
or ``patch_<name>.json``: both forms are published).
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pyhf_dask.exceptions import InvalidArchive, InvalidPatch
from pyhf_dask.reading import (
    MB,
    check_input_path,
    limit,
    parse_json,
    read_capped,
    read_file,
    too_large,
)

__all__ = [
    "PATCH_PREFIXES",
    "FileTree",
    "Region",
    "find_region",
    "is_bkg_only",
    "is_patch_file",
    "patch_name",
    "zlib_errors",
]

#: The prefixes of HEPData jsonpatch file names: ``patch.<name>.json`` (the sbottom
#: record, ins1748602) and ``patch_<name>.json`` (the 1Lbb record, ins1755298).
PATCH_PREFIXES = ("patch.", "patch_")


def is_bkg_only(path: PurePosixPath) -> bool:
    """Whether a file name is a background-only workspace (``BkgOnly.json``, ``bkgonly_SR.json``).

    Patch files (``patch.*``, ``patch_*``) and patchsets are not, whatever else they say.

    Example:
        >>> is_bkg_only(PurePosixPath("RegionA/BkgOnly.json"))
        True
        >>> is_bkg_only(PurePosixPath("1Lbb/patch_BkgOnly_1000_0.json"))
        False
    """
    name = path.name.lower()
    return (
        name.startswith("bkgonly")
        and name.endswith(".json")
        and not is_patch_file(path)
        and "patchset" not in name
    )


def is_patch_file(path: PurePosixPath) -> bool:
    """Whether a file name is a HEPData jsonpatch file: ``patch.<name>.json`` or
    ``patch_<name>.json`` (a name holding ``patchset`` is a patchset, not a patch).

    Example:
        >>> [is_patch_file(PurePosixPath(n)) for n in
        ...  ("patch.sbottom_1_2_3.json", "patch_C1N2_Wh_hbb_1000_0.json", "patchset.json")]
        [True, True, False]
    """
    name = path.name
    return (
        name.startswith(PATCH_PREFIXES)
        and name.endswith(".json")
        and len(name) > len("patch..json")
        and "patchset" not in name.lower()
    )


def patch_name(filename: str) -> str:
    """Name of a HEPData jsonpatch file: the file name without ``patch.`` (or ``patch_``)
    and ``.json``.

    Example:
        >>> patch_name("RegionA/patch.sbottom_1300_205_60.json")
        'sbottom_1300_205_60'
        >>> patch_name("1Lbb/patch_C1N2_Wh_hbb_1000_0.json")
        'C1N2_Wh_hbb_1000_0'
    """
    name = PurePosixPath(filename).name
    name = name.removesuffix(".json")
    for prefix in PATCH_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return name


def zlib_errors() -> type[Exception]:
    """The error type of a corrupt gzip stream."""
    import zlib

    return zlib.error


def _check_member(path: Path, info: tarfile.TarInfo) -> None:
    """Refuse absolute paths, ``..``, links leaving the archive, devices and FIFOs."""
    parts = PurePosixPath(info.name).parts
    if info.name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", info.name):
        msg = f"{path}: unsafe archive member {info.name!r}: absolute path or '..'"
        raise InvalidArchive(msg)
    try:
        tarfile.data_filter(info, os.path.realpath("/nonexistent-extraction-root"))
    except tarfile.FilterError as exc:
        msg = f"{path}: unsafe archive member {info.name!r}: {exc}"
        raise InvalidArchive(msg) from exc


@dataclass(frozen=True)
class _Member:
    path: PurePosixPath
    read: Callable[[], bytes]


class FileTree:
    """The JSON files of a folder or a ``.tar.gz`` archive, addressed by relative path."""

    def __init__(self, source: str, members: list[_Member]) -> None:
        self.source = source
        self._members = {m.path: m for m in members}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FileTree:
        """Index a folder or a tar archive (``.tar``, ``.tar.gz``, ``.tgz``)."""
        path = Path(path)
        if path.is_dir():
            return cls._from_directory(path)
        if not path.exists():
            msg = f"{path}: no such file or folder"
            raise InvalidArchive(msg)
        return cls._from_tar(path)

    @classmethod
    def _from_directory(cls, root: Path) -> FileTree:
        members = []
        for file in sorted(root.rglob("*.json")):
            rel = PurePosixPath(file.relative_to(root).as_posix())
            members.append(_Member(rel, functools.partial(read_file, file)))
        return cls(os.fspath(root), members)

    @classmethod
    def _from_tar(cls, path: Path) -> FileTree:
        check_input_path(path)  # /dev/zero or a FIFO: refused before tarfile reads it
        try:
            tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed by the with below)
        except (tarfile.TarError, OSError) as exc:
            first = str(exc).splitlines()[0].rstrip(":")
            msg = f"{path}: not a readable tar archive ({first})"
            raise InvalidArchive(msg) from exc
        contents: dict[str, bytes] = {}
        total = count = 0
        with tar:
            # member by member as the stream goes: a huge member is refused at its header
            try:
                for info in tar:
                    count += 1
                    if count > limit("max-archive-members"):
                        raise too_large(
                            os.fspath(path), "max-archive-members", "more than {limit} members"
                        )
                    _check_member(path, info)
                    json_member = info.isfile() and info.name.endswith(".json")
                    where = f"{path}:{info.name}"
                    if json_member and info.size > limit("max-file-size") * MB:
                        raise too_large(where, "max-file-size", "larger than {limit}")
                    total += info.size if info.isfile() else 0
                    if total > limit("max-archive-size") * MB:
                        what = "its members hold more than {limit}"
                        raise too_large(os.fspath(path), "max-archive-size", what)
                    if json_member:
                        stream = tar.extractfile(info)
                        if stream is not None:
                            contents[info.name] = read_capped(stream, where)
            except (tarfile.TarError, EOFError, OSError, zlib_errors()) as exc:
                msg = f"{path}: not a readable tar archive ({type(exc).__name__}: {exc})"
                raise InvalidArchive(msg) from exc
        members = [
            _Member(PurePosixPath(name), functools.partial(bytes, data))
            for name, data in sorted(contents.items())
        ]
        return cls(os.fspath(path), members)

    def __iter__(self) -> Iterator[PurePosixPath]:
        return iter(self._members)

    def where(self, path: PurePosixPath) -> str:
        """Human-readable location of a member, e.g. ``archive.tar.gz:RegionA/BkgOnly.json``."""
        return (
            f"{self.source}:{path}"
            if not Path(self.source).is_dir()
            else os.fspath(Path(self.source) / path)
        )

    def load(self, path: PurePosixPath) -> Any:
        """Parse one member as JSON."""
        return parse_json(self._members[path].read(), self.where(path))

    def folders(self) -> list[PurePosixPath]:
        """Folders (relative) that hold a background-only workspace."""
        return sorted({p.parent for p in self if is_bkg_only(p)})


@dataclass(frozen=True)
class Region:
    """What one folder of a tree holds: the workspace and either a patchset or patch files."""

    tree: FileTree
    workspace: PurePosixPath
    patchset: PurePosixPath | None
    patch_files: tuple[PurePosixPath, ...]


def find_region(tree: FileTree, region: str | None) -> Region:
    """Locate the background-only workspace and its patches in a tree.

    Args:
        tree: the indexed folder or archive.
        region: sub-folder name (or relative path) to use when the tree holds several.
    """
    folders = tree.folders()
    if not folders:
        msg = f"{tree.source}: holds no BkgOnly.json background-only workspace"
        raise InvalidArchive(msg)
    if region is not None:
        wanted = PurePosixPath(region.strip("/"))
        chosen = [
            f
            for f in folders
            if f == wanted or (f.name == wanted.name and (len(wanted.parts) == 1))
        ]
        if not chosen:
            names = ", ".join(str(f) or "." for f in folders)
            msg = f"{tree.source}: no region {region!r} (regions: {names})"
            raise InvalidArchive(msg)
        if len(chosen) > 1:
            names = ", ".join(str(f) for f in chosen)
            msg = f"{tree.source}: region {region!r} is ambiguous ({names})"
            raise InvalidArchive(msg)
        folder = chosen[0]
    elif len(folders) == 1:
        folder = folders[0]
    else:
        names = ", ".join(str(f) for f in folders)
        msg = f"{tree.source}: holds several regions, choose one with --region ({names})"
        raise InvalidArchive(msg)
    files = [p for p in tree if p.parent == folder]
    workspaces = [p for p in files if is_bkg_only(p)]
    if len(workspaces) > 1:
        names = ", ".join(p.name for p in workspaces)
        msg = f"{tree.where(folder)}: holds several background-only workspaces ({names})"
        raise InvalidArchive(msg)
    workspace = workspaces[0]
    patch_files = tuple(p for p in files if is_patch_file(p))
    patchsets = [p for p in files if "patchset" in p.name.lower()]
    if patch_files and patchsets:
        msg = f"{tree.where(folder)}: holds both patch files and a patchset; use one"
        raise InvalidArchive(msg)
    if len(patchsets) > 1:
        msg = f"{tree.where(folder)}: holds several patchsets ({', '.join(map(str, patchsets))})"
        raise InvalidArchive(msg)
    if not patch_files and not patchsets:
        msg = f"{tree.where(folder)}: holds no patch.*.json files and no patchset"
        msg += " (nor patch_*.json files)"
        raise InvalidPatch(msg)
    return Region(tree, workspace, patchsets[0] if patchsets else None, patch_files)
