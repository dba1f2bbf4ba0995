"""SIGTERM, SIGHUP and Ctrl-C: finished points kept, engines stopped, resume printed.

Real CLI scans in their own session; the signal goes to the scan's process (SIGTERM and
SIGHUP, as a batch system or a closed terminal sends them) or to its whole process group
(SIGINT, as a terminal's Ctrl-C does).
"""

from __future__ import annotations

import os
import re
import shlex
import signal

import pytest
from test_faults_support import (
    FAST,
    N,
    assert_all_gone,
    assert_same,
    done,
    run,
    scan_tree,
    start,
    wait_for,
)

from pyhf_dask.store import LOCK_NAME, open_store

pytestmark = pytest.mark.filterwarnings("ignore")


def _stop(fault_inputs, tmp_path, sig, *extra, group=False):
    store = tmp_path / "s.zarr"
    proc = start(*fault_inputs, *FAST, "--workers", "2", "-o", str(store), *extra, tmp=tmp_path)
    wait_for(lambda: done(store) >= 8, proc)
    tree = scan_tree(proc.pid, tmp_path)
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert_all_gone(tree)
    assert "Traceback" not in err, err
    return proc.returncode, err, store


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_points_and_resume(
    fault_inputs, fault_clean, tmp_path, sig, status
):
    code, err, store = _stop(fault_inputs, tmp_path, sig)
    assert code == status, err
    name = signal.Signals(sig).name
    stored = done(store)
    assert 8 <= stored < N
    assert f"pyhf-dask: stopped by {name}; {stored} of {N} points are stored in {store}" in err
    assert not (store / LOCK_NAME).exists()  # the lock is released
    hint = re.search(r"Resume with: (.*)$", err, re.MULTILINE).group(1)
    argv = shlex.split(hint)
    assert argv[0] == "pyhf-dask" and argv[-1] == "--resume"
    resumed = run(*argv[2:], tmp=tmp_path)  # the printed command, without "pyhf-dask scan"
    assert resumed.returncode == 0, resumed.stderr
    assert f"({N - stored} fitted in this run)" in resumed.stderr
    assert_same(open_store(store), fault_clean)


def test_sigterm_netcdf_output_says_nothing_was_written(fault_inputs, tmp_path):
    out = tmp_path / "r.nc"
    proc = start(*fault_inputs, *FAST, "--workers", "2", "-o", str(out), tmp=tmp_path)
    wait_for(lambda: len(scan_tree(proc.pid, tmp_path)) > 3, proc)
    tree = scan_tree(proc.pid, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "stopped by SIGTERM; nothing was written" in err
    assert not out.exists()
    assert_all_gone(tree)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_parsl_interrupted_stops_everything(fault_inputs, tmp_path, sig, status):
    pytest.importorskip("parsl")
    code, err, store = _stop(fault_inputs, tmp_path, sig, "--executor", "parsl", group=True)
    assert code == status, err
    assert "NotImplementedError" not in err and "Error [" not in err
    assert "Resume with: pyhf-dask scan" in err and "--executor parsl" in err
    assert not list(tmp_path.glob("pyhf-dask-parsl-*"))  # its temporary folder is removed
    assert 8 <= done(store) <= N
