"""The JAX kernel under Dask's default threaded scheduler: no deadlock, the same numbers.

Two JAX computations of one process at once (two Dask threads, each in a fit) used to wait
on each other's XLA CPU pool threads forever; the kernel runs one at a time per process.
The reproducer runs in a subprocess with a time limit, so a hang fails the test instead of
the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

SCRIPT = """
import json, sys, pyhf_dask
grid = pyhf_dask.SignalGrid.from_path(sys.argv[1], region="RegionA").select(["sbottom_1[0-2]*"])
ds = pyhf_dask.scan(grid, kernel="jax", chunk_size=15)  # four fit tasks, two threads
threaded = ds.compute()  # Dask's default scheduler: threads
alone = ds.CLs_obs.compute(scheduler="threads")  # one variable computed alone
sync = ds.compute(scheduler="synchronous")
print(json.dumps({
    "threaded": threaded.CLs_obs.values.tolist(),
    "alone": alone.values.tolist(),
    "sync": sync.CLs_obs.values.tolist(),
    "status": pyhf_dask.status_names(threaded.status).tolist(),
}))
"""


def test_threaded_scheduler_does_not_hang(sbottom_archive: Path) -> None:
    """60 sbottom points in four tasks (without the lock this hung for good, 2 cores)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(sbottom_archive)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["status"]) == {"converged"}
    np.testing.assert_array_equal(out["threaded"], out["sync"])
    np.testing.assert_array_equal(out["alone"], out["sync"])
