"""The README's Python example, as written, under every local Dask scheduler.

Dask's default threaded scheduler (the README's ``ds.compute()``), ``"processes"``,
``"synchronous"`` and the adapter over a thread pool must all finish (the JAX kernel used
to deadlock under threads) and agree. The example runs in a subprocess with a time limit,
so a hang fails the test instead of the suite; ``-c`` keeps the spawned worker processes
of ``"processes"`` from re-running it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]

AFTER = """
import json
import concurrent.futures as cf
from pyhf_dask.executors import wrap
lazy = pyhf_dask.scan(grid)
out = {"threads": ds.CLs_obs.values.tolist()}
out["processes"] = lazy.CLs_obs.compute(scheduler="processes").values.tolist()
out["synchronous"] = lazy.CLs_obs.compute(scheduler="synchronous").values.tolist()
with cf.ThreadPoolExecutor(2) as pool:
    out["adapter"] = lazy.CLs_obs.compute(scheduler=wrap(pool)).values.tolist()
print(json.dumps(out))
"""


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, "no Python example in the README"
    return found.group(1)


@pytest.mark.slow
def test_readme_example_under_every_local_scheduler(sbottom_archive: Path) -> None:
    pytest.importorskip("jax")
    code = readme_example().replace(
        '"data/pyhf-ins1748602-probability-models.tar.gz"', repr(str(sbottom_archive))
    )
    assert "ds = ds.compute()" in code  # Dask's default scheduler: threads
    proc = subprocess.run(
        [sys.executable, "-c", code + AFTER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert np.isfinite(out["threads"]).mean() > 0.9
    for name in ("processes", "synchronous", "adapter"):
        np.testing.assert_array_equal(out[name], out["threads"], err_msg=name)
