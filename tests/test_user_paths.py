"""The paths a user takes tell the truth (issue 22, items 1-3 and 6-9).

- combined regions write to Zarr and netCDF in one pass (uniform chunks, text kept as
  text, every fit runs once);
- points are in natural order (numbers as numbers) in Python and in the table;
- a store's pending points are drawn as pending, and a store opens without warnings;
- a POI scan's plots and table say which POI value and give the limits; CLs are printed
  with significant digits;
- a scan in which every point failed exits 1 and names the likely cause, and ``plot``
  of it reports the category ``results``;
- ``pyhf-dask plot --log-y``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

import pyhf_dask
from pyhf_dask import kernels
from pyhf_dask.cli.report import format_table
from pyhf_dask.grid import SignalGrid, signal_patch
from pyhf_dask.results import STATUS_FLAGS, TEXT, status_names

M1 = [200.0, 300.0, 400.0, 500.0]
M2 = [0.0, 50.0, 100.0]


def _signal(m1: float, m2: float) -> list[dict]:
    """A signal strong at low masses, weak at high ones: the plane has an exclusion line."""
    scale = 2.5 * np.exp(-(m1 - 200.0) / 150.0) * (1.0 - m2 / (m1 + 1.0))
    return signal_patch([12.0 * scale, 11.0 * scale])


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyhf_dask", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts kernel calls (one per fit task run), with the synchronous scheduler, over
    every compute: also one that xarray would start to choose a variable's type."""
    calls: list[int] = []
    original: Callable = kernels.get_kernel

    def counting(name: str) -> Callable:
        kernel = original(name)

        def run(*args, **kwargs):
            calls.append(len(args[1]))
            return kernel(*args, **kwargs)

        return run

    monkeypatch.setattr(kernels, "get_kernel", counting)
    with dask.config.set(scheduler="synchronous"):
        yield calls


def _weak(m1: float, m2: float) -> list[dict]:
    """Half the signal of :func:`_signal`: a region with less sensitivity."""
    scale = 1.25 * np.exp(-(m1 - 200.0) / 150.0) * (1.0 - m2 / (m1 + 1.0))
    return signal_patch([12.0 * scale, 11.0 * scale])


def _region(ws: dict, m1: list[float], chunk_size: int, signal: Callable = _signal) -> xr.Dataset:
    grid = SignalGrid.from_function(ws, signal, m1=m1, m2=M2)
    return pyhf_dask.scan(grid, kernel="pyhf", chunk_size=chunk_size)


# --- items 1, 2, 3: combined regions write in one pass ---------------------------------


def test_combined_regions_of_other_points_and_chunks_write_to_zarr_once(
    seed_workspace: dict, fits: list[int], tmp_path: Path
) -> None:
    a = _region(seed_workspace, M1, chunk_size=5)  # 12 points: chunks (5, 5, 2)
    b = _region(seed_workspace, M1[1:], chunk_size=2)  # 9 of them: chunks (2, 2, 2, 2, 1)
    n_tasks = len(a.chunks["point"]) + len(b.chunks["point"])
    regions = pyhf_dask.combine_regions({"A": a, "B": b})
    best = pyhf_dask.best_expected(regions)
    assert fits == []  # still lazy
    for ds in (regions, best):
        assert ds.message.dtype.metadata == TEXT.metadata  # text, known before computing
        sizes = ds.chunks["point"]
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]  # what Zarr needs
    assert best.best_region.dtype.metadata == TEXT.metadata
    best.to_zarr(tmp_path / "best.zarr", mode="w", consolidated=False)
    assert len(fits) == n_tasks  # every fit of both scans ran once
    regions.to_netcdf(tmp_path / "regions.nc", engine="h5netcdf")
    assert len(fits) == 2 * n_tasks
    with xr.open_zarr(tmp_path / "best.zarr", consolidated=False) as stored:
        best_stored = stored.load()
    computed = pyhf_dask.best_expected(
        pyhf_dask.combine_regions({"A": a.compute(), "B": b.compute()})
    )
    np.testing.assert_array_equal(best_stored.CLs_obs.values, computed.CLs_obs.values)
    assert best_stored.best_region.values.tolist() == computed.best_region.values.tolist()
    missing = status_names(xr.open_dataset(tmp_path / "regions.nc").status.sel(region="B"))
    assert (missing == "missing").sum() == 3  # the m1 = 200 points B does not have


def test_combined_regions_of_the_same_points_compute_each_fit_once(
    seed_workspace: dict, fits: list[int], tmp_path: Path
) -> None:
    """Uniform chunks already: before, ``message`` lost its text mark in the combination
    and ``to_zarr(compute=False)`` computed every fit to choose its type."""
    a = _region(seed_workspace, M1, chunk_size=4)
    b = _region(seed_workspace, M1, chunk_size=4, signal=_weak)
    best = pyhf_dask.best_expected(pyhf_dask.combine_regions({"A": a, "B": b}))
    write = best.to_zarr(tmp_path / "b.zarr", mode="w", consolidated=False, compute=False)
    assert fits == []  # preparing the write ran nothing
    write.compute()
    assert len(fits) == 6 and sum(fits) == 24
    pyhf_dask.to_netcdf(best, tmp_path / "b.nc")
    assert len(fits) == 12


# --- item 9: one natural order -----------------------------------------------------------


def test_points_of_patch_files_and_combined_regions_are_in_natural_order(
    seed_workspace: dict, tmp_path: Path
) -> None:
    names = ["sig_1000_5", "sig_300_5", "sig_300_10", "sig_99_5"]
    files = []
    for k, name in enumerate(names):
        path = tmp_path / f"patch.{name}.json"
        path.write_text(json.dumps(signal_patch([1.0 + k, 2.0])))
        files.append(path)
    grid = SignalGrid.from_patch_files(seed_workspace, files, labels=["m1", "m2"])
    natural = ["sig_99_5", "sig_300_5", "sig_300_10", "sig_1000_5"]
    assert list(grid.names) == natural  # as text it was 1000, 300_10, 300_5, 99
    ds = pyhf_dask.scan(grid, kernel="pyhf").compute(scheduler="synchronous")
    assert ds.point.values.tolist() == natural
    rows = [line.split()[0] for line in format_table(ds).splitlines()[1:]]
    assert rows == natural  # the table: the same order, from the same function
    late = ds.isel(point=[3, 0])  # sig_1000_5, sig_99_5
    early = ds.isel(point=[1, 2])
    both = pyhf_dask.combine_regions({"late": late, "early": early})
    assert both.point.values.tolist() == natural  # pandas' union sorts as text
    from pyhf_dask.results import natural_order

    assert natural_order(["a_10", "a_9", "a_10p5"]) == [1, 0, 2]


# --- item 6: pending points of a store, and no warnings ----------------------------------


@pytest.fixture
def interrupted_store(seed_workspace: dict, tmp_path: Path) -> Path:
    """A 12-point store whose last chunk (4 points) is still pending."""
    from pyhf_dask.store import scan_to_store

    grid = SignalGrid.from_function(seed_workspace, _signal, m1=M1, m2=M2)
    path = tmp_path / "scan.zarr"
    scan_to_store(grid, path, kernel="pyhf", chunk_size=4, scheduler="synchronous")
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="r+")
    status = group["status"][:]
    status[8:] = STATUS_FLAGS.index("pending")  # what an interrupted scan leaves
    group["status"][:] = status
    return path


def test_a_store_opens_with_xarray_without_warnings(interrupted_store: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_zarr(interrupted_store) as ds:
            assert ds.sizes["point"] == 12


def test_plot_draws_the_pending_points_of_a_store_as_pending(
    interrupted_store: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from pyhf_dask import plots
    from pyhf_dask.store_read import open_store

    fig = plots.plot_exclusion(open_store(interrupted_store))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Pending, not fitted yet (4)" in labels
    assert not [label for label in labels if label.startswith("Failed")]
    proc = _cli("plot", str(interrupted_store), "-o", str(tmp_path / "p.png"))
    assert proc.returncode == 0, proc.stderr
    assert "consolidated" not in proc.stderr.lower() and "Warning" not in proc.stderr
    assert "4 of 12 points" in proc.stderr and "pending" in proc.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# --- item 7: POI scans say which POI value, the table gives the limits -------------------


@pytest.fixture(scope="module")
def poi_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyhf_dask.grid import simple_workspace

    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    grid = SignalGrid.from_function(ws, _signal, m1=M1, m2=M2)
    ds = pyhf_dask.scan(grid, kernel="pyhf", poi_value=[0.5, 1.0, 2.0, 4.0, 8.0])
    path = tmp_path_factory.mktemp("poi") / "poi.nc"
    pyhf_dask.to_netcdf(ds.compute(scheduler="synchronous"), path)
    return path


def test_plots_of_a_poi_scan_name_the_poi_value(poi_scan: Path) -> None:
    pytest.importorskip("matplotlib")
    from pyhf_dask import plots

    ds = xr.open_dataset(poi_scan).load()
    for plot in (plots.plot_exclusion, plots.plot_cls_map):
        title = plot(ds, poi=2.0).axes[0].get_title()
        assert r"$\mu$ = 2" in title, title
        assert r"$\mu$ = 4" in plot(ds, poi=4.0).axes[0].get_title()


def test_the_table_of_a_poi_scan_gives_the_limits_with_significant_digits(
    poi_scan: Path,
) -> None:
    ds = xr.open_dataset(poi_scan).load()
    lines = format_table(ds).splitlines()
    assert lines[0].startswith("# upper limits on mu at 95% CL from CLs at 5 POI values, 0.5 to 8")
    assert lines[1].split()[:3] == ["patch", "UL_obs", "UL_exp-2σ"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    for name, obs in zip(ds.point.values, ds.upper_limit_obs.values, strict=True):
        assert rows[str(name)][1] == f"{obs:.4g}"


def test_the_table_prints_small_cls_with_significant_digits() -> None:
    ds = xr.Dataset(
        {
            "CLs_obs": ("point", [7.2e-5, 2.8e-10]),
            "CLs_exp": (("point", "band"), [[0.05234] * 5, [1e-3] * 5]),
            "status": ("point", np.array([0, 0], dtype=np.int8)),
        },
        coords={"point": ["p_1", "p_2"], "band": [-2, -1, 0, 1, 2]},
    )
    rows = [line.split() for line in format_table(ds).splitlines()[1:]]
    assert rows[0][1:3] == ["7.2e-05", "0.05234"]  # 4 decimals printed 0.0001
    assert rows[1][1:3] == ["2.8e-10", "0.001"]  # and 0.0000


def test_plot_log_y_draws_a_logarithmic_brazil_band(poi_scan: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for flags, log in (((), False), (("--log-y",), True)):
        out = tmp_path / f"brazil{len(flags)}.svg"
        proc = _cli("plot", str(poi_scan), "--kind", "brazil", *flags, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        # matplotlib keeps each tick label's text in an SVG comment: 10^{-2} on a log axis
        assert ("10^{-" in out.read_text()) is log


# --- item 8: a scan in which every point failed ------------------------------------------


def test_an_all_failed_scan_exits_1_and_names_the_timeout(
    seed_workspace: dict, tmp_path: Path
) -> None:
    pytest.importorskip("zarr")
    pytest.importorskip("matplotlib")
    (tmp_path / "BkgOnly.json").write_text(json.dumps(seed_workspace))
    for m1 in (200, 300):
        for m2 in (0, 50):
            patch = tmp_path / f"patch.sig_{m1}_{m2}.json"
            patch.write_text(json.dumps(_signal(float(m1), float(m2))))
    store = tmp_path / "failed.zarr"
    common = ["--kernel", "pyhf", "--labels", "m1,m2", "--executor", "local", "--workers", "1"]
    proc = _cli(
        "scan", str(tmp_path), *common, "--timeout", "0.001", "--retries", "0", "-o", str(store)
    )
    assert proc.returncode == 1, proc.stderr
    assert "4 points: 0 converged, 4 failed" in proc.stderr
    assert "--timeout 0.001 s is too small" in proc.stderr
    plot = _cli("plot", str(store), "-o", str(tmp_path / "f.png"))
    assert plot.returncode == 2
    assert plot.stderr.startswith("Error [results]: "), plot.stderr
    assert "every one of the 4 points failed" in plot.stderr
    assert "--timeout 0.001 s is too small" in plot.stderr
    assert "Traceback" not in plot.stderr
