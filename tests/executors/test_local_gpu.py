"""GPU workers of the local executor, without a GPU: the discovery is injected."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyhf_dask import gpu
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors import open_scheduler
from pyhf_dask.executors.local import open_pool

MEMORY = gpu.MEMORY_VARIABLES


def worker_view(folder: str, n: int) -> tuple[int, dict[str, str | None]]:
    """Run in a worker: wait until ``n`` workers run this at once, then report the env."""
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(os.listdir(folder)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    names = ("CUDA_VISIBLE_DEVICES", *MEMORY)
    return os.getpid(), {k: os.environ.get(k) for k in names}


@pytest.fixture
def no_memory_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MEMORY:
        monkeypatch.delenv(name, raising=False)


def test_visible_gpus_reads_cuda_visible_devices() -> None:
    three = lambda: ["0", "1", "2"]  # noqa: E731
    assert gpu.visible_gpus({}, three) == ["0", "1", "2"]
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}, three) == ["1"]
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 0"}, three) == ["2", "0"]
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,7,1"}, three) == ["0"]  # stops at 7
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, three) == []
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, three) == []
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-3f2a,MIG-1"}, three) == [
        "GPU-3f2a",
        "MIG-1",
    ]
    assert gpu.visible_gpus({"CUDA_VISIBLE_DEVICES": "0"}, list) == []  # no driver, no GPU


def test_worker_environments() -> None:
    envs = gpu.worker_environments(["0", "1"], 5, environ={})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1", "0"]
    assert all(e["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for e in envs)
    assert all(e["XLA_FLAGS"] == "--xla_gpu_autotune_level=0" for e in envs)
    user = {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".4", "XLA_FLAGS": "--xla_gpu_autotune_level=4"}
    assert gpu.worker_environments(["3"], environ=user) == [
        {
            "CUDA_VISIBLE_DEVICES": "3",
            "XLA_PYTHON_CLIENT_MEM_FRACTION": ".4",
            "XLA_FLAGS": "--xla_gpu_autotune_level=4",  # the user's level is kept
        }
    ]


def test_no_gpu_is_one_line_error_before_any_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidOption, match="no GPU is visible") as info:
        open_pool(device="gpu", gpus=list)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(gpu, "physical_gpus", list)
    with pytest.raises(InvalidOption, match="--device gpu"), open_scheduler("local", device="gpu"):
        pytest.fail("no scheduler may be opened")


def test_cli_device_gpu_without_gpu(
    monkeypatch: pytest.MonkeyPatch, seed_workspace_files: tuple[str, str]
) -> None:
    from pyhf_dask.cli import main

    monkeypatch.setattr(gpu, "physical_gpus", list)
    result = CliRunner().invoke(main, ["scan", *seed_workspace_files, "--device", "gpu"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if "GPU" in line]
    assert len(lines) == 1, result.output
    assert "no GPU is visible" in lines[0]


@pytest.fixture
def seed_workspace_files(tmp_path: Path) -> tuple[str, str]:
    import json

    from pyhf_dask.grid import signal_patch, simple_workspace

    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    (tmp_path / "ws.json").write_text(json.dumps(ws))
    (tmp_path / "patch.sig_1.json").write_text(json.dumps(signal_patch([5.0, 6.0])))
    return str(tmp_path / "ws.json"), str(tmp_path / "patch.sig_1.json")


@pytest.mark.usefixtures("no_memory_settings")
def test_one_worker_per_visible_gpu(tmp_path: Path) -> None:
    ids = ["0", "1", "3"]
    pool = open_pool(device="gpu", gpus=lambda: ids, grace=1.0)
    try:
        assert pool.workers == pool.capacity == len(ids)
        futures = [pool.submit(worker_view, str(tmp_path), len(ids)) for _ in ids]
        seen = [f.result(timeout=600) for f in futures]
    finally:
        pool.shutdown()
    assert len({pid for pid, _ in seen}) == len(ids)  # one task per worker, all at once
    assert sorted(env["CUDA_VISIBLE_DEVICES"] or "" for _, env in seen) == ids
    for _, env in seen:
        assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ or os.environ["CUDA_VISIBLE_DEVICES"] != "3"


def test_cpu_pool_is_unchanged() -> None:
    pool = open_pool(2, device="cpu")
    try:
        assert pool.workers == 2
        assert pool.environments is None
    finally:
        pool.shutdown()
