"""Faults at the edges (issue 25): a killed CLI, a damaged store, odd names and inputs.

Real CLI scans (``python -m pyhf_dask scan``) in their own session on the seed model; the
fault is injected with ``os.kill`` or through the file system, and the tests check the
exit status, the one-line message, the store against a clean run, and that no process of
the scan is left (by process tree and by the scan's temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time

import numpy as np
import pytest
from test_faults_support import (
    FAST,
    N,
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

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.filterwarnings("ignore")


def _kill_cli(fault_inputs, tmp_path, *extra, points=8):
    """Start a scan into ``s.zarr``, SIGKILL the CLI once ``points`` are stored; return the
    store and the processes the scan had started."""
    store = tmp_path / "s.zarr"
    proc = start(*fault_inputs, *FAST, "--workers", "2", "-o", str(store), *extra, tmp=tmp_path)
    wait_for(lambda: done(store) >= points, proc, timeout=240)
    tree = scan_tree(proc.pid, tmp_path)
    names = " ".join(" ".join(p.cmdline()) for p in tree[1:])
    assert len(tree) >= 3, names  # the CLI and its workers at least
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return store, tree[1:], names


def test_sigkill_of_the_cli_ends_local_workers_and_tracker(fault_inputs, fault_clean, tmp_path):
    store, started, names = _kill_cli(fault_inputs, tmp_path)
    assert "resource_tracker" in names and "spawn_main" in names
    assert_all_gone(started, timeout=20)  # workers and resource tracker die with the CLI
    assert (store / LOCK_NAME).exists()  # the killed scan could not release its lock
    # the lock of a dead owner on this host is taken over with a warning: no --break-lock
    resumed = run(
        *fault_inputs, *FAST, "--workers", "2", "-o", str(store), "--resume", tmp=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "taking over the lock" in resumed.stderr
    assert_same(open_store(store), fault_clean)
    assert not (store / LOCK_NAME).exists()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["parsl", "endpoint-local"])
def test_sigkill_of_the_cli_ends_parsl_processes(fault_inputs, tmp_path, executor):
    pytest.importorskip("parsl")
    if executor == "endpoint-local":
        pytest.importorskip("globus_compute_endpoint")
    _, started, names = _kill_cli(fault_inputs, tmp_path, "--executor", executor, points=4)
    assert "interchange" in names, names
    assert_all_gone(started, timeout=30)  # interchange, worker pool and workers
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert_all_gone(left, timeout=10)
    assert not list(tmp_path.glob("pyhf-dask-*")), list(tmp_path.iterdir())  # run folder removed


def _locked_by(store, pid, started):
    (store / LOCK_NAME).mkdir()
    owner = {"pid": pid, "host": socket.gethostname(), "started": started}
    meta = {"zarr_format": 3, "node_type": "group", "attributes": owner}
    (store / LOCK_NAME / "zarr.json").write_text(json.dumps(meta))


def test_break_lock_refuses_a_live_owner_on_this_host(fault_inputs, tmp_path):
    store = tmp_path / "c.zarr"
    args = [*fault_inputs[:5], *FAST, "--executor", "synchronous", "-o", str(store)]
    made = run(*args, tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    before = open_store(store)
    live = psutil.Process()  # this test: alive, on this host
    _locked_by(store, live.pid, live.create_time())
    for extra in (["--overwrite", "--break-lock"], ["--resume", "--break-lock"]):
        refused = run(*args, "--poi-value", "2", *extra, tmp=tmp_path)
        assert refused.returncode == 2, refused.stderr
        line = one_line(refused.stderr, "Error [lock]: ")
        assert f"in use by another scan (pid {live.pid} on host" in line, line
        assert "--break-lock" in line
    assert (store / LOCK_NAME).is_dir()
    shutil.rmtree(store / LOCK_NAME)
    after = open_store(store)
    np.testing.assert_array_equal(after.CLs_obs.values, before.CLs_obs.values)
    assert after.attrs == before.attrs


def test_lock_of_another_host_needs_break_lock(fault_inputs, tmp_path):
    store = tmp_path / "h.zarr"
    args = [*fault_inputs[:5], *FAST, "--executor", "synchronous", "-o", str(store)]
    assert run(*args, tmp=tmp_path).returncode == 0
    (store / LOCK_NAME).mkdir()
    owner = {"pid": 1, "host": "elsewhere.invalid", "started": time.time()}
    meta = {"zarr_format": 3, "node_type": "group", "attributes": owner}
    (store / LOCK_NAME / "zarr.json").write_text(json.dumps(meta))
    refused = run(*args, "--resume", tmp=tmp_path)
    assert refused.returncode == 2
    assert "cannot check another host" in one_line(refused.stderr, "Error [lock]: ")
    taken = run(*args, "--resume", "--break-lock", tmp=tmp_path)
    assert taken.returncode == 0, taken.stderr
    assert not (store / LOCK_NAME).exists()


assert N == 64


def _small_store(fault_inputs, tmp_path, name="d.zarr"):
    store = tmp_path / name
    args = [*fault_inputs[:21], *FAST, "--executor", "synchronous", "-o", str(store)]
    made = run(*args, tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    return store, args


@pytest.mark.parametrize("lost", [["status"], ["CLs_obs"], ["status", "CLs_exp", "message"]])
def test_missing_chunks_read_as_pending_and_are_refitted(fault_inputs, tmp_path, lost):
    from test_faults_support import clean_run

    from pyhf_dask.results import status_names

    store, args = _small_store(fault_inputs, tmp_path)
    for k, name in enumerate(lost):  # chunk 2 (points 8-11), and 3 for the second variable
        chunk = store / name / "c" / str(2 + min(k, 1))
        if name == "CLs_exp":
            chunk = chunk / "0"
        chunk.unlink()  # every chunk is on disk: a missing one is damage
    damaged = 4 if len(lost) == 1 else 8
    opened = open_store(store)
    assert (status_names(opened.status) == "pending").sum() == damaged  # never "converged"
    resumed = run(*args, "--resume", tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({damaged} fitted in this run)" in resumed.stderr, resumed.stderr
    assert_same(open_store(store), clean_run(fault_inputs[:21]))


def test_store_with_text_status_is_refused_for_resume(fault_inputs, tmp_path):
    from pyhf_dask.results import status_names

    store, args = _small_store(fault_inputs, tmp_path)
    old = open_store(store)
    old["status"] = ("point", status_names(old.status).astype(object))
    old.status.values[:3] = "pending"
    legacy = tmp_path / "old.zarr"
    old.to_zarr(legacy, consolidated=False)
    before = open_store(legacy)
    for extra in (["--resume"], ["--resume", "--retry-failed"]):
        refused = run(*args[:-1], str(legacy), *extra, tmp=tmp_path)
        assert refused.returncode == 2, refused.stderr
        line = one_line(refused.stderr, "Error [resume]: ")
        assert "written by an older pyhf-dask" in line
    after = open_store(legacy)
    assert after.status.values.tolist() == before.status.values.tolist()


@pytest.mark.parametrize("kind", ["device", "link", "fifo"])
def test_top_level_argument_that_is_no_regular_file_is_refused(tmp_path, kind):
    path = tmp_path / "a.tar.gz"
    if kind == "device":
        path = "/dev/zero"
    elif kind == "link":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    began = time.monotonic()
    result = run(str(path), "-o", str(tmp_path / "r.nc"), tmp=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr, "Error [input]: ")
    assert "not a regular file" in line and ("FIFO" in line) == (kind == "fifo")
    assert time.monotonic() - began < 60


def test_debug_after_the_command_is_accepted(tmp_path):
    result = run(str(tmp_path / "missing"), "--debug", "-o", str(tmp_path / "r.nc"), tmp=tmp_path)
    assert result.returncode != 0
    assert "no such option" not in result.stderr.lower()
    assert "Traceback" in result.stderr  # --debug shows the traceback instead of one line


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_non_utf8_patch_file_name_survives_escaped(fault_inputs, tmp_path, suffix):
    import xarray as xr

    folder = tmp_path / "n"
    folder.mkdir()
    shutil.copy(fault_inputs[0], folder / "BkgOnly.json")
    for source in fault_inputs[1:3]:
        shutil.copy(source, folder)
    odd = os.fsdecode(b"patch.s\xffg_9.json")  # names like sig_0: one coordinate
    shutil.copy(fault_inputs[3], os.path.join(os.fsencode(folder), os.fsencode(odd)))
    out = tmp_path / f"n{suffix}"
    args = [str(folder), "--kernel", "pyhf", "--executor", "synchronous", "-o", str(out)]
    result = run(*args, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    ds = xr.open_dataset(out) if suffix == ".nc" else open_store(out)
    names = sorted(ds.point.values.tolist())
    assert "s\\xffg_9" in names and len(names) == 3, names
    assert (ds.status.values == 0).all()
    if suffix == ".zarr":
        resumed = run(*args, "--resume", tmp=tmp_path)
        assert resumed.returncode == 0 and "(0 fitted in this run)" in resumed.stderr
