"""Benchmark: pyhf's serial loop against the batched JAX kernel, in one process.

Examples:
    python benchmarks/bench_kernels.py --region RegionA --points 5
    python benchmarks/bench_kernels.py --archive-only      # JAX on all 650 sbottom points
    python benchmarks/bench_kernels.py --seed-grid 100     # 100 x 100 seed-model grid
    PYHF_DASK_JAX_CACHE=/tmp/new python benchmarks/bench_kernels.py --archive-only --log-compiles

``--log-compiles`` turns on ``jax_log_compiles`` and prints how many XLA compilations ran
and how long they took (functions taking over 0.2 s listed by name). "Cold" figures need
``PYHF_DASK_JAX_CACHE`` pointing to a new, empty folder.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import defaultdict

import numpy as np
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.grid import signal_patch, simple_workspace
from pyhf_dask.kernels import FitOptions, reference
from pyhf_dask.kernels.jax_kernel import hypotest_chunk

ARCHIVE = str(SBOTTOM)
SBOTTOM = FitOptions(normsys_interpcode="code4", histosys_interpcode="code4p").to_dict()


class CompileLog(logging.Handler):
    """Collects JAX's "Finished XLA compilation of NAME in T sec" log records."""

    _PATTERN = re.compile(r"Finished XLA compilation of (.+?) in ([0-9.eE+-]+) sec")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.times: dict[str, list[float]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        """Record one compilation."""
        match = self._PATTERN.search(record.getMessage())
        if match:
            self.times[match.group(1)].append(float(match.group(2)))

    def summary(self) -> str:
        """Number and seconds of the compilations, the slow ones by name."""
        every = [t for ts in self.times.values() for t in ts]
        slow = ", ".join(
            f"{name} {len(ts)}x {sum(ts):.1f} s"
            for name, ts in sorted(self.times.items())
            if max(ts) > 0.2
        )
        return f"XLA compilations: {len(every)} in {sum(every):.1f} s; slow: {slow or 'none'}"


def _log_compiles() -> CompileLog:
    import jax

    jax.config.update("jax_log_compiles", True)
    handler = CompileLog()
    jax_log = logging.getLogger("jax")
    jax_log.addHandler(handler)
    jax_log.propagate = False  # count, do not print every compilation
    return handler


def seed_signal(s1: float, s2: float) -> list[dict]:
    """Signal function of the seed grid (module-level, so workers can import it)."""
    return signal_patch([s1, s2])


def _max_diff(a: dict, b: dict) -> float:
    ok = (a["status"] != "failed") & (b["status"] != "failed")
    if not ok.any():
        return float("nan")
    return float(
        max(
            np.abs(a["CLs_obs"][ok] - b["CLs_obs"][ok]).max(),
            np.abs(a["CLs_exp"][ok] - b["CLs_exp"][ok]).max(),
        )
    )


def compare(region: str, n_points: int) -> None:
    """pyhf serial loop vs JAX kernel on the first ``n_points`` of a region."""
    grid = pyhf_dask.SignalGrid.from_path(ARCHIVE, region=region)
    patches = list(grid.patches[:n_points])
    start = time.perf_counter()
    ref = reference.hypotest_chunk(grid.workspace, patches, SBOTTOM)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    ours = hypotest_chunk(grid.workspace, patches, SBOTTOM)
    t_jax = time.perf_counter() - start
    print(f"{region}, {len(patches)} points")
    print(f"  pyhf serial (numpy+scipy): {t_ref:8.2f} s  {len(patches) / t_ref:8.3f} points/s")
    print(f"  JAX kernel (with compile): {t_jax:8.2f} s  {len(patches) / t_jax:8.3f} points/s")
    print(
        f"  speed-up {t_ref / t_jax:.1f}x, max |dCLs| {_max_diff(ref, ours):.2e}, "
        f"jax status {dict(zip(*np.unique(ours['status'], return_counts=True), strict=True))}"
    )


def archive() -> None:
    """JAX kernel on every sbottom point, one chunk per region."""
    total = 0
    start = time.perf_counter()
    for region in ("RegionA", "RegionB", "RegionC"):
        grid = pyhf_dask.SignalGrid.from_path(ARCHIVE, region=region)
        t0 = time.perf_counter()
        out = hypotest_chunk(grid.workspace, list(grid.patches), SBOTTOM)
        status = dict(zip(*np.unique(out["status"], return_counts=True), strict=True))
        print(f"  {region}: {len(grid)} points in {time.perf_counter() - t0:.2f} s, {status}")
        total += len(grid)
    wall = time.perf_counter() - start
    print(f"archive: {total} points in {wall:.2f} s ({total / wall:.1f} points/s)")


def seed_grid(n: int) -> None:
    """The 2-bin seed model over an ``n x n`` grid of signal yields."""
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    grid = pyhf_dask.SignalGrid.from_function(
        ws, seed_signal, s1=np.linspace(1, 30, n), s2=np.linspace(1, 30, n)
    )
    start = time.perf_counter()
    out = hypotest_chunk(
        grid.workspace, grid.chunk(0, len(grid)).materialize(), FitOptions().to_dict()
    )
    wall = time.perf_counter() - start
    status = dict(zip(*np.unique(out["status"], return_counts=True), strict=True))
    print(
        f"seed grid {n}x{n}: {len(grid)} points in {wall:.2f} s "
        f"({len(grid) / wall:.0f} points/s), {status}"
    )


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--archive-only", action="store_true")
    parser.add_argument("--seed-grid", type=int, default=0)
    parser.add_argument("--log-compiles", action="store_true")
    args = parser.parse_args()
    compiles = _log_compiles() if args.log_compiles else None
    if args.seed_grid:
        seed_grid(args.seed_grid)
    elif args.archive_only:
        archive()
    else:
        compare(args.region, args.points)
    if compiles is not None:
        print(compiles.summary())


if __name__ == "__main__":
    main()
