"""Every fit of the JAX kernel against pyhf's on the ATLAS 1Lbb likelihood, by -2 log L.

For each point (all 125 by default, or ``--points``/``--sample``), runs the JAX kernel's
five fits (POI = 0, free and POI = 1 on the data; free and POI = 1 on the Asimov data of
our POI = 0 fit) and, for each fit, pyhf's SciPy fit at tolerance 1e-10 started from
pyhf's default and from our solution (the lower kept). Our ``-2 log L`` is pyhf's own
(``-2 * model.logpdf``, NumPy backend) at our solution, so both sides are judged by the
same function; the Asimov fits of both use our Asimov data. Also prints ``CLs_obs`` from
``pyhf.infer.hypotest`` (tolerance 1e-10) and ours, and counts the points where ours is
lower than pyhf's own (default-start) answer in some fit, by more than 1e-6, and where
pyhf from either start gets lower than ours (none should).

Slow: pyhf takes about 20-60 s per point on 2 cores (11 fits of 126 parameters).

Example:
    python benchmarks/agreement_1lbb.py --points C1N2_Wh_hbb_450_50,C1N2_Wh_hbb_600_250
    python benchmarks/agreement_1lbb.py --sample 20 --seed 1 > /tmp/agreement_1lbb.txt
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pyhf_dask.kernels import FitOptions, jax_kernel
from pyhf_dask.kernels.asymptotics import cls_from_fits
from pyhf_dask.kernels.jax_batch import stack_models
from pyhf_dask.kernels.jax_model import apply_patch, build_dense, structure_key

HERE = Path(__file__).resolve().parents[1]
CANDIDATES = [
    Path(os.environ.get("PYHF_DASK_DATA") or HERE / "data") / "atlas-1Lbb-likelihood.tar.gz",
    HERE.parent / "shared" / "data" / "atlas-1Lbb-likelihood.tar.gz",
]
FITS = ("POI=0", "free", "POI=1", "Asimov free", "Asimov POI=1")
#: -2 log L differences below this are one answer.
TOLERANCE = 1e-6


def load(archive: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The background-only workspace and the patches (name -> patch) of the 1Lbb archive."""
    path = archive or next((p for p in CANDIDATES if p.exists()), None)
    if path is None:
        raise SystemExit(f"no 1Lbb archive in {', '.join(map(str, CANDIDATES))}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "1Lbb"
        ws = json.loads((root / "BkgOnly.json").read_text())
        patches = {
            p.name[len("patch_") : -len(".json")]: json.loads(p.read_text())
            for p in sorted(root.glob("patch_*.json"))
        }
    return ws, patches


def ours(ws: dict[str, Any], patches: list[Any]) -> tuple[dict[str, np.ndarray], list[Any]]:
    """The JAX kernel's fits of the points, in one batch, and their dense models."""
    options = FitOptions().to_dict()
    jax_kernel._configure_jax()
    dense = []
    for patch in patches:
        spec = apply_patch(ws, patch)
        dense.append(build_dense(spec, options, structure_key(spec, options)))
    res = jax_kernel._run_group(stack_models(dense), options, jax_kernel._device(None))
    return res, dense


def compare(spec: dict[str, Any], dense: Any, res: dict[str, np.ndarray], row: int) -> dict:
    """pyhf's fits of one point against ours: -2 log L per fit, CLs_obs of both."""
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = np.asarray(ws.data(model))
    sizes = [model.config.param_set(n).n_parameters for n in dense.par_names]
    offsets = np.cumsum([0, *sizes])

    def to_pyhf(x: np.ndarray) -> np.ndarray:
        theta = np.zeros(model.config.npars)
        for k, name in enumerate(dense.par_names):
            theta[model.config.par_slice(name)] = x[offsets[k] : offsets[k + 1]]
        return theta

    asimov = np.asarray(model.expected_data(to_pyhf(res["obs_theta"][row, 0])))
    fits = {
        "POI=0": (res["obs_theta"][row, 0], data, 0.0),
        "free": (res["obs_theta"][row, 1], data, None),
        "POI=1": (res["obs_theta"][row, 2], data, 1.0),
        "Asimov free": (res["asimov_theta"][row, 0], asimov, None),
        "Asimov POI=1": (res["asimov_theta"][row, 1], asimov, 1.0),
    }
    out: dict[str, Any] = {}
    start = time.perf_counter()
    for label, (x, fit_data, mu) in fits.items():
        mine = to_pyhf(x)
        at_ours = -2.0 * float(model.logpdf(mine, fit_data)[0])
        best = [np.inf, np.inf]  # from pyhf's default start; from either start
        for init in (None, mine.tolist()):
            try:
                with np.errstate(all="ignore"):
                    if mu is None:
                        _, v = pyhf.infer.mle.fit(
                            fit_data, model, init_pars=init, return_fitted_val=True
                        )
                    else:
                        _, v = pyhf.infer.mle.fixed_poi_fit(
                            mu, fit_data, model, init_pars=init, return_fitted_val=True
                        )
                if init is None:
                    best[0] = float(v)
                best[1] = min(best[1], float(v))
            except Exception:  # a failed SciPy fit: the other start may do
                continue
        out[label] = (at_ours, *best)
    with np.errstate(all="ignore"):
        out["CLs_pyhf"] = float(pyhf.infer.hypotest(1.0, data, model))
    out["pyhf_s"] = time.perf_counter() - start
    return out


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="", help="comma-separated names (C1N2_Wh_hbb_450_50)")
    parser.add_argument("--sample", type=int, default=0, help="random points (0: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--archive", type=Path, default=None)
    args = parser.parse_args()
    ws, patches = load(args.archive)
    names = sorted(patches)
    if args.points:
        names = args.points.split(",")
    elif args.sample:
        rng = np.random.default_rng(args.seed)
        names = sorted(rng.choice(names, size=min(args.sample, len(names)), replace=False))
    start = time.perf_counter()
    res, dense = ours(ws, [patches[n] for n in names])
    t_ours = time.perf_counter() - start
    cls_obs, _ = cls_from_fits(
        res["obs_value"],
        res["obs_muhat"],
        res["asimov_value"],
        res["asimov_muhat"],
        np.array([1.0]),
        "qtilde",
    )
    print(f"JAX kernel: {len(names)} points in {t_ours:.1f} s (one batch)", flush=True)
    head = " | ".join(FITS)
    print(
        f"-2lnL ours - pyhf's (default start) per fit; [ours - best of pyhf's two starts]\n"
        f"point | {head} | CLs_obs ours / pyhf | pyhf s",
        flush=True,
    )
    counts = {"ours lower": 0, "pyhf lower": 0, "same": 0}
    worst = -np.inf
    for row, name in enumerate(names):
        got = compare(apply_patch(ws, patches[name]), dense[row], res, row)
        diffs = [got[f][0] - got[f][1] for f in FITS]
        both = [got[f][0] - got[f][2] for f in FITS]
        worst = max(worst, *both)
        if max(both) > TOLERANCE:  # pyhf found lower than ours, from some start
            counts["pyhf lower"] += 1
        elif min(diffs) < -TOLERANCE:  # ours lower than pyhf's own answer
            counts["ours lower"] += 1
        else:
            counts["same"] += 1
        cells = " | ".join(f"{d:+.2e} [{b:+.1e}]" for d, b in zip(diffs, both, strict=True))
        ours_cls = float(cls_obs[row, 0])
        print(
            f"{name} | {cells} | {ours_cls:.6g} / {got['CLs_pyhf']:.6g} | {got['pyhf_s']:.0f}",
            flush=True,
        )
    print(
        f"{len(names)} points: ours lower than pyhf's in some fit at {counts['ours lower']}, "
        f"pyhf (either start) lower than ours by > {TOLERANCE:g} at {counts['pyhf lower']}, "
        f"the same at {counts['same']}; largest ours - best pyhf {worst:+.2e}"
    )


if __name__ == "__main__":
    main()
