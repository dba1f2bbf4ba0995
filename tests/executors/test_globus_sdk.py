"""The real globus_compute_sdk.Executor behind the adapter, with the web service faked."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from engine_checks import assert_same_cls, failed

from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors import wrap
from pyhf_dask.executors.adapter import estimate_payload
from pyhf_dask.grid import scaled_signal
from pyhf_dask.kernels import FitOptions

pytest.importorskip("globus_compute_endpoint")
pytestmark = pytest.mark.filterwarnings("ignore")

from fake_globus import FakeClient, FakeResultWatcher  # noqa: E402
from globus_compute_sdk import Executor  # noqa: E402

from pyhf_dask.executors.engine import LocalEndpointExecutor  # noqa: E402

ENDPOINT = "6c7a7cd2-9b26-4b0a-9c59-7f5a4a7f3a11"


@pytest.fixture(scope="module")
def endpoint_engine():
    ex = LocalEndpointExecutor("process", workers=2)
    try:
        yield ex
    finally:
        ex.shutdown()


@pytest.fixture
def sdk(endpoint_engine, monkeypatch):
    """Factory of real SDK Executors wired to a fake service."""
    made = []

    def make(**client_options):
        client = FakeClient(endpoint_engine, **client_options)
        watcher = FakeResultWatcher(client)
        monkeypatch.setattr(Executor, "_get_result_watcher", lambda self: watcher)
        gce = Executor(endpoint_id=ENDPOINT, client=client, batch_size=4)
        made.append((gce, watcher))
        return gce, client

    yield make
    for gce, watcher in made:
        gce.shutdown(wait=False, cancel_futures=True)
        watcher.shutdown()


def test_sdk_executor_scan_batched(sdk, lazy_scan, reference):
    gce, client = sdk()
    adapter = wrap(gce)
    assert adapter.max_payload == 10_000_000 and adapter.max_result == 10 * 1024 * 1024
    out = lazy_scan.compute(scheduler=adapter)
    assert_same_cls(out, reference)
    assert sum(client.batches) == 7 + 1  # 7 fit tasks + the version probe
    assert max(client.batches) <= 4  # the SDK's batch_size


def test_payload_limit_splits_chunks(sdk, seed_grid, lazy_scan, reference):
    options = FitOptions().to_dict()
    limit = estimate_payload(("pyhf", seed_grid.workspace, seed_grid.chunk(0, 2), options))
    assert estimate_payload(("pyhf", seed_grid.workspace, seed_grid.chunk(0, 3), options)) > limit
    gce, client = sdk(max_request=limit)
    adapter = wrap(gce, max_payload=limit)
    out = lazy_scan.compute(scheduler=adapter)  # chunks of 3 points must be split
    assert_same_cls(out, reference)
    assert adapter.stats["split"] == 6
    assert max(client.payload_sizes) <= limit


def test_payload_limit_single_point_refused(sdk, lazy_scan):
    gce, _ = sdk()
    with pytest.raises(InvalidOption, match="cannot be sent"):
        lazy_scan.compute(scheduler=wrap(gce, max_payload=500))


def bad_fit_tasks(workspace, n_tasks=2, n_points=2):
    """Delayed fit tasks whose patches raise on the worker (outside the kernel's guard)."""
    import dask

    from pyhf_dask.graph import FitTask
    from pyhf_dask.grid import FunctionPatches

    bad = functools.partial(scaled_signal, x=1)  # TypeError when called
    return [
        dask.delayed(FitTask())(
            "pyhf",
            workspace,
            FunctionPatches(bad, ("scale",), np.ones((n_points, 1))),
            FitOptions().to_dict(),
            dask_key_name=f"bad-fit-{i}",  # routed by what the task is, not its name
        )
        for i in range(n_tasks)
    ]


def test_task_raising_on_endpoint_marks_points_failed(sdk, seed_grid):
    import dask

    gce, _ = sdk()
    adapter = wrap(gce, retries=1)
    results = dask.compute(*bad_fit_tasks(seed_grid.workspace), scheduler=adapter)
    for res in results:
        assert (res["status"] == "failed").all() and np.isnan(res["CLs_obs"]).all()
        assert all("2 attempt(s)" in m and "TypeError" in m for m in res["message"])
    assert adapter.stats == {"submitted": 4, "retried": 2, "failed": 2, "split": 0, "calls": 0}


def test_service_outage_ends_with_points_failed(sdk, lazy_scan):
    gce, _ = sdk(fail_batches=100)
    adapter = wrap(gce, retries=1, check_versions=False)
    out = lazy_scan.compute(scheduler=adapter)
    assert failed(out.status).all()
    assert len(out.point) == 20


def test_shutdown_executor_is_clear():
    gce = Executor(endpoint_id=ENDPOINT, client=FakeClient(None))
    gce.shutdown()
    gce.shutdown()  # safe twice
    with pytest.raises(RuntimeError, match="shutdown"):
        gce.submit(sum, [1])
