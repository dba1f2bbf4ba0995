"""Benchmark: pyhf's serial loop against the batched JAX kernel, in one process.

Examples:
    python benchmarks/bench_kernels.py --region RegionA --points 5
    python benchmarks/bench_kernels.py --archive-only      # JAX on all 650 sbottom points
    python benchmarks/bench_kernels.py --seed-grid 100     # 100 x 100 seed-model grid
    python benchmarks/bench_kernels.py --seed-grid 316 --host   # 1e5 points, host share
    python benchmarks/bench_kernels.py --build-only --seed-grid 316   # model building only
    python benchmarks/bench_kernels.py --build-only --seed-grid 316 --arrays   # from yields
    python benchmarks/bench_kernels.py --build-only                   # same, sbottom archive
    PYHF_DASK_JAX_CACHE=/tmp/new python benchmarks/bench_kernels.py --archive-only --log-compiles

``--host`` times the host's model building inside the kernel (``build_chunk`` and
``stack_groups`` of :mod:`pyhf_dask.kernels.jax_vector`) against the kernel's wall time.
``--seed-grid`` also prints the peak resident memory of the process (``VmHWM``).
``--arrays`` defines the seed grid by a vectorized signal function that returns yields
(``from_function(..., sample="signal", vectorized=True)``) instead of one patch per point.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import SBOTTOM, seed_workspace
from common import seed_grid as seed_grid_of

import pyhf_dask
from pyhf_dask.grid import materialize, signal_patch
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


def archive(codes: str = "code4,code4p", repeat: int = 1) -> None:
    """JAX kernel on every sbottom point, one chunk per region (``codes``: normsys,histosys).

    ``repeat`` > 1 runs the archive again in the same process (compiled functions kept).
    """
    for _ in range(repeat):
        _archive_once(codes)


def _archive_once(codes: str) -> None:
    normcode, histcode = codes.split(",")
    options = FitOptions(normsys_interpcode=normcode, histosys_interpcode=histcode).to_dict()
    total = 0
    start = time.perf_counter()
    for region in ("RegionA", "RegionB", "RegionC"):
        grid = pyhf_dask.SignalGrid.from_path(ARCHIVE, region=region)
        t0 = time.perf_counter()
        out = hypotest_chunk(grid.workspace, list(grid.patches), options)
        status = dict(zip(*np.unique(out["status"], return_counts=True), strict=True))
        print(f"  {region}: {len(grid)} points in {time.perf_counter() - t0:.2f} s, {status}")
        total += len(grid)
    wall = time.perf_counter() - start
    print(f"archive: {total} points in {wall:.2f} s ({total / wall:.1f} points/s)")


class HostTimer:
    """Wraps the kernel's host-side model building and adds up its time."""

    def __init__(self) -> None:
        from pyhf_dask.kernels import jax_kernel

        self.seconds: dict[str, float] = defaultdict(float)
        self._kernel = jax_kernel
        for name in ("build_chunk", "stack_groups"):
            setattr(jax_kernel, name, self._timed(name, getattr(jax_kernel, name)))

    def _timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed

    def total(self) -> float:
        """Seconds of host model building so far."""
        return sum(self.seconds.values())


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux ``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def seed_grid(n: int, *, host: bool = False, arrays: bool = False) -> None:
    """The 2-bin seed model over an ``n x n`` grid of signal yields (``arrays``: given as
    yields by a vectorized function, not as patches)."""
    start = time.perf_counter()
    grid = seed_grid_of(n, arrays=arrays)
    t_grid = time.perf_counter() - start
    timer = HostTimer() if host else None
    start = time.perf_counter()
    patches = materialize(grid.chunk(0, len(grid)))
    t_patches = time.perf_counter() - start
    out = hypotest_chunk(grid.workspace, patches, FitOptions().to_dict())
    wall = time.perf_counter() - start
    status = dict(zip(*np.unique(out["status"], return_counts=True), strict=True))
    print(
        f"seed grid {n}x{n}: {len(grid)} points in {wall:.2f} s "
        f"({len(grid) / wall:.0f} points/s), {status}"
    )
    if timer is not None:
        build = timer.total()
        print(
            f"  host model building {build:.2f} s = {build / wall:.1%} of the wall time "
            f"({build / len(grid) * 1e6:.2f} us per point; "
            + ", ".join(f"{k} {v:.2f} s" for k, v in timer.seconds.items())
            + f"); signal function calls {t_patches:.2f} s "
            f"({t_patches / len(grid) * 1e6:.2f} us per point); grid built in {t_grid:.2f} s "
            f"({t_grid / len(grid) * 1e6:.2f} us per point)"
        )
    print(f"  peak resident memory {peak_rss_mib():.0f} MiB")


def _per_point_build(workspace: dict, patches: list, options: dict) -> None:
    """The per-point builder as the kernel ran it before issue 9 (build, pad, stack)."""
    from pyhf_dask.kernels.jax_batch import MODEL_FIELDS, pad_model, padded_dims
    from pyhf_dask.kernels.jax_model import apply_patch, build_dense, structure_key

    models = []
    for patch in patches:
        try:
            spec = apply_patch(workspace, patch)
            models.append(build_dense(spec, options, structure_key(spec, options)))
        except Exception:  # unsupported points are not built
            continue
    dims = padded_dims(models)
    padded = [pad_model(m, dims) for m in models]
    {k: np.stack([p[k] for p in padded]) for k in MODEL_FIELDS}


def build_only(n: int, *, arrays: bool = False) -> None:
    """Host model building per point: vectorised against the per-point builder.

    With ``arrays`` (seed grid only), the chunk is the function grid's recipe: making its
    yields (the signal function's call) is timed with the building; the grid's own
    construction (names, coordinates, the check of every point's yields) is printed apart.
    """
    from pyhf_dask.kernels.jax_vector import build_chunk, stack_groups

    chunks: list[tuple[dict, Any]]
    if n and arrays:
        start = time.perf_counter()
        grid = seed_grid_of(n, arrays=True)
        t_grid = time.perf_counter() - start
        print(f"grid built in {t_grid:.2f} s ({t_grid / len(grid) * 1e6:.2f} us per point)")
        chunks = [(grid.workspace, grid.chunk(0, len(grid)))]
        what, options = f"seed grid {n}x{n} from yields", FitOptions().to_dict()
    elif n:
        axis = np.linspace(1, 30, n)
        chunks = [(seed_workspace(), [signal_patch([a, b]) for a in axis for b in axis])]
        what, options = f"seed grid {n}x{n}", FitOptions().to_dict()
    else:
        grids = [
            pyhf_dask.SignalGrid.from_path(ARCHIVE, region=r)
            for r in ("RegionA", "RegionB", "RegionC")
        ]
        chunks = [(g.workspace, list(g.patches)) for g in grids]
        what, options = "sbottom archive", SBOTTOM
    points = sum(len(materialize(p)) for _, p in chunks)
    times = {}
    for name, func in (
        ("vectorised", lambda w, p: stack_groups(build_chunk(w, p, options)[0])),
        ("per point", lambda w, p: _per_point_build(w, p, options)),
    ):
        start = time.perf_counter()
        for ws_, patches in chunks:
            func(ws_, materialize(patches))
        times[name] = time.perf_counter() - start
    print(
        f"{what}, {points} points, host model building per point: "
        + ", ".join(f"{k} {v / points * 1e6:.1f} us" for k, v in times.items())
    )


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="RegionA")
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--archive-only", action="store_true")
    parser.add_argument("--codes", default="code4,code4p", help="with --archive-only")
    parser.add_argument("--repeat", type=int, default=1, help="with --archive-only")
    parser.add_argument("--seed-grid", type=int, default=0)
    parser.add_argument("--host", action="store_true", help="time host model building")
    parser.add_argument("--build-only", action="store_true", help="model building only")
    parser.add_argument("--arrays", action="store_true", help="seed grid given as yields")
    parser.add_argument("--log-compiles", action="store_true")
    args = parser.parse_args()
    compiles = _log_compiles() if args.log_compiles else None
    if args.build_only:
        build_only(args.seed_grid, arrays=args.arrays)
    elif args.seed_grid:
        seed_grid(args.seed_grid, host=args.host, arrays=args.arrays)
    elif args.archive_only:
        archive(args.codes, args.repeat)
    else:
        compare(args.region, args.points)
    if compiles is not None:
        print(compiles.summary())


if __name__ == "__main__":
    main()
