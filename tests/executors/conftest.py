"""Fixtures of the executor tests: a 20-point seed-model scan and a socket watcher."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import xarray as xr

import pyhf_dask
from pyhf_dask.grid import SignalGrid, scaled_signal, simple_workspace

N_POINTS = 20


@pytest.fixture(scope="session")
def seed_grid() -> SignalGrid:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    return SignalGrid.from_function(ws, scaled_signal, scale=list(np.linspace(0.2, 3.0, N_POINTS)))


@pytest.fixture
def lazy_scan(seed_grid: SignalGrid) -> xr.Dataset:
    return pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3)


@pytest.fixture(scope="session")
def reference(seed_grid: SignalGrid) -> xr.Dataset:
    """The scan computed by the synchronous scheduler."""
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3)
    return ds.compute(scheduler="synchronous")


def assert_same_cls(out: xr.Dataset, ref: xr.Dataset) -> None:
    assert (out.status.values == "converged").all(), out.message.values
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


@pytest.fixture
def listen_watch() -> Iterator[ListenWatcher]:
    pytest.importorskip("psutil")
    with ListenWatcher() as watcher:
        yield watcher


@pytest.fixture(autouse=True)
def _tmp_cwd(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines that write into the working directory (runinfo/, logs) write into tmp."""
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
