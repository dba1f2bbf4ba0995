"""The 2021 pyhf + funcX demo, redone with pyhf_dask and the current Globus Compute API.

The original registered a function, sent one task per patch and polled with sleeps. Here
the scan is a lazy Dask graph: fit tasks (chunks of points) go to a Globus Compute
endpoint in batches, results stream back as they finish, failed tasks are retried, and
the result is an xarray Dataset written to netCDF.

    python examples/globus_compute_demo.py RegionA.tar.gz --endpoint <UUID>
    python examples/globus_compute_demo.py RegionA.tar.gz --local     # no Globus account

``--local`` runs the same packing on an in-process Globus Compute endpoint engine.
The endpoint needs the same pyhf_dask version installed (see deploy/GUIDE.md).
"""

from __future__ import annotations

import argparse
import logging
import time

import pyhf_dask
from pyhf_dask.executors import open_scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", help="HEPData archive, e.g. pyhf-ins1748602 probability models")
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--patch", default="sbottom_1300_*", help="glob of points to scan")
    parser.add_argument("--endpoint", help="Globus Compute endpoint UUID")
    parser.add_argument("--local", action="store_true", help="in-process endpoint engine")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--output", default="demo.nc")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    grid = pyhf_dask.SignalGrid.from_path(args.archive, region=args.region).select([args.patch])
    ds = pyhf_dask.scan(
        grid,
        kernel="pyhf",
        chunk_size=args.chunk_size,
        normsys_interpcode="code4",
        histosys_interpcode="code4p",
    )
    executor = "endpoint-local" if args.local or not args.endpoint else "globus"
    start = time.perf_counter()
    with open_scheduler(executor, endpoint=args.endpoint, workers=2, retries=2) as scheduler:
        ds = ds.compute(scheduler=scheduler)
    print(f"{len(grid)} points on {executor} in {time.perf_counter() - start:.1f} s")
    for name, cls in zip(ds.patch.values, ds.CLs_obs.values, strict=True):
        print(f"{name:28s} CLs_obs = {cls:.4f}")
    print(pyhf_dask.summarize(ds))
    pyhf_dask.to_netcdf(ds, args.output)


if __name__ == "__main__":
    main()
