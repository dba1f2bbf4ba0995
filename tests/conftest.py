"""Shared fixtures: the published likelihoods of data/ (or ``PYHF_DASK_DATA``), seed models."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

import pyhf_dask
from pyhf_dask.grid import scaled_signal, simple_workspace

#: The archives shipped in the repository's data/ folder; ``PYHF_DASK_DATA`` overrides.
DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
SBOTTOM = DATA / "pyhf-ins1748602-probability-models.tar.gz"
EWK3L = DATA / "atlas-3L-eRJR-likelihood.tar.gz"


@pytest.fixture(scope="session")
def sbottom_archive() -> Path:
    if not SBOTTOM.exists():
        pytest.fail(
            f"missing published likelihood {SBOTTOM} (see data/README.md; set PYHF_DASK_DATA)"
        )
    return SBOTTOM


@pytest.fixture(scope="session")
def ewk3l_archive() -> Path:
    if not EWK3L.exists():
        pytest.fail(
            f"missing published likelihood {EWK3L} (see data/README.md; set PYHF_DASK_DATA)"
        )
    return EWK3L


def _extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="session")
def sbottom_dir(sbottom_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _extract(sbottom_archive, tmp_path_factory.mktemp("sbottom"))


@pytest.fixture(scope="session")
def ewk3l_dir(ewk3l_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _extract(ewk3l_archive, tmp_path_factory.mktemp("ewk3l")) / "ATLAS-3L-eRJR"


@pytest.fixture(scope="session")
def seed_workspace() -> dict:
    """The seed notebook's model: uncorrelated_background with observed [51, 48]."""
    return simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])


@pytest.fixture
def seed_grid(seed_workspace: dict) -> pyhf_dask.SignalGrid:
    return pyhf_dask.SignalGrid.from_function(
        seed_workspace, scaled_signal, scale=[0.5, 1.0, 1.5, 2.0]
    )
