"""GPU figures of the JAX kernel: the seed model over a large grid, and a sample to check.

Runs in one process on JAX's default device (a GPU where one is visible)::

    python benchmarks/bench_gpu.py --seed-grid 1000 --sample 40 --out seed.json

Prints the device, the wall time of ``hypotest_chunk`` over the ``n x n`` seed grid
(with any compilation it needs; a smaller ``--warm`` grid can run first to compile),
the status counts, the largest CLs difference between this device and the CPU on a
random sample, and writes the sample (signal yields, CLs, status) as JSON so that pyhf
can be run on it elsewhere (``python benchmarks/bench_gpu.py --check seed.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import seed_grid, seed_workspace

from pyhf_dask.grid import materialize, signal_patch
from pyhf_dask.kernels import FitOptions
from pyhf_dask.kernels.jax_kernel import hypotest_chunk


def _run(n: int, arrays: bool) -> tuple[dict[str, np.ndarray], Any, float, float]:
    grid = seed_grid(n, arrays=arrays)
    start = time.perf_counter()
    patches = materialize(grid.chunk(0, len(grid)))
    t_patches = time.perf_counter() - start
    out = hypotest_chunk(grid.workspace, patches, FitOptions().to_dict())
    return out, patches, time.perf_counter() - start, t_patches


def _counts(status: np.ndarray) -> dict[str, int]:
    return {str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True), strict=True)}


def seed(n: int, sample: int, out_path: Path | None, warm: int, arrays: bool = False) -> None:
    """The seed grid on the default device, a sample compared with the CPU."""
    import jax

    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}; jax {jax.__version__}")
    if warm:
        _, _, wall, _ = _run(warm, arrays)
        print(f"warm-up grid {warm}x{warm}: {warm * warm} points in {wall:.2f} s")
    out, patches, wall, t_patches = _run(n, arrays)
    status = _counts(out["status"])
    given = "yields (vectorized)" if arrays else "patches"
    print(
        f"seed grid {n}x{n} from {given}: {n * n} points in {wall:.2f} s "
        f"({n * n / wall:.0f} points/s), {status}; signal function calls {t_patches:.2f} s"
    )
    rng = np.random.default_rng(7)
    pick = np.sort(rng.choice(n * n, size=min(sample, n * n), replace=False))
    chosen = [list(patches[int(i)]) for i in pick]
    options = FitOptions().to_dict()
    cpu = hypotest_chunk(seed_workspace(), chosen, {**options, "device": "cpu"})
    diff = max(
        float(np.nanmax(np.abs(cpu["CLs_obs"] - out["CLs_obs"][pick]))),
        float(np.nanmax(np.abs(cpu["CLs_exp"] - out["CLs_exp"][pick]))),
    )
    print(f"sample of {len(pick)}: max |CLs({device.platform}) - CLs(cpu)| = {diff:.2e}")
    if out_path is not None:
        rows = [
            {
                "signal": chosen[k][0]["value"],
                "CLs_obs": out["CLs_obs"][i].tolist(),
                "CLs_exp": out["CLs_exp"][i].tolist(),
                "status": str(out["status"][i]),
            }
            for k, i in enumerate(pick)
        ]
        result = {"device": device.device_kind, "points": n * n, "wall_s": wall}
        out_path.write_text(json.dumps({**result, "status": status, "sample": rows}))


def check(path: Path, tolerance: float | None) -> None:
    """pyhf's ``hypotest`` on a saved sample: the largest CLs difference."""
    import jsonpatch
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    saved = json.loads(path.read_text())
    worst = 0.0
    for row in saved["sample"]:
        ws = pyhf.Workspace(jsonpatch.apply_patch(seed_workspace(), signal_patch(row["signal"])))
        model = ws.model()
        obs, exp = pyhf.infer.hypotest(
            1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
        )
        worst = max(
            worst,
            abs(float(obs) - row["CLs_obs"][0]),
            float(np.max(np.abs(np.asarray(exp, dtype=float) - np.asarray(row["CLs_exp"][0])))),
        )
    print(
        f"{len(saved['sample'])} points of the {saved['device']} run against pyhf "
        f"(tolerance {tolerance}): max |dCLs| = {worst:.2e}"
    )


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-grid", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=0, help="a smaller grid first")
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--arrays", action="store_true", help="the grid given as yields")
    parser.add_argument("--check", type=Path, default=None, help="run pyhf on a saved sample")
    parser.add_argument("--tolerance", type=float, default=None, help="with --check")
    args = parser.parse_args()
    if args.check is not None:
        check(args.check, args.tolerance)
    else:
        seed(args.seed_grid, args.sample, args.out, args.warm, args.arrays)


if __name__ == "__main__":
    main()
