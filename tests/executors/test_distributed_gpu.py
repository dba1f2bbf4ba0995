"""``--executor distributed --device gpu``: dask-cuda's LocalCUDACluster, or one line.

dask-cuda cannot be installed without CUDA: its ``LocalCUDACluster`` is replaced by a
stand-in that records its arguments (and the nanny environment the workers would get)
and starts an in-process ``LocalCluster``; the GPU discovery is injected.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import dask
import numpy as np
import pytest
from click.testing import CliRunner

import pyhf_dask
from pyhf_dask import gpu
from pyhf_dask.exceptions import InvalidOption, MissingDependency
from pyhf_dask.executors import open_scheduler
from pyhf_dask.executors.distributed import open_distributed
from pyhf_dask.grid import SignalGrid

pytest.importorskip("distributed")
from distributed import LocalCluster

LOOPBACK = {
    "host": "127.0.0.1",
    "dashboard_address": "127.0.0.1:0",
    "worker_dashboard_address": "127.0.0.1:0",
    "scheduler_port": 0,
    "threads_per_worker": 1,
}


class LocalCUDACluster(LocalCluster):
    """Stand-in for ``dask_cuda.LocalCUDACluster``: records, then runs in process."""

    made: ClassVar[list[tuple[dict[str, Any], dict[str, str], Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        environ = dict(dask.config.get("distributed.nanny.environ"))
        type(self).made.append((kwargs, environ, self))
        super().__init__(n_workers=1, processes=False, dashboard_address=None)


@pytest.fixture
def fake_dask_cuda(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    module = types.ModuleType("dask_cuda")
    module.LocalCUDACluster = LocalCUDACluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_cuda", module)
    monkeypatch.setattr(LocalCUDACluster, "made", [])
    for name in (*gpu.MEMORY_VARIABLES, "CUDA_VISIBLE_DEVICES", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    return LocalCUDACluster.made


def _gpus(monkeypatch: pytest.MonkeyPatch, ids: list[str]) -> None:
    monkeypatch.setattr(gpu, "physical_gpus", lambda: list(ids))


def test_cli_without_dask_cuda_names_the_cuda_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pyhf_dask.cli import main
    from pyhf_dask.grid import signal_patch, simple_workspace

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed (import fails)
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    (tmp_path / "ws.json").write_text(json.dumps(ws))
    (tmp_path / "patch.sig_1.json").write_text(json.dumps(signal_patch([5.0, 6.0])))
    args = ["scan", str(tmp_path / "ws.json"), str(tmp_path / "patch.sig_1.json")]
    result = CliRunner().invoke(main, [*args, "--executor", "distributed", "--device", "gpu"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'pyhf_dask[cuda]'" in lines[0] and "dask_cuda" in lines[0]
    assert "Traceback" not in result.output


def test_missing_dask_cuda_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    _gpus(monkeypatch, [])
    with (
        pytest.raises(MissingDependency, match=r"pyhf_dask\[cuda\]"),
        open_distributed(device="gpu"),
    ):
        pytest.fail("no cluster may be opened")


def test_one_loopback_worker_per_gpu_without_preallocation(
    fake_dask_cuda: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _gpus(monkeypatch, ["0", "1"])
    with open_distributed(device="gpu") as scheduler:
        assert scheduler.executor.submit(sum, [1, 2]).result() == 3
    [(kwargs, environ, cluster)] = fake_dask_cuda
    assert kwargs == {
        **LOOPBACK,
        "CUDA_VISIBLE_DEVICES": "0,1",
        "env": {
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "XLA_FLAGS": "--xla_gpu_autotune_level=0",
        },
    }
    # dask-cuda replaces each worker's env: the nannies read the setting from the config
    assert environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in dask.config.get("distributed.nanny.environ")
    assert cluster.status.name == "closed"


def test_workers_pick_the_first_gpus_and_a_user_memory_setting_is_kept(
    fake_dask_cuda: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _gpus(monkeypatch, ["0", "1", "2", "3"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1,2")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", ".4")
    with open_scheduler("distributed", workers=2, device="gpu"):
        pass
    [(kwargs, environ, _)] = fake_dask_cuda
    assert kwargs["CUDA_VISIBLE_DEVICES"] == "3,1"
    assert kwargs["env"] == {
        "XLA_PYTHON_CLIENT_MEM_FRACTION": ".4",
        "XLA_FLAGS": "--xla_gpu_autotune_level=0",
    }
    assert environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == ".4"


def test_more_workers_than_gpus_is_one_line(
    fake_dask_cuda: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _gpus(monkeypatch, ["0"])
    with (
        pytest.raises(InvalidOption) as info,
        open_scheduler("distributed", workers=2, device="gpu"),
    ):
        pytest.fail("no cluster may be opened")
    assert "--workers 2: only 1 GPU(s) are visible (0)" in str(info.value)
    assert "\n" not in str(info.value)
    assert fake_dask_cuda == []


def test_no_gpu_is_one_line_before_any_cluster(
    fake_dask_cuda: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _gpus(monkeypatch, [])
    with (
        pytest.raises(InvalidOption) as info,
        open_distributed(device="gpu"),
    ):
        pytest.fail("no cluster may be opened")
    assert str(info.value) == gpu.no_gpu_message()
    assert fake_dask_cuda == []


@pytest.fixture
def running_cluster() -> Iterator[str]:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_a_cluster_by_address_is_not_checked_here(
    monkeypatch: pytest.MonkeyPatch, running_cluster: str, seed_grid: SignalGrid
) -> None:
    # no GPU and no dask-cuda on the client: the cluster's workers decide
    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    _gpus(monkeypatch, [])
    with open_scheduler("distributed", scheduler_address=running_cluster, device="gpu") as sched:
        ds = pyhf_dask.scan(seed_grid, kernel="pyhf", device="gpu", scheduler=sched)
        result = ds.compute(scheduler=sched)
    assert np.isfinite(result.CLs_obs.values).all()
