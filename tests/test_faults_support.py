"""Helpers of the fault tests (tests/test_faults_*.py): real CLI processes, real faults.

Every fault test runs ``python -m pyhf_dask scan`` as a subprocess in its own session on
the seed model (``--kernel pyhf``, 4 points per chunk), injects a fault with ``os.kill``
or the file system, and checks the exit status, the one-line message, the store against
a clean in-process run of the same inputs, and that no process of the scan is left.
The inputs and the clean run are the fixtures ``fault_inputs`` and ``fault_clean`` of
``tests/conftest.py`` (one of each per test module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pyhf_dask.grid import scaled_signal, simple_workspace

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
#: Options of every fault scan: the reference kernel, small chunks, two local workers.
FAST = ["--kernel", "pyhf", "--chunk-size", "4"]
#: Points of a fault scan (16 chunks of ``FAST``): the ``fault_inputs`` fixture's grid.
N = 64


def seed_inputs(folder: Path, n_points: int) -> list[str]:
    """``BkgOnly.json`` and ``n_points`` jsonpatch files of the seed model."""
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    (folder / "BkgOnly.json").write_text(json.dumps(ws))
    files = []
    for k in range(n_points):
        patch = folder / f"patch.sig_{k}.json"
        patch.write_text(json.dumps(scaled_signal(0.2 + 0.05 * k)))
        files.append(str(patch))
    return [str(folder / "BkgOnly.json"), *files]


def clean_run(inputs: list[str]) -> xr.Dataset:
    """The same scan, in this process with the synchronous scheduler."""
    import pyhf_dask

    grid = pyhf_dask.SignalGrid.from_inputs(inputs)
    return pyhf_dask.scan(grid, kernel="pyhf", chunk_size=4).compute(scheduler="synchronous")


def assert_same(out: xr.Dataset, clean: xr.Dataset) -> None:
    """Results equal to the clean run, point by point."""
    from pyhf_dask.results import point_names, status_names

    assert point_names(out).tolist() == point_names(clean).tolist()
    assert status_names(out.status).tolist() == status_names(clean.status).tolist()
    np.testing.assert_array_equal(out.CLs_obs.values, clean.CLs_obs.values)
    np.testing.assert_array_equal(out.CLs_exp.values, clean.CLs_exp.values)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyhf_dask", "scan", *args]


def environment(tmp: Path) -> dict[str, str]:
    """The scan's environment: its temporary folders (Parsl's run directory) under ``tmp``
    so that detached processes can be found by it, this environment's commands, and this
    checkout's pyhf_dask."""
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONWARNINGS="ignore")
    # this checkout's pyhf_dask, whatever the environment has installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def start(*args: str, tmp: Path) -> subprocess.Popen[str]:
    """Start a scan in its own session (a signal to it reaches no test process)."""
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=environment(tmp),
        cwd=tmp,
    )


def run(*args: str, tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        check=False,
        env=environment(tmp),
        cwd=tmp,
        timeout=timeout,
    )


def done(store: Path) -> int:
    """Points of a store that are not pending (0 while it does not exist)."""
    from pyhf_dask.results import status_names
    from pyhf_dask.store import open_store

    try:
        return int((status_names(open_store(store).status) != "pending").sum())
    except Exception:  # the store may not exist yet
        return 0


def wait_for(predicate, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the scan ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def scan_tree(pid: int, tmp: Path) -> list[psutil.Process]:
    """The scan's process, its descendants, and processes naming ``tmp`` (detached Parsl
    worker pools) with theirs."""
    root = psutil.Process(pid)
    found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    for p in psutil.process_iter(["cmdline"]):
        if str(tmp) in " ".join(p.info["cmdline"] or []):
            found[p.pid] = p
            found.update({c.pid: c for c in p.children(recursive=True)})
    return list(found.values())


def workers(pid: int, tmp: Path) -> list[psutil.Process]:
    """Processes that run fits: local pool workers, dask workers, Parsl workers."""
    out = []
    for p in scan_tree(pid, tmp)[1:]:
        try:
            line = " ".join(p.cmdline())
            parent = " ".join(p.parent().cmdline()) if p.parent() else ""
        except psutil.Error:
            continue
        if "resource_tracker" in line or "interchange" in line or "process_worker_pool" in line:
            continue
        if p.ppid() == pid or "dask worker" in line or "process_worker_pool" in parent:
            out.append(p)
    return out


def assert_all_gone(procs: list[psutil.Process], timeout: float = 30) -> None:
    """No process of the scan runs any more (zombies of the dead parent included)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [(p.pid, p.cmdline()) for p in alive]


def one_line(stderr: str, prefix: str) -> str:
    """The single non-warning line of stderr, checked to start with ``prefix``."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARN")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), stderr
    return lines[0]
