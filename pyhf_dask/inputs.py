"""Reading likelihood inputs: JSON files, workspaces, patchsets, folders and archives.

Everything here turns bad input into one :mod:`pyhf_dask.exceptions` error whose message
names the file and what is wrong with it. Archives are read in memory, member by member,
after every member has passed the checks of :func:`tarfile.data_filter` (no absolute
paths, no ``..``, no links leaving the archive), so nothing is ever written outside.

Reads are bounded, with limits from Dask's configuration under ``pyhf-dask`` (the CLI sets
``max-bins`` and ``max-file-size`` from its options): every file and archive member is
streamed with a cap (``max-file-size`` MB), an archive's members together are capped
(``max-archive-size`` MB, ``max-archive-members``), only regular files are read (no FIFOs,
devices or links to them), JSON nesting is capped (``max-json-depth``) before parsing, and
channels may hold at most ``max-bins`` bins. Each refusal is an
:class:`~pyhf_dask.exceptions.InputLimit` naming the limit and how to raise it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pyhf_dask.exceptions import (
    InputLimit,
    InvalidArchive,
    InvalidJSON,
    InvalidPatch,
    InvalidWorkspace,
)

__all__ = [
    "FileTree",
    "check_workspace",
    "limit",
    "find_region",
    "load_json",
    "parse_json",
    "patch_name",
    "read_file",
    "too_large",
]

log = logging.getLogger(__name__)


def is_bkg_only(path: PurePosixPath) -> bool:
    """Whether a file name is a background-only workspace (``BkgOnly.json``, ``bkgonly_SR.json``).

    Example:
        >>> is_bkg_only(PurePosixPath("RegionA/BkgOnly.json"))
        True
    """
    name = path.name.lower()
    return name.startswith("bkgonly") and name.endswith(".json")


_PATCH_PREFIX = "patch."
_MB = 1_000_000
_DEFAULTS = {
    "max-file-size": 100.0,
    "max-archive-size": 1000.0,
    "max-archive-members": 100_000,
    "max-json-depth": 64,
    "max-bins": 10_000,
}
_HOW = {"max-file-size": "--max-file-size MB", "max-bins": "--max-bins N"}


def limit(name: str) -> float:
    """A limit on input from Dask's configuration (``pyhf-dask.<name>``).

    Example:
        >>> limit("max-json-depth")
        64.0
    """
    import dask

    value = dask.config.get(f"pyhf-dask.{name}", None)
    return float(_DEFAULTS[name] if value is None else value)


def too_large(where: str, name: str, what: str) -> InputLimit:
    """The error for an input over limit ``name``; ``what`` holds ``{limit}``."""
    value = limit(name)
    shown = f"{value:g} MB" if name.endswith("size") else f"{value:g}"
    how = _HOW.get(name, f"the configuration key pyhf-dask.{name}")
    text = what.replace("{limit}", shown)
    return InputLimit(f"{where}: {text} (raise the limit with {how})")


def _read_capped(stream: Any, where: str) -> bytes:
    """Read a stream to its end, refusing it past ``max-file-size``."""
    cap = int(limit("max-file-size") * _MB)
    chunks: list[bytes] = []
    total = 0
    while True:
        block = stream.read(min(1 << 20, cap + 1 - total))
        if not block:
            return b"".join(chunks)
        chunks.append(block)
        total += len(block)
        if total > cap:
            raise too_large(where, "max-file-size", "larger than {limit}")


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, read with the ``max-file-size`` cap.

    FIFOs, devices and links to them are refused without blocking or reading.
    """
    where = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO does not block the open
    except FileNotFoundError as exc:
        msg = f"{where}: no such file"
        raise InvalidJSON(msg) from exc
    except OSError as exc:
        msg = f"{where}: cannot be read ({exc.strerror})"
        raise InvalidJSON(msg) from exc
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            msg = f"{where}: is a directory, expected a JSON file"
            raise InvalidJSON(msg)
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            msg = f"{where}: not a regular file ({kind}); only regular files are read"
            raise InvalidJSON(msg)
        if os.fstat(fd).st_size > limit("max-file-size") * _MB:
            raise too_large(where, "max-file-size", "larger than {limit}")
        try:
            return _read_capped(file, where)
        except OSError as exc:
            msg = f"{where}: cannot be read ({exc.strerror})"
            raise InvalidJSON(msg) from exc


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _check_depth(data: bytes, where: str) -> None:
    """Refuse JSON nested deeper than ``max-json-depth`` before parsing (no RecursionError)."""
    import numpy as np

    cap = int(limit("max-json-depth"))
    if data.count(b"[") + data.count(b"{") <= cap:
        return
    stripped = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(stripped), 1 << 22):
        block = stripped[start : start + (1 << 22)]
        opens = (block == ord("[")) | (block == ord("{"))
        steps = np.where(opens, 1, 0) - ((block == ord("]")) | (block == ord("}")))
        steps = steps[steps != 0]
        if len(steps):
            levels = depth + np.cumsum(steps)
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > cap:
            raise too_large(where, "max-json-depth", "JSON nested deeper than {limit} levels")


def parse_json(text: str | bytes, where: str) -> Any:
    """Parse JSON text, raising :class:`InvalidJSON` with the file and the position.

    Example:
        >>> parse_json('{"a": 1}', "x.json")
        {'a': 1}
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    _check_depth(data, where)
    try:
        return json.loads(text)
    except RecursionError as exc:  # pragma: no cover - the depth check comes first
        msg = f"{where}: JSON nested too deeply"
        raise InputLimit(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{where}: not UTF-8 text (byte {exc.start})"
        raise InvalidJSON(msg) from exc
    except json.JSONDecodeError as exc:
        if not text.strip():
            msg = f"{where}: the file is empty"
        else:
            msg = f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise InvalidJSON(msg) from exc


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read and parse a JSON file with a clear error for a missing or malformed file."""
    return parse_json(read_file(path), os.fspath(path))


def patch_name(filename: str) -> str:
    """Name of a HEPData jsonpatch file: the file name without ``patch.`` and ``.json``.

    Example:
        >>> patch_name("RegionA/patch.sbottom_1300_205_60.json")
        'sbottom_1300_205_60'
    """
    name = PurePosixPath(filename).name
    name = name.removesuffix(".json")
    return name.removeprefix(_PATCH_PREFIX)


def _bad_number(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _check_numbers(values: Any, where: str, *, allow_negative: bool) -> None:
    if not isinstance(values, list):
        return
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if _bad_number(value):
            msg = f"{where}[{index}] is {value} (NaN or infinite yields are not allowed)"
            raise InvalidWorkspace(msg)
        if value < 0 and not allow_negative:
            msg = f"{where}[{index}] is negative ({value})"
            raise InvalidWorkspace(msg)


def check_yields(spec: Mapping[str, Any], where: str) -> None:
    """Reject NaN, infinite or negative sample yields and observations in a workspace."""
    for channel in spec.get("channels", []):
        for sample in channel.get("samples", []):
            label = f"{where}: channel {channel.get('name')!r} sample {sample.get('name')!r} data"
            _check_numbers(sample.get("data"), label, allow_negative=False)
            for modifier in sample.get("modifiers", []):
                data = modifier.get("data")
                mlabel = (
                    f"{where}: modifier {modifier.get('name')!r} of sample {sample.get('name')!r}"
                )
                if isinstance(data, dict):
                    for key, values in data.items():
                        if isinstance(values, list):
                            _check_numbers(values, f"{mlabel} {key}", allow_negative=True)
                        elif _bad_number(values):
                            msg = f"{mlabel} {key} is {values}"
                            raise InvalidWorkspace(msg)
                else:
                    _check_numbers(data, mlabel, allow_negative=True)
    for observation in spec.get("observations", []):
        label = f"{where}: observations of {observation.get('name')!r} data"
        _check_numbers(observation.get("data"), label, allow_negative=False)


def check_workspace(spec: Any, where: str) -> dict[str, Any]:
    """Validate a background-only workspace against pyhf's schema and its numbers.

    Raises:
        InvalidWorkspace: naming ``where`` and the first problem found.
    """
    import pyhf

    if not isinstance(spec, dict):
        msg = f"{where}: a workspace must be a JSON object, found {type(spec).__name__}"
        raise InvalidWorkspace(msg)
    from pyhf_dask.validate import check_shapes

    check_shapes(spec, where)  # first: the schema check is slow on huge channels
    try:
        pyhf.schema.validate(spec, "workspace.json")
    except pyhf.exceptions.InvalidSpecification as exc:
        reason = str(getattr(exc, "message", None) or exc).splitlines()[0]
        detail = getattr(exc, "path", "")
        at = f" at {detail}" if detail else ""
        msg = f"{where}: not a valid pyhf workspace{at}: {reason}"
        raise InvalidWorkspace(msg) from exc
    observed = {o.get("name") for o in spec.get("observations", [])}
    for channel in spec.get("channels", []):
        if channel.get("name") not in observed:
            names = ", ".join(sorted(map(str, observed))) or "none"
            msg = (
                f"{where}: channel {channel.get('name')!r} has no observations "
                f"(observations are given for: {names})"
            )
            raise InvalidWorkspace(msg)
    check_yields(spec, where)
    return spec


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
                    if json_member and info.size > limit("max-file-size") * _MB:
                        raise too_large(where, "max-file-size", "larger than {limit}")
                    total += info.size if info.isfile() else 0
                    if total > limit("max-archive-size") * _MB:
                        what = "its members hold more than {limit}"
                        raise too_large(os.fspath(path), "max-archive-size", what)
                    if json_member:
                        stream = tar.extractfile(info)
                        if stream is not None:
                            contents[info.name] = _read_capped(stream, where)
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
    patch_files = tuple(p for p in files if p.name.startswith(_PATCH_PREFIX))
    patchsets = [p for p in files if "patchset" in p.name.lower()]
    if patch_files and patchsets:
        msg = f"{tree.where(folder)}: holds both patch files and a patchset; use one"
        raise InvalidArchive(msg)
    if len(patchsets) > 1:
        msg = f"{tree.where(folder)}: holds several patchsets ({', '.join(map(str, patchsets))})"
        raise InvalidArchive(msg)
    if not patch_files and not patchsets:
        msg = f"{tree.where(folder)}: holds no patch.*.json files and no patchset"
        raise InvalidPatch(msg)
    return Region(tree, workspace, patchsets[0] if patchsets else None, patch_files)
