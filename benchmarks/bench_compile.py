"""Compilation time of the batched fit (``jax_fit.fit_batch``) per sbottom region shape.

Usage (from the repository root)::

    python benchmarks/bench_compile.py                          # CPU, code4/code4p
    python benchmarks/bench_compile.py --device gpu --rows 1024
    python benchmarks/bench_compile.py --codes code1,code0 --regions RegionA

No cache is used (``PYHF_DASK_JAX_CACHE=off``): each region's fit is traced, lowered and
compiled afresh for a batch of ``--rows`` fits, as a cold worker does. Printed per region:
the padded dimensions, the seconds of tracing and lowering, of XLA's compilation, and the
size of the lowered module. The cold start of a scan is mostly this, once per shape.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["PYHF_DASK_JAX_CACHE"] = "off"

import numpy as np
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.kernels import FitOptions


def compile_region(region: str, codes: tuple[str, str], rows: int, device: str) -> None:
    """Trace, lower and compile ``fit_batch`` for the first points of ``region``."""
    import jax

    from pyhf_dask.kernels.jax_batch import _take
    from pyhf_dask.kernels.jax_fit import FitSettings, fit_batch
    from pyhf_dask.kernels.jax_vector import build_chunk, stack_groups

    grid = pyhf_dask.SignalGrid.from_path(SBOTTOM, region=region)
    options = FitOptions(normsys_interpcode=codes[0], histosys_interpcode=codes[1]).to_dict()
    groups, _ = build_chunk(grid.workspace, list(grid.patches[:8]), options)
    stack = stack_groups(groups)
    index = np.arange(len(stack.index))
    model = {k: _take(v, index, rows) for k, v in stack.arrays.items()}
    n_par = model["init"].shape[1]
    args = (
        model,
        model["init"],
        np.full(rows, 1e-3),
        np.zeros((rows, n_par), bool),
        model["data"],
        model["aux"],
        np.zeros(rows, bool),
        np.asarray(100),
    )
    args = jax.device_put(args, jax.devices(device)[0])
    settings = FitSettings(*codes)
    start = time.perf_counter()
    lowered = fit_batch.lower(*args, settings=settings)
    traced = time.perf_counter()
    lowered.compile()
    done = time.perf_counter()
    print(
        f"{region} {codes[0]}/{codes[1]} dims {stack.dims} on {device}: trace and lower "
        f"{traced - start:.2f} s, compile {done - traced:.2f} s, "
        f"module {len(lowered.as_text()) / 1e3:.0f} k characters",
        flush=True,
    )


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", default="RegionA,RegionB,RegionC")
    parser.add_argument("--codes", default="code4,code4p")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    normcode, histcode = args.codes.split(",")
    for region in args.regions.split(","):
        compile_region(region, (normcode, histcode), args.rows, args.device)


if __name__ == "__main__":
    main()
