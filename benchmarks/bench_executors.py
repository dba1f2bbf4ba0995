"""Executor overhead per task and wall time of a sbottom scan, per executor.

    python benchmarks/bench_executors.py --points 20 --trivial 200 \
        --executors synchronous,local,processes,distributed,parsl,endpoint-local
    python benchmarks/bench_executors.py --kernel jax --points 0 \
        --regions RegionA,RegionB,RegionC --executors local,distributed,parsl,endpoint-local

Overhead per task: ``--trivial`` tiny remote tasks (a no-op, one per submission) through
each scheduler, (wall time - startup) / tasks. Scan: the first ``--points`` points (0: all)
of each of ``--regions`` of the sbottom archive (code4/code4p) with ``--kernel``; the
startup of the engine is reported separately.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import dask
import numpy as np
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.executors import open_scheduler
from pyhf_dask.tasks import remote

ARCHIVE = str(SBOTTOM)


def noop(i: int) -> int:
    """A trivial task."""
    return i


def trivial_graph(n: int) -> list:
    # marked remote tasks, one submission each (batch-size 1), as fit tasks are sent
    return [dask.delayed(remote(noop))(i, dask_key_name=f"bench-noop-{i}") for i in range(n)]


def bench(
    executor: str,
    points: int,
    trivial: int,
    chunk: int | None,
    workers: int,
    kernel: str,
    regions: list[str],
) -> dict:
    scans = []
    for region in regions:
        grid = pyhf_dask.SignalGrid.from_path(ARCHIVE, region=region)
        if points:
            grid = grid.take(list(range(min(points, len(grid)))))
        scans.append(
            pyhf_dask.scan(
                grid,
                kernel=kernel,
                chunk_size=chunk,
                normsys_interpcode="code4",
                histosys_interpcode="code4p",
            )
        )
    t0 = time.perf_counter()
    with (
        dask.config.set({"pyhf-dask.executor.batch-size": 1}),
        open_scheduler(executor, workers=workers, check_versions=False) as scheduler,
    ):
        t1 = time.perf_counter()
        dask.compute(noop(0), scheduler=scheduler)  # warm up workers
        t2 = time.perf_counter()
        dask.compute(*trivial_graph(trivial), scheduler=scheduler)
        t3 = time.perf_counter()
        results = [lazy.compute(scheduler=scheduler) for lazy in scans]
        t4 = time.perf_counter()
    t5 = time.perf_counter()
    # status is a CF flag variable (int8): compare by name, not by value
    status = np.concatenate([pyhf_dask.status_names(ds.status) for ds in results])
    ok = int((status != "failed").sum())
    return {
        "executor": executor,
        "startup_s": t1 - t0 + t2 - t1,
        "per_task_ms": 1e3 * (t3 - t2) / trivial,
        "scan_s": t4 - t3,
        "shutdown_s": t5 - t4,
        "points": len(status),
        "ok": ok,
        "cls": np.concatenate([ds.CLs_obs.values for ds in results]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20, help="per region; 0: all")
    parser.add_argument("--kernel", default="pyhf")
    parser.add_argument("--regions", default="RegionA", help="e.g. RegionA,RegionB,RegionC")
    parser.add_argument("--trivial", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the kernel's")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--executors", default="synchronous,local,processes,distributed,parsl,endpoint-local"
    )
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| executor | startup s | overhead/task ms | scan s | points ok | CLs == sync |")
    print("|---|---|---|---|---|---|")
    ref = None
    for name in args.executors.split(","):
        r = bench(
            name,
            args.points,
            args.trivial,
            args.chunk_size,
            args.workers,
            args.kernel,
            args.regions.split(","),
        )
        ref = r["cls"] if ref is None else ref
        same = bool(np.array_equal(r["cls"], ref, equal_nan=True))
        print(
            f"| {name} | {r['startup_s']:.1f} | {r['per_task_ms']:.2f} | {r['scan_s']:.1f} "
            f"| {r['ok']}/{r['points']} | {same} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
