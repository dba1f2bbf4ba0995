"""Make the small committed result files of tests/data/ from the sbottom RegionA likelihoods.

``tests/data/regionA_pyhf.nc``: the full RegionA scan (217 points, POI = 1), pyhf kernel,
numpy backend, scipy optimizer, the analysis settings (normsys code4, histosys code4p,
qtilde, asymptotics), written by ``pyhf_dask.to_netcdf``; the same as

    pyhf-dask scan pyhf-ins1748602-probability-models.tar.gz --region RegionA \\
        --labels msb,mn2,mn1 --normsys-interpcode code4 --histosys-interpcode code4p \\
        --kernel pyhf -o regionA.nc

``tests/data/regionA_poi_scan.nc``: a POI scan (mu = 0.25 ... 3.0 in steps of 0.25) of the
three RegionA reference points, for the Brazil band and upper limits.

Usage (from the repository root; about 5 minutes on 2 cores):

    python benchmarks/make_regionA_result.py [--from regionA.nc] [--skip-poi-scan]

``--from`` reuses a finished full scan instead of running it again (its settings are checked).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import xarray as xr
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.executors import open_scheduler

ARCHIVE = SBOTTOM
OUT = Path(__file__).resolve().parents[1] / "tests" / "data"
SETTINGS = {"normsys_interpcode": "code4", "histosys_interpcode": "code4p", "kernel": "pyhf"}
REFERENCE = ("sbottom_1300_205_60", "sbottom_1400_950_60", "sbottom_1500_850_60")
POI_VALUES = [float(v) for v in np.arange(0.25, 3.01, 0.25)]

log = logging.getLogger("make_regionA_result")


def _run(grid: pyhf_dask.SignalGrid, **options: object) -> xr.Dataset:
    start = time.perf_counter()
    lazy = pyhf_dask.scan(grid, **SETTINGS, **options)  # type: ignore[arg-type]
    with open_scheduler("local") as scheduler:
        ds = lazy.compute(scheduler=scheduler)
    log.info("%s in %.0f s", pyhf_dask.summarize(ds), time.perf_counter() - start)
    return ds


def _check(ds: xr.Dataset) -> None:
    for name, value in SETTINGS.items():
        if name != "kernel" and ds.attrs.get(name) != value:
            msg = f"the result was made with {name}={ds.attrs.get(name)!r}, not {value!r}"
            raise SystemExit(msg)
    if ds.sizes["point"] != 217:
        msg = f"expected the 217 RegionA points, found {ds.sizes['point']}"
        raise SystemExit(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--from", dest="source", type=Path, help="a finished RegionA result")
    parser.add_argument("--skip-poi-scan", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    OUT.mkdir(parents=True, exist_ok=True)
    grid = pyhf_dask.SignalGrid.from_path(
        args.archive, region="RegionA", labels=["msb", "mn2", "mn1"]
    )
    if args.source is not None:
        with xr.open_dataset(args.source) as opened:
            full = opened.load()
    else:
        full = _run(grid)
    _check(full)
    pyhf_dask.to_netcdf(full, OUT / "regionA_pyhf.nc")
    for name in REFERENCE:
        row = full.where(full.patch == name, drop=True)
        log.info("%s: CLs_obs = %.4f", name, float(row.CLs_obs.values[0]))
    if not args.skip_poi_scan:
        poi = _run(grid.select(REFERENCE), poi_value=POI_VALUES)
        pyhf_dask.to_netcdf(poi, OUT / "regionA_poi_scan.nc")
        for name, limit in zip(poi.patch.values, poi.upper_limit_obs.values, strict=True):
            log.info("%s: observed upper limit %.3f", name, limit)
    for path in sorted(OUT.glob("regionA_*.nc")):
        log.info("wrote %s (%.0f kB)", path, path.stat().st_size / 1e3)


if __name__ == "__main__":
    main()
