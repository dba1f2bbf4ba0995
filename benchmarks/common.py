"""Where the benchmarks find the published likelihoods: ``$PYHF_DASK_DATA`` or the
repository's own ``data/``."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
SBOTTOM = DATA / "pyhf-ins1748602-probability-models.tar.gz"
EWK3L = DATA / "atlas-3L-eRJR-likelihood.tar.gz"
