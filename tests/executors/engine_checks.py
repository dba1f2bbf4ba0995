"""Checks shared by the executor tests: identical CLs, and the listening sockets of a scan."""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import threading
from collections import Counter
from typing import Any

import numpy as np
import xarray as xr


def converged(status: xr.DataArray) -> np.ndarray:
    """Which points converged, for string status and for flag-coded status."""
    meanings = status.attrs.get("flag_meanings")
    if meanings:
        return np.asarray(status.values == meanings.split().index("converged"))
    return np.asarray(status.values == "converged")


def failed(status: xr.DataArray) -> np.ndarray:
    """Which points failed, for string status and for flag-coded status."""
    meanings = status.attrs.get("flag_meanings")
    if meanings:
        return np.asarray(status.values == meanings.split().index("failed"))
    return np.asarray(status.values == "failed")


def assert_same_cls(out: xr.Dataset, ref: xr.Dataset) -> None:
    assert converged(out.status).all(), out.message.values
    np.testing.assert_array_equal(out.status.values, ref.status.values)
    np.testing.assert_array_equal(out.CLs_obs.values, ref.CLs_obs.values)
    np.testing.assert_array_equal(out.CLs_exp.values, ref.CLs_exp.values)


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", maxsplit=1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def scan_processes(markers: tuple[str, ...] = ()) -> list[psutil.Process]:  # noqa: F821
    """This process, its descendants, and processes whose command line holds a marker
    (detached Parsl blocks), with their descendants."""
    import psutil

    me = psutil.Process()
    found = {me.pid: me}
    for p in me.children(recursive=True):
        found[p.pid] = p
    if markers:
        for p in psutil.process_iter(["cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if any(m in line for m in markers):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
    return list(found.values())


class ListenWatcher:
    """Samples the listening sockets of the scan's processes in a background thread."""

    def __init__(self) -> None:
        self.markers: tuple[str, ...] = ()
        self.seen: set[tuple[int, str, int]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in scan_processes(self.markers):
                try:
                    for c in p.net_connections("inet"):
                        if c.status == psutil.CONN_LISTEN:
                            self.seen.add((p.pid, c.laddr.ip, c.laddr.port))
                except psutil.Error:
                    continue
            self.samples += 1
            self._stop.wait(0.2)

    def __enter__(self) -> ListenWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def assert_loopback_only(self) -> None:
        assert self.samples > 0
        wide = [s for s in self.seen if not _is_loopback(s[1])]
        assert not wide, f"sockets listening beyond loopback: {wide}"


class CountingExecutor(cf.Executor):
    """Threads (or ``inner``) that count submissions and the calls inside them.

    A batch (:func:`pyhf_dask.tasks.run_batch`) holds several calls.

    ``calls`` maps the name of each function run to how often it was submitted;
    ``points`` sums the points of the fit submissions (patches, the third argument).
    """

    def __init__(self, workers: int = 2, inner: cf.Executor | None = None) -> None:
        self.pool = inner or cf.ThreadPoolExecutor(workers)
        self.lock = threading.Lock()
        self.submitted = 0
        self.calls: Counter[str] = Counter()
        self.points = 0
        self.outstanding = 0
        self.most_outstanding = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        from pyhf_dask.tasks import run_batch

        with self.lock:
            self.submitted += 1
            inner = args[0] if fn is run_batch else [(fn, args, kwargs)]
            for func, a, _ in inner:
                name = getattr(func, "__name__", type(func).__name__)
                self.calls[name] += 1
                if name == "fit_chunk":
                    self.points += len(getattr(a[2], "values", a[2]))
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
        fut = self.pool.submit(fn, *args, **kwargs)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _: cf.Future[Any]) -> None:
        with self.lock:
            self.outstanding -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)
