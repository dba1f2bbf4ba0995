"""The scan command resolves one plan: settings at call time, --workers sizes the chunks."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import dask
import pytest
import xarray as xr
from click.testing import CliRunner

from pyhf_dask.cli import main
from pyhf_dask.graph import default_chunk_size
from pyhf_dask.grid import scaled_signal


def _seed_folder(tmp_path, seed_workspace, n: int):
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "BkgOnly.json").write_text(json.dumps(seed_workspace))
    for k in range(n):
        patch = tmp_path / f"patch.sig_{k + 1}.json"
        patch.write_text(json.dumps(scaled_signal(0.5 + 0.1 * k)))
    return tmp_path


def _scan(*args: object) -> None:
    result = CliRunner().invoke(main, ["scan", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_workers_size_the_default_chunks(seed_workspace, tmp_path):
    """With the synchronous scheduler nothing else knows of 3 workers: --workers must."""
    folder = _seed_folder(tmp_path, seed_workspace, 12)
    out = tmp_path / "w3.nc"
    _scan(
        str(folder),
        "--kernel",
        "pyhf",
        "--executor",
        "synchronous",
        "--workers",
        "3",
        "-o",
        str(out),
    )
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["chunk_size"]) == default_chunk_size("pyhf", 12, 3) == 2
        assert math.ceil(ds.sizes["point"] / int(ds.attrs["chunk_size"])) == 6


def test_workers_3_on_the_local_executor_make_at_least_3_fit_tasks(seed_workspace, tmp_path):
    folder = _seed_folder(tmp_path, seed_workspace, 6)
    out = tmp_path / "local.nc"
    with dask.config.set({"pyhf-dask.workers": 1}):  # the option wins over the setting
        _scan(
            f"{folder}", "--kernel", "pyhf", "--executor", "local", "--workers", "3", "-o", f"{out}"
        )
    with xr.open_dataset(out) as ds:
        size = int(ds.attrs["chunk_size"])
        tasks = math.ceil(ds.sizes["point"] / size)
    assert size == default_chunk_size("pyhf", 6, 3) == 1  # 2 for two workers
    assert tasks >= 3


def _capture_run(monkeypatch):
    """Run the local executor on a thread pool; record the scheduler and plan of the run."""
    import pyhf_dask.cli.scan as cli_scan
    from pyhf_dask.executors import local

    seen: dict = {}
    resolve = cli_scan.plan_from_options

    def plan_from_options(grid, params, *, scheduler=None, output=None):
        seen["scheduler"] = scheduler
        seen["plan"] = resolve(grid, params, scheduler=scheduler, output=output)
        return seen["plan"]

    monkeypatch.setattr(cli_scan, "plan_from_options", plan_from_options)
    monkeypatch.setattr(local, "open_pool", lambda workers, **_: ThreadPoolExecutor(2))
    return seen


def test_executor_defaults_are_the_settings_at_call_time(seed_workspace, tmp_path, monkeypatch):
    folder = _seed_folder(tmp_path, seed_workspace, 2)
    seen = _capture_run(monkeypatch)
    common = [str(folder), "--kernel", "pyhf", "--executor", "local", "--no-table"]
    with dask.config.set({"pyhf-dask.executor.retries": 5, "pyhf-dask.executor.timeout": 40.0}):
        _scan(*common)
    assert seen["scheduler"].retries == 5
    assert seen["scheduler"].timeout == 40.0
    _scan(*common, "--retries", "0")  # an option given wins; the packaged default is back
    assert seen["scheduler"].retries == 0
    assert seen["scheduler"].timeout is None


def test_fit_defaults_are_the_settings_at_call_time(seed_workspace, tmp_path, monkeypatch):
    folder = _seed_folder(tmp_path, seed_workspace, 2)
    seen = _capture_run(monkeypatch)
    out = tmp_path / "q.nc"
    settings = {
        "pyhf-dask.test-stat": "q",
        "pyhf-dask.normsys-interpcode": "code1",
        "pyhf-dask.cl": 0.9,
        "pyhf-dask.chunk-size": 1,
        "pyhf-dask.workers": 7,
    }
    with dask.config.set(settings):
        _scan(str(folder), "--kernel", "pyhf", "--executor", "synchronous", "-o", str(out))
    plan = seen["plan"]
    assert (plan.options.test_stat, plan.options.normsys_interpcode) == ("q", "code1")
    assert (plan.cl, plan.chunk_size, plan.workers, len(plan.bounds)) == (0.9, 1, 7, 2)
    with xr.open_dataset(out) as ds:
        assert (ds.attrs["test_stat"], float(ds.attrs["cl"])) == ("q", 0.9)


def test_help_shows_the_settings_now():
    with dask.config.set({"pyhf-dask.executor.retries": 9}):
        text = CliRunner().invoke(main, ["scan", "--help"], terminal_width=200).output
    assert "[default: 9; pyhf-dask.executor.retries]" in text
    text = CliRunner().invoke(main, ["scan", "--help"], terminal_width=200).output
    assert "[default: 2; pyhf-dask.executor.retries]" in text


@pytest.mark.parametrize("name", ["scan", "options", "report"])
def test_cli_modules_are_short(name):
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(f"pyhf_dask.cli.{name}"))
    assert source.count("\n") < 400
