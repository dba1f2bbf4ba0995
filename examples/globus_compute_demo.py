"""The 2021 pyhf + funcX demo, redone with pyhf_dask and the current Globus Compute API.

The original registered a function, sent one task per patch and polled with sleeps. Here
the scan is a lazy Dask graph: fit tasks (chunks of points) go to a Globus Compute
endpoint in batches, results stream back as they finish, failed tasks are retried, and
the result is an xarray Dataset written to netCDF.

    python examples/globus_compute_demo.py --endpoint <UUID>
    python examples/globus_compute_demo.py --local        # no Globus account
    python examples/globus_compute_demo.py ARCHIVE.tar.gz --patch 'sbottom_1300_2*' --local -v

The archive defaults to the sbottom likelihoods shipped in data/ (HEPData ins1748602;
``PYHF_DASK_DATA=DIR`` reads it from DIR). ``--local`` runs the same packing on an
in-process Globus Compute endpoint engine. The endpoint needs the same pyhf_dask version
installed (see deploy/GUIDE.md). ``-v`` shows the libraries' INFO logs. ``--kernel`` picks
the fit kernel (``auto``: the batched JAX kernel when installed; ``pyhf``: pyhf itself, as
the 2021 demo ran, a few minutes for the 21 points). The results go to ``demo.nc``
(``--output``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import pyhf_dask
from pyhf_dask.executors import open_scheduler

#: The archive shipped with the repository; PYHF_DASK_DATA=DIR overrides its folder.
DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
ARCHIVE = DATA / "pyhf-ins1748602-probability-models.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "archive",
        nargs="?",
        default=str(ARCHIVE),
        help="HEPData archive [default: data/pyhf-ins1748602-probability-models.tar.gz]",
    )
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--patch", default="sbottom_1300_*", help="glob of points to scan")
    parser.add_argument("--endpoint", help="Globus Compute endpoint UUID")
    parser.add_argument("--local", action="store_true", help="in-process endpoint engine")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--kernel", default="auto", choices=["auto", "jax", "pyhf"])
    parser.add_argument("--output", default="demo.nc")
    parser.add_argument("-v", "--verbose", action="store_true", help="INFO logs of the libraries")
    args = parser.parse_args()
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # pyhf logs every modifier it adds at INFO
        for name in ("pyhf", "parsl", "globus_compute_endpoint", "globus_compute_sdk"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not Path(args.archive).exists():
        parser.error(f"{args.archive}: no such file (see data/README.md; set PYHF_DASK_DATA)")

    grid = pyhf_dask.SignalGrid.from_path(args.archive, region=args.region).select([args.patch])
    ds = pyhf_dask.scan(
        grid,
        kernel=args.kernel,
        chunk_size=args.chunk_size,
        normsys_interpcode="code4",
        histosys_interpcode="code4p",
    )
    executor = "endpoint-local" if args.local or not args.endpoint else "globus"
    start = time.perf_counter()
    with open_scheduler(executor, endpoint=args.endpoint, workers=2, retries=2) as scheduler:
        ds = ds.compute(scheduler=scheduler)
    print(f"{len(grid)} points on {executor} in {time.perf_counter() - start:.1f} s")
    for name, cls in zip(ds.point.values, ds.CLs_obs.values, strict=True):
        print(f"{name:28s} CLs_obs = {cls:.4g}")
    print(pyhf_dask.summarize(ds))
    pyhf_dask.to_netcdf(ds, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
