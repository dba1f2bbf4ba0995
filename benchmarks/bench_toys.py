"""Toy-based CLs: pyhf_dask's batched JAX toys beside NextStat and pyhf's ToyCalculator.

Cases (issue 20):

* ``seed``: the seed model (``uncorrelated_background([12, 11], [50, 52], [3, 7])``, data
  [51, 48], POI 1, qtilde), one point, ``--seed-toys`` toys per hypothesis (10,000);
* ``sbottom``: RegionA ``sbottom_1300_205_60`` (64 parameters), ``--sbottom-toys`` (1,000).

For each, pyhf_dask's kernel runs twice in one process (the first run includes XLA's
compilation, the second is the warm time), NextStat's ``hypotest_toys`` runs in its own
environment (``--nextstat-python``, default ``/tmp/nsvenv/bin/python``; skipped when
absent) through a subprocess, and pyhf 0.7.6's ``ToyCalculator`` (``distributions`` +
``pvalues``) runs ``--pyhf-toys`` toys (default 100), its time scaled to the case's toy
count. Every tool prints CLs, CLsb, CLb and its seconds; note that the three do not draw
the same toys, and that NextStat keeps the auxiliary data fixed (docs/TOYS.md), so its
p-values differ from pyhf's and ours by more than their errors on models with constraints.

Run on a quiet machine for numbers to report; under load the times are not comparable.

Example:
    python benchmarks/bench_toys.py --cases seed --seed-toys 10000 --pyhf-toys 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import SBOTTOM, seed_workspace

from pyhf_dask.kernels import FitOptions, fit_chunk

_NEXTSTAT = r"""
import json, sys, time
import nextstat
ws = json.loads(sys.stdin.read())
model = nextstat.HistFactoryModel.from_workspace(json.dumps(ws))
start = time.perf_counter()
r = nextstat.hypotest_toys(1.0, model, n_toys=int(sys.argv[1]), seed=int(sys.argv[2]),
                           return_tail_probs=True, return_meta=True)
print(json.dumps({"seconds": time.perf_counter() - start, "CLs": r["cls"],
                  "CLsb": r["clsb"], "CLb": r["clb"]}))
"""


def _patched(workspace: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    import jsonpatch

    result: dict[str, Any] = jsonpatch.apply_patch(workspace, patch)
    return result


def case_inputs(case: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Background-only workspace and the point's patch of a case."""
    if case == "seed":
        from pyhf_dask.simplemodels import signal_patch

        return seed_workspace(), signal_patch([12.0, 11.0])
    import pyhf_dask

    grid = pyhf_dask.SignalGrid.from_path(str(SBOTTOM), region="RegionA")
    index = list(grid.names).index("sbottom_1300_205_60")
    return grid.workspace, list(grid.patches[index])


def ours(workspace: dict[str, Any], patch: list[Any], ntoys: int, seed: int) -> dict[str, Any]:
    """pyhf_dask's toys, cold (compilation included) and warm."""
    opts = FitOptions(calctype="toybased", ntoys=ntoys, seed=seed).to_dict()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        out = fit_chunk("jax", workspace, [patch], opts)
        times.append(time.perf_counter() - start)
    return {
        "cold_s": times[0],
        "seconds": times[1],
        "CLs": float(out["CLs_obs"][0, 0]),
        "CLs_err": float(out["CLs_obs_err"][0, 0]),
        "CLsb": float(out["CLsb_obs"][0, 0]),
        "CLb": float(out["CLb_obs"][0, 0]),
        "failed": int(out["ntoys_failed"][0, 0]),
        "status": str(out["status"][0]),
    }


def nextstat(full: dict[str, Any], ntoys: int, seed: int, python: str) -> dict[str, Any] | None:
    """NextStat's ``hypotest_toys`` in its own interpreter, or ``None`` without it."""
    if not Path(python).exists():
        return None
    proc = subprocess.run(
        [python, "-c", _NEXTSTAT, str(ntoys), str(seed)],
        input=json.dumps(full),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def pyhf_toys(full: dict[str, Any], ntoys: int, seed: int) -> dict[str, Any]:
    """pyhf's ``ToyCalculator`` (``distributions`` + ``pvalues``, numpy backend)."""
    import pyhf

    pyhf.set_backend("numpy")
    np.random.seed(seed)
    ws = pyhf.Workspace(full)
    model = ws.model()
    calc = pyhf.infer.calculators.ToyCalculator(
        ws.data(model), model, ntoys=ntoys, test_stat="qtilde", track_progress=False
    )
    start = time.perf_counter()
    q = calc.teststatistic(1.0)
    sb, b = calc.distributions(1.0)
    clsb, clb, cls = calc.pvalues(q, sb, b)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "CLs": float(cls), "CLsb": float(clsb), "CLb": float(clb)}


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="seed,sbottom")
    parser.add_argument("--seed-toys", type=int, default=10_000)
    parser.add_argument("--sbottom-toys", type=int, default=1_000)
    parser.add_argument("--pyhf-toys", type=int, default=100, help="0: skip pyhf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nextstat-python", default="/tmp/nsvenv/bin/python")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, load {os.getloadavg()}")
    for case in args.cases.split(","):
        ntoys = args.seed_toys if case == "seed" else args.sbottom_toys
        workspace, patch = case_inputs(case)
        full = _patched(workspace, patch)
        print(f"## {case}: {ntoys} toys per hypothesis", flush=True)
        mine = ours(workspace, patch, ntoys, args.seed)
        print(f"pyhf_dask  {json.dumps(mine)}", flush=True)
        theirs = nextstat(full, ntoys, args.seed, args.nextstat_python)
        if theirs is not None:
            print(f"nextstat   {json.dumps(theirs)}", flush=True)
            if "seconds" in theirs:
                print(f"  speed-up over NextStat: {theirs['seconds'] / mine['seconds']:.1f}x")
        if args.pyhf_toys:
            ref = pyhf_toys(full, args.pyhf_toys, args.seed)
            scaled = ref["seconds"] * ntoys / args.pyhf_toys
            print(f"pyhf       {json.dumps(ref)} ({args.pyhf_toys} toys; {scaled:.0f} s scaled)")
            print(f"  speed-up over pyhf (scaled): {scaled / mine['seconds']:.0f}x", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
