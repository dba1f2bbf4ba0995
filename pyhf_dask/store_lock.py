"""The lock of a result store: one writer per store.

A scan holds the lock ``.pyhf_dask.lock`` in its store for as long as it runs: a folder made
atomically (``mkdir``), written as an empty Zarr group whose attributes name the owner (pid,
host, start, command), so Zarr readers ignore it. See :mod:`pyhf_dask.store`.

Example:
    >>> import tempfile
    >>> with lock_store(Path(tempfile.mkdtemp()) / "results.zarr") as path:
    ...     (path / LOCK_NAME).is_dir()
    True
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyhf_dask.exceptions import OutputError, StoreLocked

__all__ = ["LOCK_NAME", "lock_store", "only_lock"]

log = logging.getLogger(__name__)

#: The lock a scan holds inside its store (an empty Zarr group naming the owner).
LOCK_NAME = ".pyhf_dask.lock"
#: Seconds after which a lock that names no owner is stale.
_UNNAMED_STALE = 30.0


def _owner_text(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}{when}"


def _owner_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the lock's owner still runs (``None``: another host, cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        pid = int(owner["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ImportError, Exception):  # a reused pid started after the lock
        import psutil

        if psutil.Process(pid).create_time() > float(owner.get("started", 0)) + 1:
            return False
    return True


@contextlib.contextmanager
def lock_store(path: str | os.PathLike[str], *, break_lock: bool = False) -> Iterator[Path]:
    """Hold the store's lock file for the duration of the ``with`` block.

    Args:
        path: the store folder (created when missing).
        break_lock: take over a lock held by a scan on another host (which cannot be
            checked from here). A lock whose owner no longer runs on this host is taken
            over without it, with a warning; one whose owner runs on this host never is.

    Raises:
        StoreLocked: another scan on this host holds the lock, or one on another host
            does and ``break_lock`` is not given.
    """
    path = Path(path)
    created = not path.exists()
    lock = path / LOCK_NAME
    try:
        path.mkdir(parents=True, exist_ok=True)
        _take(lock, path, break_lock)
    except OSError as exc:
        msg = f"{path}: cannot write the store here ({exc.strerror or exc})"
        raise OutputError(msg) from exc
    try:
        yield path
    finally:
        if _read_owner(lock).get("pid") == os.getpid():
            shutil.rmtree(lock, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when the scan stopped before the store was made


def _read_owner(lock: Path) -> dict[str, Any]:
    try:
        owner = json.loads((lock / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _take(lock: Path, path: Path, break_lock: bool) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    me["command"] = " ".join(sys.argv)[:500]
    for _ in range(5):
        try:
            lock.mkdir()  # atomic: exactly one scan succeeds
        except FileExistsError:
            owner = _read_owner(lock)
            alive = _owner_alive(owner) if owner else _being_taken(lock)
            if alive is False:  # a dead owner on this host: safe to take over
                log.warning(
                    "%s: taking over the lock of %s, which no longer runs (a scan that "
                    "crashed or was killed)",
                    path,
                    _owner_text(owner),
                )
                _remove_stale(lock, owner)
                continue
            if break_lock and alive is None:
                log.warning("%s: breaking the lock of %s", path, _owner_text(owner))
                _remove_stale(lock, owner)
                continue
            if alive is None:
                msg = (
                    f"{path} is locked by {_owner_text(owner)} (cannot check another host): "
                    "rerun with --break-lock if that scan no longer runs"
                )
            else:
                msg = (
                    f"{path} is in use by another scan ({_owner_text(owner)}): wait for it "
                    "to finish or choose another output"
                )
                if break_lock:
                    msg += " (--break-lock takes over only a lock whose owner no longer runs)"
            raise StoreLocked(msg) from None
        meta = {"zarr_format": 3, "node_type": "group", "attributes": me}
        (lock / "zarr.json").write_text(json.dumps(meta))
        return
    msg = f"{path}: could not take the lock"  # pragma: no cover - lost a race 5 times
    raise StoreLocked(msg)


def _being_taken(lock: Path) -> bool:
    """A lock without an owner: being taken now, or left by a scan killed between making
    it and naming itself (then older than a few seconds: stale)."""
    try:
        return time.time() - lock.stat().st_mtime < _UNNAMED_STALE
    except OSError:
        return True


def _remove_stale(lock: Path, owner: dict[str, Any]) -> None:
    """Remove the lock ``lock`` of ``owner``, never a newer one that another scan took
    meanwhile: the lock is renamed away (atomic) and checked to be ``owner``'s."""
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        lock.rename(aside)
    except FileNotFoundError:  # another scan removed it first
        return
    moved = _read_owner(aside)
    if moved and moved != owner:  # a live scan's lock, taken after ours was read: put it back
        with contextlib.suppress(OSError):
            aside.rename(lock)
            return
    shutil.rmtree(aside, ignore_errors=True)


def only_lock(path: Path) -> bool:
    """Whether the folder ``path`` holds nothing but a lock."""
    return {p.name for p in path.iterdir()} <= {LOCK_NAME}
