"""The seed notebook's flow with pyhf_dask: a simple model, a POI scan, the Brazil band and
the upper limit, checked against pyhf's own ``upper_limit``.

Run it (the plot needs the ``plot`` extra)::

    python examples/seed_workflow.py
    python examples/seed_workflow.py --plot brazil.png
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pyhf

import pyhf_dask
from pyhf_dask.grid import SignalGrid, signal_patch, simple_workspace

log = logging.getLogger("seed_workflow")

SIGNAL, BKG, BKG_UNC, OBSERVED = [12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0]


def signal_strength(scale: float) -> list[dict]:
    """Signal yields of the seed model scaled by ``scale`` (a module-level function, so that
    worker processes can import it)."""
    return signal_patch([s * scale for s in SIGNAL])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", help="write the Brazil band to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    workspace = simple_workspace(SIGNAL, BKG, BKG_UNC, OBSERVED)
    grid = SignalGrid.from_function(workspace, signal_strength, scale=[1.0])
    poi_values = np.linspace(0.0, 5.0, 21)
    ds = pyhf_dask.scan(grid, kernel="pyhf", poi_value=poi_values).compute()

    model = pyhf.simplemodels.uncorrelated_background(SIGNAL, BKG, BKG_UNC)
    data = OBSERVED + model.config.auxdata
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=poi_values)
    log.info(
        "observed upper limit on mu: %.4f (pyhf: %.4f)", float(ds.upper_limit_obs[0]), float(obs)
    )
    for band, ours, theirs in zip(ds.band.values, ds.upper_limit_exp[0].values, exp, strict=True):
        log.info("expected %+d sigma:        %.4f (pyhf: %.4f)", band, ours, float(theirs))
    if args.plot:
        from pyhf_dask.plots_poi import plot_brazil

        plot_brazil(ds, point=0, save_figure=args.plot)
        log.info("Brazil band written to %s", args.plot)


if __name__ == "__main__":
    main()
