"""pyhf_dask's folder on disk, and yes/no verdicts kept in it between runs.

The folder is ``$PYHF_DASK_JAX_CACHE`` (``off``, ``none`` or ``0``: no cache), else
``~/.cache/pyhf_dask/jax``: JAX's persistent compilation cache, the kernel's traced
functions (:mod:`pyhf_dask.kernels.jax_export`) and the verdicts kept here, so that one
variable makes a run cold or warm.

A verdict is kept only when it is a yes (a check passed): a refusal is checked again, so
its message comes from the check itself. The key names everything the verdict depends on.

Example:
    >>> import os, tempfile
    >>> os.environ["PYHF_DASK_JAX_CACHE"] = tempfile.mkdtemp()
    >>> known("model", "spec digest|poi|0.7.6")
    False
    >>> keep("model", "spec digest|poi|0.7.6")
    >>> known("model", "spec digest|poi|0.7.6")
    True
    >>> del os.environ["PYHF_DASK_JAX_CACHE"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["cache_root", "keep", "known", "write_atomic"]

log = logging.getLogger(__name__)

_VERDICTS = "pyhf_dask_checks"


def cache_root() -> Path | None:
    """The cache folder (not created here), ``None`` when the cache is off."""
    where = os.environ.get("PYHF_DASK_JAX_CACHE", "")
    if where.lower() in ("off", "none", "0"):
        return None
    return Path(where) if where else Path.home() / ".cache" / "pyhf_dask" / "jax"


def _path(kind: str, key: str, root: Path | None) -> Path | None:
    root = cache_root() if root is None else root
    if root is None:
        return None
    name = hashlib.sha256(f"{kind}|{key}".encode()).hexdigest()[:40]
    return root / _VERDICTS / f"{kind}-{name}.json"


def known(kind: str, key: str, *, root: Path | None = None) -> bool:
    """Whether a check of ``kind`` passed before for ``key`` (in ``root``, default
    :func:`cache_root`)."""
    path = _path(kind, key, root)
    if path is None:
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("key") == key


def keep(kind: str, key: str, *, root: Path | None = None) -> None:
    """Keep that a check of ``kind`` passed for ``key`` (a read-only or full disk only
    costs the check again next time)."""
    path = _path(kind, key, root)
    if path is not None:
        write_atomic(path, json.dumps({"key": key}).encode())


def write_atomic(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (processes may
    write the same file at once); a failure is only logged."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot keep %s: %s", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
