"""Checks shared by the executor tests: identical CLs, and the listening sockets of a scan."""

from __future__ import annotations

import ipaddress
import threading

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
