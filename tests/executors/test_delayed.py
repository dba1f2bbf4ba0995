"""A user's own ``dask.delayed`` graph sent through the adapter, in batches.

``dask.delayed(pyhf.infer.hypotest)`` tasks go to the executor (all of them, or those the
user marks), several calls per submission, with the adapter's retries; the results are
those of Dask's synchronous scheduler.
"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pyhf
import pytest
from engine_checks import CountingExecutor

from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.executors import wrap
from pyhf_dask.tasks import ANNOTATION, remote

pytestmark = pytest.mark.filterwarnings("ignore")

MU = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
EXAMPLE = Path(__file__).parents[2] / "examples" / "delayed_to_endpoint.py"


def hypotest_graph(annotate: set[int] | None = None) -> list:
    """One delayed ``pyhf.infer.hypotest`` per POI value (``annotate``: those marked)."""
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[12.0, 11.0], bkg=[50.0, 52.0], bkg_uncertainty=[3.0, 7.0]
    )
    data = [51.0, 48.0, *model.config.auxdata]
    tasks = []
    for i, mu in enumerate(MU):
        with dask.annotate(**({ANNOTATION: True} if annotate and i in annotate else {})):
            tasks.append(dask.delayed(pyhf.infer.hypotest)(mu, data, model, test_stat="qtilde"))
    return tasks


@pytest.fixture(scope="module")
def expected() -> tuple:
    return dask.compute(*hypotest_graph(), scheduler="synchronous")


def _same(got: tuple, want: tuple) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_all_user_tasks_are_sent_in_batches(expected) -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, batch_size=4)
    got = dask.compute(*hypotest_graph(), scheduler=adapter)
    _same(got, expected)
    assert ex.calls["hypotest"] == len(MU)
    assert ex.submitted == 2  # 6 calls, 4 per batch
    assert adapter.stats["calls"] == len(MU)


def test_batches_spread_over_free_slots(expected) -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, max_in_flight=3)
    got = dask.compute(*hypotest_graph(), scheduler=adapter)
    _same(got, expected)
    assert ex.submitted == 3 and ex.calls["hypotest"] == len(MU)


def test_marked_mode_sends_annotated_tasks_only(expected) -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, remote="marked")
    got = dask.compute(*hypotest_graph(annotate={0, 2}), scheduler=adapter)
    _same(got, expected)
    assert ex.calls["hypotest"] == 2


def test_annotation_false_keeps_a_task_local() -> None:
    ex = CountingExecutor()
    with dask.annotate(**{ANNOTATION: False}):
        here = dask.delayed(np.hypot)(3.0, 4.0)
    sent = dask.delayed(pyhf.tensorlib.astensor)([1.0])
    with dask.annotate(**{ANNOTATION: True}):
        forced = dask.delayed(np.add)(1, 2)
    got = dask.compute(here, sent, forced, scheduler=wrap(ex, check_versions=False))
    assert got[0] == 5.0 and got[2] == 3
    assert ex.calls == Counter({"astensor": 1, "add": 1})


def _scaled(x: float) -> np.ndarray:
    return np.arange(3.0) * x


def test_remote_mark_survives_fusion() -> None:
    """Array optimisation fuses tasks and drops annotations; the mark survives."""
    ex = CountingExecutor()
    marked = da.from_delayed(dask.delayed(remote(_scaled))(2.0), shape=(3,), dtype=float)
    with dask.annotate(**{ANNOTATION: True}):
        annotated = da.from_delayed(dask.delayed(np.ones)(3), shape=(3,), dtype=float)
    adapter = wrap(ex, check_versions=False, remote="marked")
    total, ones = dask.compute(marked.sum(), annotated.sum(), scheduler=adapter)
    assert total == 6.0 and ones == 3.0
    assert ex.calls["_scaled"] == 1


_seen: set[float] = set()
_lock = threading.Lock()


def flaky(x: float) -> float:
    """Fails the first time it is called with ``x``."""
    with _lock:
        first = x not in _seen
        _seen.add(x)
    if first:
        msg = f"first call with {x}"
        raise ConnectionError(msg)
    return 2 * x


def always_fails(x: float) -> float:
    msg = f"bad input {x}"
    raise ValueError(msg)


def test_failed_calls_are_retried() -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, retries=1)
    got = dask.compute(*[dask.delayed(flaky)(float(x)) for x in range(5)], scheduler=adapter)
    assert got == tuple(2.0 * x for x in range(5))
    assert adapter.stats["retried"] == 5 and ex.calls["flaky"] == 10


def test_call_failing_every_attempt_raises_its_error() -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, retries=2)
    with pytest.raises(ValueError, match="bad input 1"):
        dask.compute(dask.delayed(always_fails)(1), scheduler=adapter)
    assert ex.calls["always_fails"] == 3


def test_batch_over_the_payload_limit_is_split() -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, max_payload=3000)
    blobs = [np.random.default_rng(i).bytes(1000) for i in range(4)]
    got = dask.compute(*[dask.delayed(_length)(b) for b in blobs], scheduler=adapter)
    assert got == (1000,) * 4
    assert ex.calls["_length"] == 4 and ex.submitted >= 2
    too_big = np.random.default_rng(9).bytes(5000)
    with pytest.raises(InvalidOption, match="accepts per submission"):
        dask.compute(dask.delayed(_length)(too_big), scheduler=adapter)


def _length(blob: bytes) -> int:
    return len(blob)


def test_on_the_endpoint_engine(expected) -> None:
    pytest.importorskip("globus_compute_endpoint")
    from pyhf_dask.executors.engine import LocalEndpointExecutor

    with LocalEndpointExecutor("process", workers=2) as endpoint:
        ex = CountingExecutor(inner=endpoint)
        adapter = wrap(ex, batch_size=2)
        got = dask.compute(*hypotest_graph(), scheduler=adapter)
    _same(got, expected)
    assert ex.calls["hypotest"] == len(MU)
    assert ex.calls["worker_versions"] == 1  # the version check ran on the endpoint
    assert adapter.stats["submitted"] == 3 and adapter.stats["failed"] == 0


def test_example_runs() -> None:
    pytest.importorskip("globus_compute_endpoint")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'same': True" in proc.stdout and "'calls': 6" in proc.stdout


class _LosesFirst(CountingExecutor):
    """The first submission never finishes (a lost batch); the others run."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not self.lost:
            self.lost = True
            return cf.Future()  # never set: only the timeout ends it
        return super().submit(fn, *args, **kwargs)


def test_lost_batch_times_out_and_is_retried() -> None:
    ex = _LosesFirst()
    adapter = wrap(ex, check_versions=False, timeout=0.5, retries=1)
    got = dask.compute(*[dask.delayed(_length)(b"ab") for _ in range(3)], scheduler=adapter)
    assert got == (2, 2, 2)
    assert adapter.stats["retried"] == 3 and adapter.stats["submitted"] == 2


def test_in_flight_limit_holds_for_batches() -> None:
    ex = CountingExecutor()
    adapter = wrap(ex, check_versions=False, max_in_flight=2, batch_size=2)
    got = dask.compute(*[dask.delayed(_length)(b"x" * i) for i in range(10)], scheduler=adapter)
    assert got == tuple(range(10))
    assert ex.submitted == 5 and adapter.stats["calls"] == 10
    assert ex.most_outstanding <= 2
