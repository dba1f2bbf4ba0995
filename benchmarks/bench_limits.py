"""Upper limits by root search through the command line against pyhf's serial search.

Usage (from the repository root)::

    python benchmarks/bench_limits.py                    # RegionA (217 points), 5 pyhf points
    python benchmarks/bench_limits.py --region RegionB --pyhf-sample 3
    python benchmarks/bench_limits.py --patch 'sbottom_1[34]00_*' --pyhf-sample 1  # quick

Measured in one run:

* ``pyhf-dask scan ARCHIVE --region R --upper-limit root -o out.nc --no-table`` in a new
  process (start, imports, compilation from the warm cache, the fits, the write), default
  executor, twice: the first run fills the JAX compilation cache (cold), the second reads
  it (warm);
* pyhf's ``upper_limit(data, model, scan=None)`` (NumPy backend, pyhf's default SciPy
  optimizer and tolerance: what a user runs) point by point on ``--pyhf-sample`` points
  spread over the grid, the mean scaled to every point;
* the fits per point: the root search's (each point's message says how many), plus the
  hypothesis test at POI = 1 that every scan makes (5 fits), against a 41-value POI grid
  (3 shared fits + 2 per value = 85), and how far the 41-value grid's interpolated
  limits (POI 0 to 10) lie from the root-searched ones (the grid's precision: linear
  interpolation of CLs between grid values).

Printed as a Markdown table for BENCHMARKS.md; say under which load it ran.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.grid import materialize

#: Fits of one hypothesis test at one POI value (POI=0 and free on the data, the POI value
#: on the data, free and the POI value on the Asimov data).
HYPOTEST_FITS = 5
#: A POI grid of 41 values: 3 shared fits + 2 per value.
GRID_VALUES = 41


def cli_scan(args: argparse.Namespace, out: Path, extra: list[str], cache: Path) -> float:
    """Seconds of one ``pyhf-dask scan`` in a new process."""
    command = [
        sys.executable,
        "-m",
        "pyhf_dask",
        "scan",
        str(args.archive),
        "--region",
        args.region,
        "-o",
        str(out),
        "--no-table",
        *extra,
    ]
    for pattern in args.patch:
        command += ["--patch", pattern]
    env = {**os.environ, "PYHF_DASK_JAX_CACHE": str(cache)}
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def pyhf_serial(grid: pyhf_dask.SignalGrid, sample: int) -> tuple[float, int]:
    """Mean seconds of pyhf's ``upper_limit(scan=None)`` per point, and the points timed."""
    import pyhf

    from pyhf_dask.kernels import FitOptions
    from pyhf_dask.kernels.reference import build_model

    pyhf.set_backend("numpy")
    patches = materialize(grid.chunk(0, len(grid)))
    pick = np.unique(np.linspace(0, len(grid) - 1, sample).round().astype(int))
    options = FitOptions().to_dict()
    start = time.perf_counter()
    for i in pick:
        model, data = build_model(grid.workspace, patches[int(i)], options)
        pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=None)
    return (time.perf_counter() - start) / len(pick), len(pick)


def _counts(names: np.ndarray) -> dict[str, int]:
    kinds, counts = np.unique(names, return_counts=True)
    return {str(k): int(v) for k, v in zip(kinds, counts, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=SBOTTOM)
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--patch", action="append", default=[], help="patch name glob")
    parser.add_argument("--pyhf-sample", type=int, default=5)
    parser.add_argument("--grid", action="store_true", help="also time a 41-value POI grid")
    args = parser.parse_args()

    grid = pyhf_dask.SignalGrid.from_path(args.archive, region=args.region)
    if args.patch:
        grid = grid.select(args.patch)
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "jax", Path(tmp) / "limits.nc"
        cold = cli_scan(args, out, ["--upper-limit", "root"], cache)
        warm = cli_scan(args, out, ["--upper-limit", "root"], cache)
        ds = xr.load_dataset(out)
        grid_ds = None
        grid_time = float("nan")
        if args.grid:
            values = [f"{v:g}" for v in np.linspace(0.0, 10.0, GRID_VALUES)]
            grid_out = Path(tmp) / "grid.nc"
            extra = [x for v in values for x in ("--poi-value", v)]
            grid_time = cli_scan(args, grid_out, extra, cache)
            grid_ds = xr.load_dataset(grid_out)
    fits = np.array(
        [
            int(m.group(1))
            for m in map(re.compile(r"limits: (\d+) fits").search, ds.message.values.astype(str))
            if m
        ]
    )
    per_point, n_timed = pyhf_serial(grid, args.pyhf_sample)
    n = len(grid)
    status = pyhf_dask.status_names(ds.status)
    print(f"| {args.region}, {n} points | seconds |")
    print("|---|---|")
    print(f"| `pyhf-dask scan --upper-limit root`, cold JAX cache | {cold:.1f} |")
    print(f"| `pyhf-dask scan --upper-limit root`, warm | {warm:.1f} |")
    print(
        f"| pyhf `upper_limit(scan=None)`, serial, {n_timed} points scaled to {n} "
        f"| {per_point * n:.0f} ({per_point:.1f} per point) |"
    )
    print(f"| speed-up (warm) | {per_point * n / warm:.0f}x |")
    if args.grid:
        what = f"`pyhf-dask scan` with a {GRID_VALUES}-value POI grid 0..10, warm"
        print(f"| {what} | {grid_time:.1f} |")
    print()
    print(
        f"points: {_counts(status)}, "
        f"limit_status: {np.bincount(ds.limit_status.values, minlength=4).tolist()}"
    )
    if fits.size:
        print(
            f"fits per point: root search {np.median(fits):.0f} median ({fits.min()}-{fits.max()})"
            f" + {HYPOTEST_FITS} of the test at POI = 1; a {GRID_VALUES}-value grid: "
            f"{3 + 2 * GRID_VALUES}"
        )
    if grid_ds is not None:
        for name in ("upper_limit_obs", "upper_limit_exp"):
            root, lin = ds[name].values, grid_ds[name].values
            rel = np.abs(lin - root) / root
            rel = rel[np.isfinite(rel)]
            print(
                f"{name}: {GRID_VALUES}-value grid vs root search, relative difference "
                f"median {np.median(rel):.1e}, max {rel.max():.1e} (root search rtol 1e-4)"
            )


if __name__ == "__main__":
    main()
