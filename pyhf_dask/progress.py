"""A progress display that counts fitted points, not Dask tasks.

Dask's ``ProgressBar`` counts tasks: a scan's graph holds one fit task per chunk among
many plumbing tasks, so it jumps from 0 to 100 % in a few steps while hours of fits run
inside one chunk. :class:`PointProgress` listens for the fit tasks only
(:data:`pyhf_dask.graph.FIT_PREFIX`) and counts the points of each finished chunk (from its
result), with the rate and the time left, on one line of ``stderr``.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> bar = PointProgress(4, out=out, interval=0.0)
    >>> bar._posttask("pyhf-dask-fit-abc-0", {"status": ["converged"] * 3}, {}, {}, 0)
    >>> "3/4 points" in out.getvalue()
    True
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from dask.callbacks import Callback

from pyhf_dask.graph import FIT_PREFIX

__all__ = ["PointProgress"]


class PointProgress(Callback):
    """Dask callback: points fitted out of ``total``, rate and time left, on ``out``.

    Works with the schedulers that run callbacks in this process (threads, processes,
    synchronous, the :func:`pyhf_dask.executors.wrap` adapters, hence every ``--executor``
    of the command line). ``total`` is the points this run fits.

    Args:
        total: points to fit.
        out: the stream (default ``sys.stderr``).
        interval: least seconds between two redraws.
    """

    def __init__(self, total: int, *, out: IO[str] | None = None, interval: float = 0.5) -> None:
        super().__init__()
        self.total = int(total)
        self.out = out if out is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last = -float("inf")
        self._seen: set[str] = set()

    def _start(self, dsk: Any) -> None:
        self.start = time.perf_counter()

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        if not name.startswith(FIT_PREFIX) or name in self._seen:
            return
        self._seen.add(name)
        if isinstance(result, dict) and "status" in result:
            self.done += len(result["status"])
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self.out.write("\r" + self.line(now - self.start))
            self.out.flush()

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self.done:
            self.out.write("\n")
            self.out.flush()

    def line(self, elapsed: float) -> str:
        """The progress line: bar, points, percentage, rate and the time left.

        Example:
            >>> PointProgress(200, interval=0).line(10.0)
            '[                              ] 0/200 points (0%) 10 s'
        """
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        bar = "#" * int(30 * frac)
        text = f"[{bar:<30}] {self.done}/{self.total} points ({frac:.0%}) {elapsed:.0f} s"
        if self.done and self.done < self.total:
            rate = self.done / max(elapsed, 1e-9)
            text += f", {rate:.3g} points/s, {(self.total - self.done) / rate:.0f} s left"
        return text
