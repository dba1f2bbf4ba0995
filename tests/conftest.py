"""Shared fixtures: the published likelihoods of data/ (or ``PYHF_DASK_DATA``), seed models,
and the fault tests' inputs and clean result (``fault_inputs``, ``fault_clean``).

Optional dependencies: the ``test`` extra installs every one of them, so by default a
``pytest.importorskip`` whose module does not import FAILS the test (a broken ``import jax``
must not silently skip the kernel tests). ``--skip-missing`` opts in to skipping instead,
for a partial environment (as pyhf's ``--disable-backend``).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import pyhf_dask
from pyhf_dask.grid import scaled_signal, simple_workspace

_IMPORTORSKIP = pytest.importorskip


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-missing",
        action="store_true",
        default=False,
        help="skip tests whose optional dependency does not import (default: fail them, "
        "since the 'test' extra installs every optional dependency)",
    )
    parser.addoption(
        "--run-pyhf-search",
        action="store_true",
        default=False,
        help="also run the tests marked pyhf_search: comparisons that rerun pyhf's own serial "
        "searches (minutes to tens of minutes per case on 2 cores); off in .ci/run",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-pyhf-search"):
        return
    skip = pytest.mark.skip(reason="reruns pyhf's own slow search: opt in with --run-pyhf-search")
    for item in items:
        if "pyhf_search" in item.keywords:
            item.add_marker(skip)


def _import_or_fail(modname: str, *args: Any, **kwargs: Any) -> Any:
    """``pytest.importorskip`` that fails the test where it would skip (see the docstring)."""
    try:
        return _IMPORTORSKIP(modname, *args, **kwargs)
    except pytest.skip.Exception as exc:
        pytest.fail(
            f"optional dependency {modname!r} does not import ({exc.msg}); the 'test' extra "
            "installs it: fix the environment, or pass --skip-missing to skip such tests",
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("--skip-missing"):
        pytest.importorskip = _import_or_fail  # type: ignore[assignment]


def pytest_unconfigure(config: pytest.Config) -> None:
    pytest.importorskip = _IMPORTORSKIP


#: The archives shipped in the repository's data/ folder; ``PYHF_DASK_DATA`` overrides.
DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
SBOTTOM = DATA / "pyhf-ins1748602-probability-models.tar.gz"
EWK3L = DATA / "atlas-3L-eRJR-likelihood.tar.gz"


def _published(archive: Path) -> Path:
    """``archive``, or a test failure saying where the published likelihoods come from."""
    if not archive.exists():
        pytest.fail(
            f"missing published likelihood {archive} (see data/README.md; set PYHF_DASK_DATA)"
        )
    return archive


@pytest.fixture(scope="session")
def sbottom_archive() -> Path:
    return _published(SBOTTOM)


@pytest.fixture(scope="session")
def ewk3l_archive() -> Path:
    return _published(EWK3L)


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


@pytest.fixture(scope="module")
def fault_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Inputs of the fault tests' CLI scans: ``BkgOnly.json`` and N seed-model patches."""
    from test_faults_support import N, seed_inputs

    return seed_inputs(tmp_path_factory.mktemp("seed"), N)


@pytest.fixture(scope="module")
def fault_clean(fault_inputs: list[str]) -> xr.Dataset:
    """What a fault scan of ``fault_inputs`` must store: a clean in-process run."""
    from test_faults_support import clean_run

    return clean_run(fault_inputs)
