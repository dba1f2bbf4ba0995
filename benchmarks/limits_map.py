"""The 650-point upper-limit map of the sbottom archive, timed, checked against pyhf.

Scans every point of the given regions over ``np.linspace(0, 5, 41)`` with the default
kernel and settings (``pyhf_dask.scan(...).compute()``, Dask's default scheduler), counts
the points with finite observed and expected limits, and compares a random sample of
points with ``pyhf.infer.intervals.upper_limits.upper_limit`` on the same scan (SciPy
tolerance 1e-10, pyhf's default interpolation codes). pyhf's limits take about a minute
per point: ``--reference-only`` computes them into ``--reference`` (a JSON file) so that
the timed scan can run on a quiet machine later.

Example:
    python benchmarks/limits_map.py --sample 10 --reference /tmp/ul.json --reference-only
    python benchmarks/limits_map.py --sample 10 --reference /tmp/ul.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.kernels.jax_model import apply_patch

SCAN = np.linspace(0, 5, 41)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", default="RegionA,RegionB,RegionC")
    parser.add_argument("--sample", type=int, default=10, help="points compared with pyhf")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference", type=Path, required=True, help="JSON of pyhf's limits")
    parser.add_argument("--reference-only", action="store_true")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="relative")
    parser.add_argument(
        "--inside",
        type=int,
        default=0,
        help="also compare this many random points whose limits lie inside the scan",
    )
    args = parser.parse_args()
    grids = {r: pyhf_dask.SignalGrid.from_path(SBOTTOM, region=r) for r in args.regions.split(",")}
    every = [(r, name) for r, g in grids.items() for name in g.names]
    rng = np.random.default_rng(args.seed)
    sample = [every[i] for i in sorted(rng.choice(len(every), args.sample, replace=False))]
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    for region, name in sample:
        key = f"{region}/{name}"
        if key not in reference:
            start = time.perf_counter()
            reference[key] = _pyhf_limits(grids[region], name)
            args.reference.write_text(json.dumps(reference, indent=1))
            print(f"pyhf {key}: {reference[key]} ({time.perf_counter() - start:.0f} s)")
    if args.reference_only:
        return
    start = time.perf_counter()
    results = {}
    for region, grid in grids.items():
        t = time.perf_counter()
        results[region] = pyhf_dask.scan(grid, poi_value=SCAN).compute()
        print(f"{region}: {len(grid.names)} points in {time.perf_counter() - t:.1f} s", flush=True)
    wall = time.perf_counter() - start
    n_points = sum(ds.sizes["point"] for ds in results.values())
    with_limits = sum(
        int(
            (
                np.isfinite(ds["upper_limit_obs"].values)
                & np.isfinite(ds["upper_limit_exp"].values).all(axis=-1)
            ).sum()
        )
        for ds in results.values()
    )
    print(f"{n_points} points x {len(SCAN)} POI values in {wall:.1f} s; {with_limits} with limits")
    for region, ds in results.items():
        print(f"  {region}: {pyhf_dask.summarize(ds)}")
    if args.inside:
        inside = [
            (region, str(name))
            for region, ds in results.items()
            for name, obs in zip(ds["point"].values, ds["upper_limit_obs"].values, strict=True)
            if 0 < obs < SCAN[-1] and (region, str(name)) not in sample
        ]
        picks = rng.choice(len(inside), min(args.inside, len(inside)), replace=False)
        for i in sorted(picks):
            region, name = inside[i]
            key = f"{region}/{name}"
            if key not in reference:
                reference[key] = _pyhf_limits(grids[region], name)
                args.reference.write_text(json.dumps(reference, indent=1))
            sample.append((region, name))
    worst = 0.0
    for region, name in sample:
        ds = results[region]
        one = ds.sel(point=name)
        ours = [float(one["upper_limit_obs"]), *map(float, one["upper_limit_exp"].values)]
        theirs = reference[f"{region}/{name}"]
        rel = float(np.max(np.abs(np.array(ours) - theirs) / np.abs(theirs)))
        worst = max(worst, rel)
        flag = "" if rel <= args.tolerance else "  <-- differs"
        print(f"  {region} {name}: obs {ours[0]:.6f} pyhf {theirs[0]:.6f}; max rel {rel:.1e}{flag}")
    print(f"sample of {len(sample)}: largest relative difference {worst:.1e}")


def _pyhf_limits(grid: pyhf_dask.SignalGrid, name: str) -> list[float]:
    """pyhf's observed and expected limits of one point (expected in ``band``'s order)."""
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    spec = apply_patch(grid.workspace, grid.patches[list(grid.names).index(name)])
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    with np.errstate(all="ignore"):
        obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=SCAN)
    return [float(obs), *map(float, exp)]


if __name__ == "__main__":
    main()
