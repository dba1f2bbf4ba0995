"""RegionA through the command line against NextStat's loop, measured in the same run.

NextStat (Rust, reads pyhf JSON) is a peer to beat, never a dependency: it runs from its own
virtual environment, given by ``--nextstat-python`` (made with
``python -m venv /tmp/nsvenv && /tmp/nsvenv/bin/pip install nextstat numpy``).

Usage (from the repository root)::

    python benchmarks/bench_nextstat.py --nextstat-python /tmp/nsvenv/bin/python

NextStat is looped as a user would: per point, the patched workspace as JSON,
``nextstat.from_pyhf(...)`` and ``nextstat.hypotest(1.0, model)`` (asymptotic qtilde,
observed CLs only), with one Rayon thread, first as one process over all points, then as two
processes over half the points each (both cores). ``pyhf-dask scan`` computes observed CLs
and the expected band, with its default executor, in a new process, twice with a warm JAX
cache (the second run is reported). Printed: each time, the ratios, and the largest
difference of observed CLs between the two tools.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SBOTTOM

_WORKER = r"""
import json, sys, time
import nextstat
nextstat.set_threads(1)
tasks = json.load(open(sys.argv[1]))
start = time.perf_counter()
out = {}
for name, text in tasks.items():
    model = nextstat.from_pyhf(text)
    out[name] = float(nextstat.hypotest(1.0, model))
json.dump({"seconds": time.perf_counter() - start, "cls": out}, open(sys.argv[2], "w"))
"""


def _patched(region: str) -> dict[str, str]:
    """Point name -> patched workspace JSON of one sbottom region."""
    import jsonpatch

    from pyhf_dask.grid import SignalGrid

    grid = SignalGrid.from_path(SBOTTOM, region=region, labels=["msb", "mn2", "mn1"])
    out = {}
    for name, patch in zip(grid.names, grid.patches, strict=True):
        out[str(name)] = json.dumps(jsonpatch.apply_patch(grid.workspace, list(patch)))
    return out


def _nextstat(python: str, tasks: dict[str, str], processes: int, tmp: Path) -> tuple[float, dict]:
    """Wall seconds of ``processes`` NextStat loops over ``tasks`` split evenly, and CLs."""
    script = tmp / "ns_worker.py"
    script.write_text(_WORKER)
    names = list(tasks)
    parts = [names[i::processes] for i in range(processes)]
    procs = []
    start = time.perf_counter()
    for i, part in enumerate(parts):
        src, dst = tmp / f"in{i}.json", tmp / f"out{i}.json"
        src.write_text(json.dumps({n: tasks[n] for n in part}))
        procs.append((subprocess.Popen([python, str(script), str(src), str(dst)]), dst))
    cls: dict[str, float] = {}
    for proc, dst in procs:
        if proc.wait() != 0:
            sys.exit(f"NextStat worker failed with status {proc.returncode}")
        cls.update(json.loads(dst.read_text())["cls"])
    return time.perf_counter() - start, cls


def _cli(region: str, tmp: Path, env: dict[str, str]) -> tuple[float, Path]:
    out = tmp / f"{region}.nc"
    cmd = [sys.executable, "-m", "pyhf_dask", "scan", str(SBOTTOM), "--region", region]
    cmd += ["--labels", "msb,mn2,mn1", "-o", str(out), "--overwrite", "--no-table"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nextstat-python", required=True, help="python of NextStat's venv")
    parser.add_argument("--region", default="RegionA")
    args = parser.parse_args()
    import xarray as xr

    from pyhf_dask.results import point_names

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        env = dict(os.environ, PYHF_DASK_JAX_CACHE=str(tmp / "cache"))
        tasks = _patched(args.region)
        print(f"{args.region}: {len(tasks)} points, {os.cpu_count()} cores")
        one, cls = _nextstat(args.nextstat_python, tasks, 1, tmp)
        print(f"  NextStat loop, 1 process:   {one:7.2f} s ({one / len(tasks) * 1e3:.0f} ms/point)")
        two, _ = _nextstat(args.nextstat_python, tasks, 2, tmp)
        print(f"  NextStat loop, 2 processes: {two:7.2f} s")
        cold, _ = _cli(args.region, tmp, env)
        print(f"  pyhf-dask scan, cold:       {cold:7.2f} s")
        warm = []
        for _ in range(2):
            seconds, out = _cli(args.region, tmp, env)
            warm.append(seconds)
        print(f"  pyhf-dask scan, warm:       {warm[-1]:7.2f} s (runs: {warm})")
        print(f"  ratio warm vs NextStat 1 process:   {one / warm[-1]:.1f}x")
        print(f"  ratio warm vs NextStat 2 processes: {two / warm[-1]:.1f}x")
        with xr.open_dataset(out) as ds:
            names = point_names(ds)
            ours = {str(p): float(v) for p, v in zip(names, ds.CLs_obs.values.ravel(), strict=True)}
        diff = [abs(ours[n] - cls[n]) for n in cls if n in ours and np.isfinite(ours[n])]
        print(f"  largest |CLs_obs difference| over {len(diff)} points: {max(diff):.2e}")


if __name__ == "__main__":
    main()
