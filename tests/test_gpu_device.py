"""``device="gpu"`` where the fits run on this machine and it has no GPU: one line, no fit.

No GPU here: the discovery is injected (``pyhf_dask.gpu.physical_gpus``) in process, and
the command line runs with ``CUDA_VISIBLE_DEVICES=-1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

import pyhf_dask
from pyhf_dask import gpu
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors import open_scheduler, wrap
from pyhf_dask.grid import SignalGrid, signal_patch, simple_workspace
from pyhf_dask.plan import fits_run_here

LOCAL_SCHEDULERS = [None, "threads", "synchronous", "sync", "processes"]


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the fit tasks that run in this process (the kernel entry point)."""
    from pyhf_dask import graph

    calls: list[int] = []
    real: Callable[..., Any] = graph.fit_chunk

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(graph, "fit_chunk", counted)
    return calls


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "physical_gpus", list)


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "physical_gpus", lambda: ["0"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("scheduler", LOCAL_SCHEDULERS)
def test_local_scan_without_gpu_stops_before_any_fit(
    seed_grid: SignalGrid, fits: list[int], scheduler: str | None
) -> None:
    with pytest.raises(InvalidOption) as info:  # scan() refuses: nothing to compute
        pyhf_dask.scan(seed_grid, device="gpu", scheduler=scheduler)
    assert str(info.value) == gpu.no_gpu_message()
    assert "\n" not in str(info.value)
    assert fits == []


@pytest.mark.usefixtures("no_gpu")
def test_the_active_dask_setting_is_checked(seed_grid: SignalGrid, fits: list[int]) -> None:
    with dask.config.set(scheduler="sync"), pytest.raises(InvalidOption, match="no GPU"):
        pyhf_dask.scan(seed_grid, device="gpu").compute()
    assert fits == []


@pytest.mark.usefixtures("one_gpu")
def test_a_visible_gpu_lets_the_scan_run(seed_grid: SignalGrid, fits: list[int]) -> None:
    # the pyhf kernel ignores the device: the scan runs, and the fits are counted
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", device="gpu").compute(scheduler="sync")
    assert fits and np.isfinite(ds.CLs_obs.values).all()


def test_cpu_and_default_devices_are_not_checked(
    seed_grid: SignalGrid, fits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def no_gpu_counted() -> list[str]:
        asked.append(1)
        return []

    monkeypatch.setattr(gpu, "physical_gpus", no_gpu_counted)
    for device in (None, "cpu"):
        ds = pyhf_dask.scan(seed_grid, kernel="pyhf", device=device)
        assert ds.sizes["point"] == len(seed_grid)
    assert asked == []  # no GPU discovery at all for the CPU
    assert fits == []  # and the scan is lazy: nothing fitted yet


@pytest.mark.usefixtures("no_gpu")
def test_a_wrapped_executor_is_not_checked_on_the_client(
    seed_grid: SignalGrid, fits: list[int]
) -> None:
    with ThreadPoolExecutor(1) as pool:
        scheduler = wrap(pool)
        assert not fits_run_here(scheduler)
        ds = pyhf_dask.scan(seed_grid, kernel="pyhf", device="gpu", scheduler=scheduler)
        result = ds.compute(scheduler=scheduler)
    assert fits and np.isfinite(result.CLs_obs.values).all()


@pytest.mark.usefixtures("no_gpu")
def test_an_active_distributed_client_is_not_checked_on_the_client(
    seed_grid: SignalGrid,
) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(  # in process: no network
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert not fits_run_here()
        assert not fits_run_here(client)
        ds = pyhf_dask.scan(seed_grid, kernel="pyhf", device="gpu")
        assert ds.sizes["point"] == len(seed_grid)
    assert fits_run_here()  # the client is gone: the threaded default again


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("executor", ["threads", "synchronous"])
def test_open_scheduler_refuses_local_executors_without_gpu(executor: str) -> None:
    with (
        pytest.raises(InvalidOption, match="no GPU is visible"),
        open_scheduler(executor, device="gpu"),
    ):
        pytest.fail("no scheduler may be opened")
    with open_scheduler(executor, device="cpu") as scheduler:
        # the scheduler asked for: "synchronous" runs a task in this thread, "threads" in a pool
        ident = dask.delayed(threading.get_ident)().compute(scheduler=scheduler)
        assert (ident == threading.get_ident()) == (executor == "synchronous")
        assert dask.compute(dask.delayed(sum)([1, 2]), scheduler=scheduler) == (3,)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("tiny")
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    (folder / "BkgOnly.json").write_text(json.dumps(ws))
    (folder / "patch.sig_1.json").write_text(json.dumps(signal_patch([5.0, 6.0])))
    return [str(folder / "BkgOnly.json"), str(folder / "patch.sig_1.json")]


@pytest.mark.parametrize("executor", ["threads", "synchronous"])
def test_cli_without_gpu_exits_2_with_one_line(
    tiny_inputs: list[str], tmp_path: Path, executor: str
) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    out = tmp_path / "out.nc"
    args = ["scan", *tiny_inputs, "--device", "gpu", "--executor", executor, "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "pyhf_dask", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "no GPU is visible" in lines[0] and "CUDA_VISIBLE_DEVICES='-1'" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert not out.exists()
