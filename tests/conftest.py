"""Shared fixtures: the published likelihoods of ../shared/data and small seed models."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

import pyhf_dask
from pyhf_dask.grid import scaled_signal, simple_workspace

DATA = Path(
    os.environ.get("PYHF_DASK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SBOTTOM = DATA / "pyhf-ins1748602-probability-models.tar.gz"
EWK3L = DATA / "atlas-3L-eRJR-likelihood.tar.gz"

#: Reference values of ../shared/data/README.md (pyhf 0.7.6 regression tests).
REFERENCE = {
    ("RegionA", "sbottom_1300_205_60"): (
        0.24443627759085326,
        [
            0.09022509053507759,
            0.1937839194960632,
            0.38432344933992,
            0.6557757334303531,
            0.8910420971601081,
        ],
    ),
    ("RegionA", "sbottom_1400_950_60"): (
        0.021373283911064852,
        [
            0.0026445531093281147,
            0.013976126501170727,
            0.06497105816950004,
            0.23644030478043676,
            0.5744785776763938,
        ],
    ),
    ("RegionA", "sbottom_1500_850_60"): (
        0.045367205665400624,
        [
            0.00598431785676406,
            0.026102240062850574,
            0.10093641492218848,
            0.31019245951964736,
            0.6553623337518385,
        ],
    ),
    ("RegionB", "sbottom_1400_550_60"): (
        0.9744675266677597,
        [
            0.9338879894557114,
            0.9569045303300702,
            0.9771296335437559,
            0.9916370124133669,
            0.9983701133999316,
        ],
    ),
    ("RegionC", "sbottom_1600_850_60"): (
        0.711023707425625,
        [
            0.2955492909588046,
            0.4446885457298284,
            0.6371473864200973,
            0.8336149623750603,
            0.9585901381554178,
        ],
    ),
}
SBOTTOM_SETTINGS = {"normsys_interpcode": "code4", "histosys_interpcode": "code4p"}


@pytest.fixture(scope="session")
def sbottom_archive() -> Path:
    if not SBOTTOM.exists():
        pytest.fail(f"missing published likelihood {SBOTTOM} (set PYHF_DASK_DATA)")
    return SBOTTOM


@pytest.fixture(scope="session")
def ewk3l_archive() -> Path:
    if not EWK3L.exists():
        pytest.fail(f"missing published likelihood {EWK3L} (set PYHF_DASK_DATA)")
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
