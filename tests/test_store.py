"""Incremental Zarr stores: resume, settings checks, and a client killed with SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from pyhf_dask.exceptions import InvalidOption, SettingsMismatch
from pyhf_dask.grid import SignalGrid, scaled_signal
from pyhf_dask.results import as_str, status_names
from pyhf_dask.store import open_store, scan_to_store


def _same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a.CLs_obs.values, b.CLs_obs.values)
    np.testing.assert_array_equal(a.CLs_exp.values, b.CLs_exp.values)
    assert status_names(a.status).tolist() == status_names(b.status).tolist()
    assert as_str(a.point.values).tolist() == as_str(b.point.values).tolist()


def test_store_equals_in_memory_scan_and_resume_fits_nothing(seed_grid, tmp_path):
    import pyhf_dask

    path = tmp_path / "r.zarr"
    written: list[int] = []
    ds = scan_to_store(
        seed_grid,
        path,
        kernel="pyhf",
        chunk_size=3,
        scheduler="synchronous",
        on_write=written.append,
    )
    assert sorted(written) == [1, 3]
    memory = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3).compute(scheduler="synchronous")
    _same_results(ds, memory)
    again: list[int] = []
    scan_to_store(
        seed_grid, path, resume=True, kernel="pyhf", scheduler="synchronous", on_write=again.append
    )
    assert again == []
    with pytest.raises(InvalidOption, match="exists"):
        scan_to_store(seed_grid, path, kernel="pyhf")


def test_resume_refuses_other_settings(seed_grid, seed_workspace, tmp_path):
    path = tmp_path / "r.zarr"
    scan_to_store(seed_grid, path, kernel="pyhf", scheduler="synchronous")
    with pytest.raises(SettingsMismatch, match="test_stat"):
        scan_to_store(seed_grid, path, resume=True, kernel="pyhf", test_stat="q")
    other = SignalGrid.from_function(seed_workspace, scaled_signal, scale=[0.5, 1.0])
    with pytest.raises(SettingsMismatch, match="patches_digest"):
        scan_to_store(other, path, resume=True, kernel="pyhf")


def test_retry_failed_refits_only_failed_points(ewk3l_dir, tmp_path):
    grid = SignalGrid.from_patchset(ewk3l_dir / "BkgOnly.json", ewk3l_dir / "patchset.json")
    grid = grid.take(range(4))
    path = tmp_path / "r.zarr"
    first = scan_to_store(grid, path, kernel="pyhf", chunk_size=2, scheduler="synchronous")
    n_failed = int((status_names(first.status) == "failed").sum())
    assert n_failed > 0
    written: list[int] = []
    scan_to_store(
        grid,
        path,
        resume=True,
        retry_failed=True,
        kernel="pyhf",
        scheduler="synchronous",
        on_write=written.append,
    )
    assert sum(written) == n_failed


def test_a_plain_distributed_client_writes_every_point(seed_grid, tmp_path, caplog):
    """A Client runs no local callbacks: every chunk is written at the end, with a warning."""
    distributed = pytest.importorskip("distributed")
    path = tmp_path / "client.zarr"
    written: list[int] = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        caplog.at_level(logging.WARNING, logger="pyhf_dask.store"),
    ):
        ds = scan_to_store(
            seed_grid, path, kernel="pyhf", chunk_size=1, scheduler=client, on_write=written.append
        )
    assert sorted(written) == [1] * len(seed_grid)
    assert (status_names(ds.status) == "converged").all()
    stored = open_store(path)  # on disk, not only in the returned Dataset
    assert (status_names(stored.status) == "converged").all()
    assert np.isfinite(stored.CLs_obs.values).all()
    memory = scan_to_store(
        seed_grid, tmp_path / "sync.zarr", kernel="pyhf", scheduler="synchronous"
    )
    _same_results(stored, memory)
    warnings = [r for r in caplog.records if r.name == "pyhf_dask.store"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert f"{len(seed_grid)} chunk(s) written only now, at the end" in warnings[0].getMessage()


def _seed_inputs(tmp_path, seed_workspace, n_points):
    ws = tmp_path / "BkgOnly.json"
    ws.write_text(json.dumps(seed_workspace))
    files = []
    for k in range(n_points):
        scale = 0.2 + 0.05 * k
        patch = tmp_path / f"patch.sig_{k}.json"
        patch.write_text(json.dumps(scaled_signal(scale)))
        files.append(str(patch))
    return [str(ws), *files]


def _done(path) -> int:
    try:
        return int((status_names(open_store(path).status) != "pending").sum())
    except Exception:  # the store may not exist yet
        return 0


def test_sigkill_then_resume_fits_only_missing_points(seed_workspace, tmp_path):
    n_points = 120
    inputs = _seed_inputs(tmp_path, seed_workspace, n_points)
    store = tmp_path / "killed.zarr"
    args = [*inputs, "--kernel", "pyhf", "--chunk-size", "4", "--workers", "1"]
    cmd = [sys.executable, "-m", "pyhf_dask", "scan", *args, "-o", str(store)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while _done(store) < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the scan finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its worker processes
    proc.wait()
    partial = open_store(store)  # readable after SIGKILL
    status = status_names(partial.status)
    done = status != "pending"
    assert 8 <= done.sum() < n_points
    assert np.isfinite(partial.CLs_obs.values[done]).all()
    assert np.isnan(partial.CLs_obs.values[~done]).all()

    resume = [sys.executable, "-m", "pyhf_dask", "scan", *args, "-o", str(store), "--resume"]
    # the dead scan's lock is stale (its pid is gone on this host): taken over, with a warning
    resumed = subprocess.run(resume, capture_output=True, text=True, check=True)
    assert f"taking over the lock of pid {proc.pid} on host" in resumed.stderr
    fitted = int(re.search(r"\((\d+) fitted in this run\)", resumed.stderr).group(1))
    assert fitted == n_points - int(done.sum())

    clean = tmp_path / "clean.zarr"
    subprocess.run(
        [sys.executable, "-m", "pyhf_dask", "scan", *args, "-o", str(clean)],
        capture_output=True,
        text=True,
        check=True,
    )
    _same_results(open_store(store), open_store(clean))


def test_ctrl_c_keeps_finished_points_and_says_how_to_resume(seed_workspace, tmp_path):
    psutil = pytest.importorskip("psutil")
    inputs = _seed_inputs(tmp_path, seed_workspace, 120)
    store = tmp_path / "interrupted.zarr"
    cmd = [
        sys.executable,
        "-m",
        "pyhf_dask",
        "scan",
        *inputs,
        "--kernel",
        "pyhf",
        "--chunk-size",
        "4",
        "--workers",
        "2",
        "-o",
        str(store),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while _done(store) < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the scan finished before it could be interrupted"
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted;" in err
    assert f"-o {store} --resume" in err
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []  # outstanding tasks were cancelled with their workers
    done = _done(store)
    assert 8 <= done < 120
    assert f"{done} of 120 points are stored" in err
