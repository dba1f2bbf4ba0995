"""The ATLAS 3L eRJR likelihood, where pyhf's SciPy fits stop after one iteration.

Its shapesys constraints have tau near 1e12: summed as raw Poisson log-likelihoods they are
about 1e13 and their rounding swamps every change a fit makes. As exact deviances the JAX
fits certify a minimum (KKT residual, curvature, consistency of the five fits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyhf_dask
from pyhf_dask.kernels import FitOptions

pytest.importorskip("jax")


def test_ewk3l_points_converge(ewk3l_dir: Path) -> None:
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    grid = pyhf_dask.SignalGrid.from_patchset(
        ewk3l_dir / "BkgOnly.json", ewk3l_dir / "patchset.json"
    )
    names = ["ERJR_100p0_20p0", "ERJR_110p0_20p0"]
    patches = [grid.patches[grid.names.index(n)] for n in names]
    out = hypotest_chunk(grid.workspace, patches, FitOptions().to_dict())
    for i, name in enumerate(names):
        assert out["status"][i] == "converged", (name, out["message"][i])
        assert 0.0 < out["CLs_obs"][i, 0] < 1.0
        assert np.all(np.diff(out["CLs_exp"][i, 0]) > 0)  # -2 sigma .. +2 sigma increasing
