"""The command line end to end against pyhf's serial loop, measured in the same run.

Usage (from the repository root)::

    python benchmarks/bench_cli.py                       # seed grid 100 x 100 and RegionA
    python benchmarks/bench_cli.py --seed-sample 1000 --region-sample 0

pyhf's loop is what a physicist runs point by point (as in the pyhf + funcX paper): one
``pyhf.Workspace``, then per point ``workspace.model(patches=[patch])``,
``workspace.data(model)`` and ``pyhf.infer.hypotest(1.0, ..., test_stat="qtilde",
return_expected_set=True)`` with the NumPy backend and pyhf's default optimizer and
``Model()`` settings. ``--seed-sample N`` / ``--region-sample N`` time the loop on N points
spread over the grid and scale the mean to every point (0: all points).

The command is ``pyhf-dask scan ... -o out.nc --no-table`` in a new process (process
start, imports, compilation, the fits and the netCDF write), with the default (``local``)
executor, timed three times: with a new, empty JAX compilation cache (cold), then twice
with that cache (warm). Printed: each time, and pyhf's loop over the command's time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import SBOTTOM, seed_workspace

import pyhf_dask
from pyhf_dask.simplemodels import signal_patch


def pyhf_loop(workspace: dict[str, Any], patches: list[list[dict]], sample: int) -> float:
    """Seconds of pyhf's serial loop over every patch (from ``sample`` of them if > 0)."""
    import pyhf

    pyhf.set_backend("numpy")
    pick = np.arange(len(patches))
    if 0 < sample < len(patches):
        pick = np.unique(np.linspace(0, len(patches) - 1, sample).round().astype(int))
    ws = pyhf.Workspace(workspace)
    start = time.perf_counter()
    for i in pick:
        model = ws.model(patches=[patches[i]])
        pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
    per_point = (time.perf_counter() - start) / len(pick)
    print(f"  pyhf serial: {per_point * 1e3:.1f} ms per point over {len(pick)} points")
    return per_point * len(patches)


EXTRA: list[str] = []  # options given to every command (--workers)


def cli_times(args: list[str], cache: Path, out: Path) -> list[float]:
    """Wall times of the command: cold (new cache), then warm twice."""
    exe = Path(sys.executable).with_name("pyhf-dask")
    env = {**os.environ, "PYHF_DASK_JAX_CACHE": str(cache)}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run(
            [str(exe), "scan", *args, *EXTRA, "-o", str(out), "--no-table"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"pyhf-dask failed ({done.returncode}): {done.stderr.strip()}")
        print(f"  {done.stdout.strip() or done.stderr.strip().splitlines()[-1]}")
    return times


def report(what: str, serial: float, times: list[float]) -> None:
    cold, warm = times[0], min(times[1:])
    print(
        f"{what}: pyhf serial {serial:.1f} s; pyhf-dask cold {cold:.2f} s "
        f"({serial / cold:.0f}x), warm {warm:.2f} s ({serial / warm:.0f}x; "
        f"runs {', '.join(f'{t:.2f}' for t in times[1:])} s)"
    )


def seed_case(side: int, sample: int, folder: Path) -> None:
    ws = seed_workspace()
    axis = np.linspace(1.0, 30.0, side)
    patches = [signal_patch([float(a), float(b)]) for a in axis for b in axis]
    digest = hashlib.sha256(json.dumps(ws, sort_keys=True).encode()).hexdigest()
    patchset = {
        "metadata": {
            "name": "seed",
            "description": "seed model, signal yields on a regular grid",
            "references": {"hepdata": "ins0000000"},
            "digests": {"sha256": digest},
            "labels": ["s1", "s2"],
        },
        "version": "1.0.0",
        "patches": [
            {"metadata": {"name": f"seed_{i}_{j}", "values": [i, j]}, "patch": p}
            for (i, j), p in zip(np.ndindex(side, side), patches, strict=True)
        ],
    }
    (folder / "bkg.json").write_text(json.dumps(ws))
    (folder / "patchset.json").write_text(json.dumps(patchset))
    print(f"seed grid {side} x {side} ({side * side} points)")
    serial = pyhf_loop(ws, patches, sample)
    args = [str(folder / "bkg.json"), str(folder / "patchset.json")]
    report(f"seed grid {side}x{side}", serial, cli_times(args, folder / "jax", folder / "s.nc"))


def region_case(region: str, sample: int, folder: Path) -> None:
    grid = pyhf_dask.SignalGrid.from_path(SBOTTOM, region=region)
    print(f"sbottom {region} ({len(grid)} points)")
    serial = pyhf_loop(grid.workspace, [list(p) for p in grid.patches], sample)
    args = [str(SBOTTOM), "--region", region]
    report(region, serial, cli_times(args, folder / f"jax-{region}", folder / "r.nc"))


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-side", type=int, default=100)
    parser.add_argument("--seed-sample", type=int, default=1000)
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--region-sample", type=int, default=0)
    parser.add_argument("--only", choices=["seed", "region"], default=None)
    parser.add_argument("--workers", type=int, default=None, help="pyhf-dask --workers")
    args = parser.parse_args()
    if args.workers is not None:
        EXTRA.extend(["--workers", str(args.workers)])
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, pyhf-dask options {EXTRA}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "seed"):
            seed_case(args.seed_side, args.seed_sample, Path(tmp))
        if args.only in (None, "region"):
            region_case(args.region, args.region_sample, Path(tmp))


if __name__ == "__main__":
    main()
