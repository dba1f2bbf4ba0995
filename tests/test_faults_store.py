"""One writer per store, and nothing lost at the end: real CLI processes.

Two scans on one store (the second refused with the owner named), stale locks, an
``--overwrite`` of a folder pyhf-dask did not make, outputs that cannot be written
(checked before any fit), and a final netCDF write that fails after all fits (the results
are rescued and the message says where).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import xarray as xr
from test_faults_support import (
    FAST,
    assert_all_gone,
    assert_same,
    done,
    one_line,
    run,
    scan_tree,
    start,
    wait_for,
)

from pyhf_dask.store import LOCK_NAME, open_store

pytestmark = pytest.mark.filterwarnings("ignore")


def test_second_writer_is_refused_naming_the_owner(fault_inputs, fault_clean, tmp_path):
    store = tmp_path / "r.zarr"
    slow = ["--workers", "1", "--chunk-size", "2"]
    first = start(*fault_inputs, *FAST, *slow, "-o", str(store), tmp=tmp_path)
    wait_for(lambda: done(store) >= 4, first)
    # the owner is held (SIGSTOP) while three more scans try the store: however fast the
    # fits, it is still running, holding the lock, when they ask
    os.kill(first.pid, signal.SIGSTOP)
    try:
        owner = f"in use by another scan (pid {first.pid} on host {socket.gethostname()}"
        others = [
            start(*fault_inputs, *FAST, "-o", str(store), *extra, tmp=tmp_path)
            for extra in (["--resume"], ["--resume", "--retry-failed"], ["--overwrite"])
        ]
        for second in others:
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err
            line = one_line(err, "Error [lock]: ")
            assert owner in line, line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.poll() is None  # the owner was not disturbed
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert_same(open_store(store), fault_clean)  # no point fitted twice or from another run
    assert not (store / LOCK_NAME).exists()


def _stale_store(fault_inputs, tmp_path):
    """A finished store whose lock names a process that has ended."""
    store = tmp_path / "r.zarr"
    made = run(
        *fault_inputs[:5], *FAST, "--executor", "synchronous", "-o", str(store), tmp=tmp_path
    )
    assert made.returncode == 0, made.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = {"pid": dead.pid, "host": socket.gethostname(), "started": time.time() - 60}
    (store / LOCK_NAME).mkdir()
    meta = {"zarr_format": 3, "node_type": "group", "attributes": owner}
    (store / LOCK_NAME / "zarr.json").write_text(json.dumps(meta))
    return store, dead.pid


def test_stale_lock_is_taken_over_with_a_warning(fault_inputs, tmp_path):
    store, pid = _stale_store(fault_inputs, tmp_path)
    args = [*fault_inputs[:5], *FAST, "--executor", "synchronous", "-o", str(store)]
    resumed = run(*args, "--resume", tmp=tmp_path)  # issue 25: a dead owner on this host
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over the lock of pid {pid} on host" in resumed.stderr
    assert "0 fitted in this run" in resumed.stderr
    taken = run(*args, "--overwrite", "--break-lock", tmp=tmp_path)
    assert taken.returncode == 0, taken.stderr
    assert "4 fitted in this run" in taken.stderr
    assert not (store / LOCK_NAME).exists()


def test_overwrite_deletes_only_a_pyhf_dask_store(fault_inputs, tmp_path):
    folder = tmp_path / "x.zarr"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    for extra in (["--overwrite"], ["--resume"]):
        result = run(*fault_inputs[:3], *FAST, "-o", str(folder), *extra, tmp=tmp_path)
        assert result.returncode == 2
        line = one_line(result.stderr, "Error [option]: ")
        assert "is not a pyhf-dask result store" in line
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/r.nc", "the folder {tmp}/missing does not exist"),
        ("missing/r.zarr", "the folder {tmp}/missing does not exist"),
        ("/proc/r.nc", "/proc/r.nc: cannot write in /proc"),
    ],
)
def test_unwritable_output_is_refused_before_any_fit(fault_inputs, tmp_path, output, message):
    out = output if output.startswith("/") else str(tmp_path / output)
    began = time.monotonic()
    result = run(*fault_inputs, *FAST, "--workers", "2", "-o", out, tmp=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr, "Error [output]: ")
    assert message.format(tmp=tmp_path) in line, line
    assert time.monotonic() - began < 30  # refused at once, not after 64 fits
    assert not (tmp_path / "missing").exists()


def test_netcdf_written_through_a_temporary_file(fault_inputs, fault_clean, tmp_path):
    out = tmp_path / "r.nc"
    result = run(*fault_inputs, *FAST, "--workers", "2", "-o", str(out), tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]  # no temporary left
    with xr.open_dataset(out) as ds:
        assert_same(ds.load(), fault_clean)


def test_final_write_failure_rescues_the_results(fault_inputs, fault_clean, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    proc = start(*fault_inputs, *FAST, "--workers", "2", "-o", str(folder / "r.nc"), tmp=work)
    wait_for(lambda: len(scan_tree(proc.pid, work)) > 3, proc)  # checked, fitting now
    tree = scan_tree(proc.pid, work)
    shutil.rmtree(folder)  # the output's folder disappears while the fits run
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 2
    line = one_line(err, "Error [output]: ")
    assert f"{folder / 'r.nc'}: cannot be written" in line
    rescued = line.rsplit("the finished results are in ", 1)[1]
    assert os.path.dirname(rescued) == str(work)
    with xr.open_dataset(rescued) as ds:
        assert_same(ds.load(), fault_clean)
    assert_all_gone(tree)
