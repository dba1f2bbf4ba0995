"""Bounded reading of input files: regular files only, size caps, JSON depth, one error each.

Reads are bounded, with limits from Dask's configuration under ``pyhf-dask`` (the CLI sets
``max-bins`` and ``max-file-size`` from its options): every file and archive member is
streamed with a cap (``max-file-size`` MB), only regular files are read (no FIFOs, devices
or links to them), and JSON nesting is capped (``max-json-depth``) before parsing. Each
refusal is an :class:`~pyhf_dask.exceptions.InputLimit` naming the limit and how to raise
it; a file that cannot be read or parsed is an :class:`~pyhf_dask.exceptions.InvalidJSON`
naming the file and the position.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

from pyhf_dask.exceptions import InputError, InputLimit, InvalidJSON

__all__ = [
    "MB",
    "check_input_path",
    "limit",
    "load_json",
    "parse_json",
    "read_capped",
    "read_file",
    "too_large",
]

#: Bytes in the MB of the ``max-*-size`` limits.
MB = 1_000_000
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


def read_capped(stream: Any, where: str) -> bytes:
    """Read a stream to its end, refusing it past ``max-file-size``."""
    cap = int(limit("max-file-size") * MB)
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


def _kind(mode: int) -> str:
    """What a file that is neither regular nor a folder is, in words."""
    return "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"


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
            msg = f"{where}: not a regular file ({_kind(mode)}); only regular files are read"
            raise InvalidJSON(msg)
        if os.fstat(fd).st_size > limit("max-file-size") * MB:
            raise too_large(where, "max-file-size", "larger than {limit}")
        try:
            return read_capped(file, where)
        except OSError as exc:
            msg = f"{where}: cannot be read ({exc.strerror})"
            raise InvalidJSON(msg) from exc


def check_input_path(path: str | os.PathLike[str]) -> None:
    """Refuse, without opening it, an input argument that is neither a folder nor a regular
    file (through links): a FIFO would block, a device (``/dev/zero``) be read forever.

    A missing path is left to the reader, which names it.

    Example:
        >>> try:
        ...     check_input_path("/dev/null")
        ... except InputError as exc:
        ...     print(exc)
        /dev/null: not a regular file (a device or socket); only regular files and folders are read
    """
    where = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"{where}: cannot be read ({exc.strerror})"
        raise InputError(msg) from exc
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return
    msg = f"{where}: not a regular file ({_kind(mode)}); only regular files and folders are read"
    raise InputError(msg)


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
