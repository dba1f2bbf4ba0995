"""Full comparison of the JAX kernel with pyhf on all 650 sbottom points (slow: about an hour).

Runs the reference kernel (pyhf, numpy + scipy) point by point and the JAX kernel per region,
then writes the largest |dCLs| (observed and every band member) per region and overall.

Example:
    nohup python benchmarks/compare_all.py --out benchmarks/compare_all.txt &
    python benchmarks/compare_all.py --reference RegionA=tests/data/regionA_pyhf.nc \
        --reference RegionB=regionB.zarr --reference RegionC=regionC.zarr
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import SBOTTOM

import pyhf_dask
from pyhf_dask.kernels import FitOptions, reference
from pyhf_dask.kernels.jax_kernel import hypotest_chunk

ARCHIVE = str(SBOTTOM)
OPTIONS = FitOptions(normsys_interpcode="code4", histosys_interpcode="code4p").to_dict()


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/compare_all.txt")
    parser.add_argument("--limit", type=int, default=0, help="points per region (0: all)")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="REGION=FILE",
        help="use a finished reference-kernel result (.nc or .zarr of `pyhf-dask scan "
        "--kernel pyhf` with code4/code4p) instead of refitting that region serially",
    )
    args = parser.parse_args()
    lines = []
    worst = 0.0
    for region in ("RegionA", "RegionB", "RegionC"):
        grid = pyhf_dask.SignalGrid.from_path(ARCHIVE, region=region)
        patches = list(grid.patches[: args.limit or None])
        t0 = time.perf_counter()
        ours = hypotest_chunk(grid.workspace, patches, OPTIONS)
        t_jax = time.perf_counter() - t0
        t0 = time.perf_counter()
        files = dict(item.split("=", 1) for item in args.reference)
        if region in files:
            ref = _load_reference(files[region], grid.names[: len(patches)])
        else:
            ref = reference.hypotest_chunk(grid.workspace, patches, OPTIONS)
        t_ref = time.perf_counter() - t0
        both = (ours["status"] != "failed") & (ref["status"] == "converged")
        d_obs = np.abs(ours["CLs_obs"][both] - ref["CLs_obs"][both])
        d_exp = np.abs(ours["CLs_exp"][both] - ref["CLs_exp"][both])
        diff = float(max(d_obs.max(initial=0.0), d_exp.max(initial=0.0)))
        worst = max(worst, diff)
        i = int(np.argmax(d_obs[:, 0])) if both.any() else -1
        names = np.asarray(grid.names[: len(patches)])[both]
        lines.append(
            f"{region}: {len(patches)} points, compared {int(both.sum())}, "
            f"max |dCLs_obs| {d_obs.max(initial=0.0):.3e} "
            f"({names[i] if i >= 0 else '-'}), max |dCLs_exp| {d_exp.max(initial=0.0):.3e}, "
            f"jax failed {int((ours['status'] == 'failed').sum())}, "
            f"pyhf failed {int((ref['status'] != 'converged').sum())}, "
            f"jax {t_jax:.1f} s, pyhf {t_ref:.1f} s"
        )
        print(lines[-1], flush=True)
    lines.append(f"overall max |dCLs| {worst:.3e}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(lines[-1])


def _load_reference(path: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """CLs and status of a stored reference result, in the order of ``names``."""
    import xarray as xr

    from pyhf_dask.results import as_str
    from pyhf_dask.store import open_store

    ds = open_store(path) if path.endswith(".zarr") else xr.load_dataset(path)
    if ds.attrs.get("kernel") != "pyhf" or ds.attrs.get("normsys_interpcode") != "code4":
        msg = f"{path}: not a reference-kernel result with code4/code4p"
        raise SystemExit(msg)
    order = {name: i for i, name in enumerate(as_str(ds.patch.values))}
    idx = [order[name] for name in names]
    return {
        "CLs_obs": ds.CLs_obs.values[idx][:, None],
        "CLs_exp": ds.CLs_exp.values[idx][:, None, :],
        "status": as_str(ds.status.values)[idx],
    }


if __name__ == "__main__":
    main()
