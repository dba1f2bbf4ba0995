"""The command line is quiet by default: library INFO logs only with -v; a readable table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pyhf_dask.cli.scan import format_table

DATA = Path(__file__).parent / "data"
#: A log line of a library: "INFO distributed.scheduler: ..." or distributed's own format.
INFO_LINE = re.compile(
    r"\bINFO\b.*\b(distributed|dask|parsl|pyhf|tornado)\b|\b(distributed|dask)\.\S+ - INFO"
)


def _scan(archive: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "pyhf_dask",
        *options,
        "scan",
        str(archive),
        "--region",
        "RegionA",
        "--labels",
        "msb,mn2,mn1",
        "--patch",
        "sbottom_1300_205_60",
        "--normsys-interpcode",
        "code4",
        "--histosys-interpcode",
        "code4p",
        "--executor",
        "distributed",
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_LOGGING")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.mark.slow
def test_distributed_scan_prints_no_library_info_without_verbose(sbottom_archive: Path) -> None:
    quiet = _scan(sbottom_archive)
    assert quiet.returncode == 0, quiet.stderr
    info = [line for line in quiet.stderr.splitlines() if INFO_LINE.search(line)]
    assert info == []
    assert "INFO" not in quiet.stderr
    # stderr holds only the summary; stdout the table
    assert quiet.stderr.strip().startswith("pyhf-dask: 1 points: 1 converged")
    assert "sbottom_1300_205_60" in quiet.stdout
    # -v brings the libraries' INFO lines back
    loud = _scan(sbottom_archive, "-v")
    assert loud.returncode == 0, loud.stderr
    assert any(INFO_LINE.search(line) for line in loud.stderr.splitlines())


def test_table_is_sorted_numerically_by_the_grid_labels() -> None:
    with xr.open_dataset(DATA / "regionA_pyhf.nc") as opened:
        ds = opened.load()
    rows = format_table(ds).splitlines()[1:]
    names = [row.split()[0] for row in rows]
    masses = [tuple(int(m) for m in name.split("_")[1:]) for name in names]
    assert masses == sorted(masses)
    assert names[0].startswith("sbottom_300_")  # not sbottom_1000_... as text order would
    assert len(names) == ds.sizes["point"]


def test_table_rows_of_failed_points_stay_aligned() -> None:
    with xr.open_dataset(DATA / "regionA_pyhf.nc") as opened:
        ds = opened.load().isel(point=slice(0, 6))
    ds["CLs_obs"][1] = np.nan
    ds["CLs_exp"][1] = np.nan
    ds["status"][1] = "failed"
    lines = format_table(ds).splitlines()
    status_column = {
        line.index(word) for line in lines for word in ("converged", "failed") if word in line
    }
    assert len(status_column) == 1
    # every number column ends at the same place as its header
    header = lines[0]
    for line in lines[1:]:
        for name in ("CLs_obs", "exp-2σ", "exp+2σ"):
            end = header.index(name) + len(name)
            assert line[end - 1] != " "
            assert line[end] == " "
    assert sum("nan" in line for line in lines) == 1
