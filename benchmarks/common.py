"""What the benchmarks share: where they find the published likelihoods
(``$PYHF_DASK_DATA`` or the repository's own ``data/``) and the seed model's grid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyhf_dask.grid import SignalGrid

DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
SBOTTOM = DATA / "pyhf-ins1748602-probability-models.tar.gz"
EWK3L = DATA / "atlas-3L-eRJR-likelihood.tar.gz"


def seed_workspace() -> dict:
    """The 2-bin seed model (pyhf's ``uncorrelated_background``) with observed data."""
    from pyhf_dask.simplemodels import simple_workspace

    return simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])


def seed_signal(s1: float, s2: float) -> list[dict]:
    """Signal function of the seed grid: the patch setting the signal yields."""
    from pyhf_dask.simplemodels import signal_patch

    return signal_patch([s1, s2])


def seed_yields(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Vectorized signal function of the seed grid: the yields ``(n_points, 2)``."""
    return np.stack([s1, s2], axis=1)


def seed_grid(n: int, *, arrays: bool = False) -> SignalGrid:
    """The seed model over an ``n x n`` grid of signal yields from 1 to 30 (``arrays``: the
    signal given as yields by :func:`seed_yields`, else as patches by :func:`seed_signal`)."""
    from pyhf_dask.grid import SignalGrid

    axes = {"s1": np.linspace(1, 30, n), "s2": np.linspace(1, 30, n)}
    if arrays:
        return SignalGrid.from_function(
            seed_workspace(), seed_yields, sample="signal", vectorized=True, **axes
        )
    return SignalGrid.from_function(seed_workspace(), seed_signal, **axes)
