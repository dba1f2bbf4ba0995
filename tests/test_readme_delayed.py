"""The README's own-delayed-graph example, as written, and ``pyhf_dask.remote``.

The example runs in a subprocess exactly as the README shows it; the lines appended after
it check that every marked or annotated ``hypotest`` went through the adapter's batches and
that the values equal the same graph computed in one thread.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own delayed graphs on an endpoint"

AFTER = """
import json
local = dask.compute(*cls, cls_3, excluded, scheduler="synchronous")
print(json.dumps({
    "values": [float(v) for v in values],
    "local": [float(v) for v in local[:-1]],
    "n_excluded": int(n_excluded),
    "local_excluded": int(local[-1]),
    "stats": adapter.stats,
}))
"""


def section_example() -> str:
    """The first Python block of the README's section on delayed graphs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"no section {SECTION!r} in the README"
    found = re.search(r"```python\n(.*?)```", text.split(SECTION, 1)[1], re.S)
    assert found, "no Python example in the README's section on delayed graphs"
    return found.group(1)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_readme_delayed_example_sends_every_marked_call_in_batches() -> None:
    code = section_example()
    assert "pyhf_dask.remote(" in code and "dask.annotate(pyhf_dask_remote=True)" in code
    proc = _run(code + AFTER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    stats = out["stats"]
    assert stats["calls"] == 5  # four marked calls and the annotated one; sum and < stay here
    assert stats["submitted"] == 2  # batch_size=3
    assert stats["failed"] == 0 and stats["retried"] == 0
    np.testing.assert_array_equal(out["values"], out["local"])
    assert out["n_excluded"] == out["local_excluded"]
    assert lines[-2].startswith(f"{out['n_excluded']} {{'submitted': 2")  # the README's print


def test_remote_is_exported_and_executors_stay_lazy() -> None:
    code = (
        "import sys, pyhf_dask, pyhf_dask.tasks\n"
        "assert pyhf_dask.remote is pyhf_dask.tasks.remote\n"
        "assert 'remote' in pyhf_dask.__all__\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyhf_dask.executors')))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
