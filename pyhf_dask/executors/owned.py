"""Processes owned by the scan: every process a scan starts dies with it, whatever kills it.

A scan killed by SIGKILL (an out-of-memory kill, a batch system's hard kill) runs no
clean-up of its own, so the processes it started must notice by themselves:

- **spawned Python workers** (the ``local`` pool, the ``process`` endpoint engine) are
  started as :class:`OwnedProcess` (:func:`owned_context`): the child asks Linux for
  SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``; only where the parent thread
  that started it is the main thread, since Linux sends it when that *thread* ends) and
  runs a daemon thread that waits on the parent's pidfd and exits when the parent is gone
  (the orphan check, for children started by other threads).
- **commands** (Parsl's interchange and worker pool) are started through this file as a
  script (:func:`owned_command`): it forks a small watcher, then ``exec``\\ s the command
  (its pid, stdin and signals are those Parsl expects). The watcher waits on the owner's
  pidfd; when the owner ends first, it kills the command with its descendants (and its
  own process group when that is not the owner's: a LocalProvider block) and removes the
  run folder it was given. When the command ends first, the watcher just exits.

Only the standard library is used here: the file runs as a script (``python owned.py``)
in front of each command, without importing pyhf_dask.

Example:
    >>> cmd = owned_command(["interchange.py"], owner=1234, started=1.5)
    >>> cmd[-2:], "--owner" in cmd
    (['--', 'interchange.py'], True)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.context
import os
import select
import shlex
import shutil
import signal
import sys
import threading
import time
from typing import Any

__all__ = [
    "OwnedProcess",
    "owned_command",
    "owned_context",
    "owned_launch_cmd",
    "set_parent_death_signal",
    "watch_parent",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: Seconds between checks of a pid where no pidfd can be had (old kernels).
_POLL = 0.5


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread ends.

    Returns:
        Whether it was set (``False`` off Linux or without ``prctl``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _wait_gone(pid: int) -> None:
    """Block until process ``pid`` has ended (at once when it is already gone)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):  # no pidfd: poll
        while _exists(pid):
            time.sleep(_POLL)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_parent(parent: int | None = None) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit(1)``) when ``parent`` ends.

    Args:
        parent: the pid to watch (default: the current parent). When it already differs
            from the current parent (the parent died before the call), the process exits
            at once.
    """
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        if os.getppid() == parent:
            _wait_gone(parent)
        os._exit(1)  # the owner is gone: nobody will ever read this process's results

    thread = threading.Thread(target=watch, name="pyhf-dask-orphan-check", daemon=True)
    thread.start()
    return thread


class OwnedProcess(multiprocessing.context.SpawnProcess):
    """A spawned process that dies with the process that started it.

    Started from the main thread, the child sets a parent-death SIGKILL (which also ends
    a child hung in native code holding the GIL); in every case it runs the orphan check
    of :func:`watch_parent`.
    """

    def start(self) -> None:
        """Start the process, noting which thread and process start it."""
        self._owner_pid = os.getpid()
        self._owner_main = threading.current_thread() is threading.main_thread()
        super().start()

    def run(self) -> None:
        """Arrange to die with the owner, then run the target."""
        owner = getattr(self, "_owner_pid", None)
        if owner is not None:
            if getattr(self, "_owner_main", False):
                set_parent_death_signal()
            if os.getppid() != owner:  # the owner died before the signal was set
                os._exit(1)
            watch_parent(owner)
        super().run()


class _OwnedContext(multiprocessing.context.SpawnContext):
    Process = OwnedProcess


def owned_context() -> multiprocessing.context.SpawnContext:
    """A ``spawn`` multiprocessing context whose processes are :class:`OwnedProcess`.

    Example:
        >>> owned_context().get_start_method()
        'spawn'
    """
    return _OwnedContext()


def owned_command(
    command: list[str],
    *,
    owner: int | None = None,
    started: float | None = None,
    remove: str | None = None,
) -> list[str]:
    """``command`` started through the watcher of this file, owned by ``owner``.

    Args:
        command: the command and its arguments.
        owner: the pid it dies with (default: this process).
        started: the owner's start time (``psutil``'s ``create_time``), so that a reused
            pid is not taken for the owner (default: looked up when psutil is there).
        remove: a folder the watcher removes after killing the command.
    """
    owner = os.getpid() if owner is None else owner
    if started is None:
        started = _create_time(owner)
    out = [sys.executable, os.path.abspath(__file__), "--owner", str(owner)]
    if started is not None:
        out += ["--started", repr(started)]
    if remove:
        out += ["--remove", remove]
    return [*out, "--", *command]


def owned_launch_cmd(launch_cmd: str, **kwargs: Any) -> str:
    """A shell command line (Parsl's ``launch_cmd``) started through the watcher.

    Parsl formats ``launch_cmd`` with ``str.format``: braces in the prefix are doubled.
    """
    prefix = " ".join(shlex.quote(part) for part in owned_command([], **kwargs))
    return prefix.replace("{", "{{").replace("}", "}}") + " " + launch_cmd


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # no psutil, or gone
        return None


def _is_owner(pid: int, started: float | None) -> bool:
    if not _exists(pid):
        return False
    if started is None:
        return True
    found = _create_time(pid)
    return found is None or abs(found - started) < 1.0


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # no psutil, or gone
        return []


def _kill(pids: list[int]) -> None:
    for pid in pids:
        for sig in (signal.SIGKILL, signal.SIGCONT):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _pidfd(pid: int) -> int | None:
    """A pidfd of ``pid`` (``-1``: already gone; ``None``: no pidfd on this system)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except (OSError, AttributeError):
        return None


def _watch(target: int, owner: int, started: float | None, remove: str | None) -> None:
    """The watcher (a forked child of the command's process, before its exec): exits when
    the command ends; kills it (and its descendants) when the owner ends first."""
    group = os.getpgrp()
    try:
        own_group = group == os.getpgid(owner)
    except OSError:
        own_group = True  # cannot tell: never kill the group
    fds = {pid: _pidfd(pid) for pid in (owner, target)}
    if fds[target] == -1:
        os._exit(0)
    while True:
        if fds[owner] == -1 or not _exists(owner):
            break
        if not _exists(target):
            os._exit(0)
        usable = [fd for fd in fds.values() if fd is not None and fd >= 0]
        if len(usable) == len(fds):
            ready, _, _ = select.select(usable, [], [])
            if fds[owner] in ready:
                break
            os._exit(0)  # the command ended
        time.sleep(_POLL)
        if started is not None and not _is_owner(owner, started):
            break
    descendants = [pid for pid in _descendants(target) if pid != os.getpid()]
    _kill([target, *descendants])
    if remove:
        shutil.rmtree(remove, ignore_errors=True)
    if not own_group:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """``python owned.py --owner PID [--started T] [--remove DIR] -- COMMAND...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    values = dict(zip(options[::2], options[1::2], strict=False))
    owner = int(values["--owner"])
    started = float(values["--started"]) if "--started" in values else None
    remove = values.get("--remove")
    if not _is_owner(owner, started):
        sys.exit(1)  # the scan is gone already: start nothing
    target = os.getpid()
    if os.fork() == 0:  # the watcher
        for fd in (0, 1, 2):  # holds none of the command's pipes open
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _watch(target, owner, started, remove)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
