"""Peak memory and graph size of a large seed-model grid through the default executor.

Usage (from the repository root)::

    python benchmarks/bench_memory.py --points 10000 --kernel jax --workers 2

The seed model (``uncorrelated_background`` with signal [12, 11], background [50, 52],
uncertainties [3, 7], observed [51, 48]) is scanned over a regular grid of two signal
scales, through ``pyhf_dask.executors.open_scheduler("local")`` (a spawned process pool),
with every finished chunk written to a Zarr store. Printed: wall time, graph size, number
of chunks, peak resident memory of this (client) process and of the largest worker.
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import pyhf_dask
from pyhf_dask.executors import open_scheduler
from pyhf_dask.grid import SignalGrid, signal_patch, simple_workspace
from pyhf_dask.store import scan_to_store


def two_scale_signal(a: float, b: float) -> list[dict]:
    """Signal of the seed model with each bin scaled separately."""
    return signal_patch([12.0 * a, 11.0 * b])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None)
    args = parser.parse_args()

    side = math.isqrt(args.points)
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    grid = SignalGrid.from_function(
        ws, two_scale_signal, a=np.linspace(0.1, 3.0, side), b=np.linspace(0.1, 3.0, side)
    )
    lazy = pyhf_dask.scan(grid, kernel=args.kernel, chunk_size=args.chunk_size)
    graph_size = len(dict(lazy.__dask_graph__()))
    store = Path(tempfile.mkdtemp()) / "bench.zarr"
    start = time.perf_counter()
    with open_scheduler("local", workers=args.workers) as scheduler:
        ds = scan_to_store(
            grid, store, kernel=args.kernel, chunk_size=args.chunk_size, scheduler=scheduler
        )
    wall = time.perf_counter() - start
    summary = pyhf_dask.summarize(ds)
    client = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shutil.rmtree(store.parent)
    print(f"points            {len(grid)} ({side} x {side})")
    print(f"kernel            {ds.attrs['kernel']}, chunk size {ds.attrs['chunk_size']}")
    print(f"result            {summary}")
    print(
        f"graph tasks       {graph_size} for {math.ceil(len(grid) / ds.attrs['chunk_size'])} chunks"
    )
    print(f"wall time         {wall:.1f} s")
    print(f"peak RSS client   {client:.0f} MiB")
    print(f"peak RSS worker   {workers:.0f} MiB (largest child process)")


if __name__ == "__main__":
    main()
