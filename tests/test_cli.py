"""The pyhf-dask command line: scans, output files, one-line errors with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from reference_values import REFERENCE

from pyhf_dask import __version__
from pyhf_dask.cli import main
from pyhf_dask.results import status_names


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyhf_dask", *args], capture_output=True, text=True, check=False
    )


def _one_ewk3l_point(ewk3l_dir) -> list[str]:
    """A scan of one point of the 3L patchset, where pyhf's SciPy fits stop too early."""
    return [
        "scan",
        str(ewk3l_dir / "BkgOnly.json"),
        str(ewk3l_dir / "patchset.json"),
        "--patch",
        "ERJR_100p0_20p0",
        "--kernel",
        "pyhf",
        "--executor",
        "synchronous",
    ]


def test_version_and_help():
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    result = runner.invoke(main, ["scan", "--help"])
    assert result.exit_code == 0
    for option in (
        "--region",
        "--patch",
        "--labels",
        "--poi-value",
        "--test-stat",
        "--normsys-interpcode",
        "--histosys-interpcode",
        "--kernel",
        "--workers",
        "--output",
    ):
        assert option in result.output


def test_scan_archive_region_to_netcdf(sbottom_archive, tmp_path):
    out = tmp_path / "regionA.nc"
    result = _run(
        "scan",
        str(sbottom_archive),
        "--region",
        "RegionA",
        "--patch",
        "sbottom_1300_205_60",
        "--patch",
        "sbottom_1400_950_*",
        "--labels",
        "msb,mn2,mn1",
        "--normsys-interpcode",
        "code4",
        "--histosys-interpcode",
        "code4p",
        "--kernel",
        "pyhf",
        "--workers",
        "2",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "2 points: 2 converged, 0 failed" in result.stderr
    with xr.open_dataset(out) as ds:
        assert list(ds.point.values) == ["sbottom_1300_205_60", "sbottom_1400_950_60"]
        assert ds.msb.values.tolist() == [1300.0, 1400.0]
        for i, name in enumerate(ds.point.values):
            obs, exp = REFERENCE[("RegionA", str(name))]
            assert float(ds.CLs_obs[i]) == pytest.approx(obs, rel=1e-5)
            np.testing.assert_allclose(ds.CLs_exp[i], exp, rtol=1e-5)


def test_scan_patchset_prints_table(ewk3l_dir):
    runner = CliRunner()
    result = runner.invoke(main, _one_ewk3l_point(ewk3l_dir))
    assert "ERJR_100p0_20p0" in result.output
    assert "1 points:" in result.output


def test_scan_records_failures(seed_workspace, tmp_path):
    """sig_2 has a bin with 51 observed and nothing expected: pyhf's fits fail there."""
    import json

    folder = _seed_files(tmp_path, seed_workspace, n=1)
    empty_bin = [
        {"op": "replace", "path": "/channels/0/samples/0/data", "value": [0.0, 11.0]},
        {"op": "replace", "path": "/channels/0/samples/1/data", "value": [0.0, 52.0]},
    ]
    (folder / "patch.sig_2.json").write_text(json.dumps(empty_bin))
    out = tmp_path / "out.nc"
    args = ["scan", str(folder), "--kernel", "pyhf", "--executor", "synchronous"]
    result = _run(*args, "--table", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 points: 1 converged, 1 failed" in result.stderr
    assert "failed points: sig_2 " in result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    assert rows["sig_1"][-1] == "converged" and rows["sig_2"][-1] == "failed", result.stdout
    with xr.open_dataset(out) as ds:
        names = [str(n) for n in ds.point.values]
        assert names == ["sig_1", "sig_2"]
        assert status_names(ds.status).tolist() == ["converged", "failed"]
        message = str(ds.message.values[1])
        assert message.startswith("FailedMinimization: "), message
        assert np.isnan(ds.CLs_obs.values[1]).all() and np.isnan(ds.CLs_exp.values[1]).all()
        assert np.isfinite(ds.CLs_obs.values[0]).all()
    strict = _run(*args, "--fail-on-error")
    assert strict.returncode == 3, strict.stderr
    assert "Traceback" not in strict.stderr


def test_poi_scan_from_cli(seed_workspace, tmp_path):
    import json

    ws = tmp_path / "ws.json"
    ws.write_text(json.dumps(seed_workspace))
    patch = tmp_path / "patch.sig_1.json"
    patch.write_text(
        json.dumps([{"op": "replace", "path": "/channels/0/samples/0/data", "value": [12.0, 11.0]}])
    )
    out = tmp_path / "ul.nc"
    result = CliRunner().invoke(
        main,
        [
            "scan",
            str(ws),
            str(patch),
            "--poi-value",
            "0.5",
            "--poi-value",
            "1",
            "--poi-value",
            "2",
            "--poi-value",
            "3",
            "--kernel",
            "pyhf",
            "--executor",
            "synchronous",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert ds.sizes["poi"] == 4
        assert 1.0 < float(ds.upper_limit_obs[0]) < 3.0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["scan", "missing.tar.gz"], "Error [archive]: missing.tar.gz: no such file or folder"),
        (["scan", "--test-stat", "qmu", "x"], "Invalid value for '--test-stat'"),
        (["scan"], "Missing argument 'INPUTS...'"),
    ],
)
def test_errors_are_one_line_with_status_2(args, expected):
    result = _run(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_output_suffix(sbottom_archive):
    result = _run("scan", str(sbottom_archive), "--region", "RegionA", "-o", "out.txt")
    assert result.returncode == 2
    assert "output must end in .nc or .zarr" in result.stderr
    assert "Traceback" not in result.stderr


def _seed_files(tmp_path, seed_workspace, n=4):
    import json

    from pyhf_dask.grid import scaled_signal

    ws = tmp_path / "BkgOnly.json"
    ws.write_text(json.dumps(seed_workspace))
    for k in range(n):
        (tmp_path / f"patch.sig_{k + 1}.json").write_text(json.dumps(scaled_signal(0.5 * (k + 1))))
    return tmp_path


@pytest.mark.parametrize("executor", ["processes", "distributed", "parsl", "endpoint-local"])
def test_scan_on_each_executor(seed_workspace, tmp_path, executor):
    folder = _seed_files(tmp_path, seed_workspace)
    out = tmp_path / f"{executor}.nc"
    ref = tmp_path / "ref.nc"
    common = [str(folder), "--kernel", "pyhf", "--chunk-size", "2"]
    assert _run("scan", *common, "--executor", "synchronous", "-o", str(ref)).returncode == 0
    result = _run("scan", *common, "--executor", executor, "--workers", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "4 points: 4 converged, 0 failed" in result.stderr
    with xr.open_dataset(out) as got, xr.open_dataset(ref) as want:
        np.testing.assert_array_equal(got.CLs_obs.values, want.CLs_obs.values)


def test_globus_needs_an_endpoint(seed_workspace, tmp_path):
    folder = _seed_files(tmp_path, seed_workspace, n=1)
    result = _run("scan", str(folder), "--kernel", "pyhf", "--executor", "globus")
    assert result.returncode == 2
    assert result.stderr.startswith("Error [option]: ")
    assert "--endpoint" in result.stderr


def test_failed_points_are_listed_and_fail_on_error(ewk3l_dir):
    args = _one_ewk3l_point(ewk3l_dir)
    plain = _run(*args)
    assert plain.returncode == 1  # every point failed: no result to give (issue 22, item 8)
    assert "1 points: 0 converged, 1 failed" in plain.stderr
    assert "failed points: ERJR_100p0_20p0" in plain.stderr
    strict = _run(*args, "--fail-on-error")
    assert strict.returncode == 3
    assert "Traceback" not in strict.stderr


def test_scipy_tolerance_reaches_the_reference_kernel(sbottom_archive, tmp_path):
    """At pyhf's default tolerance this point's CLs_obs is nan (failed); at 1e-10 it is fitted."""
    out = tmp_path / "tight.nc"
    result = _run(
        "scan",
        str(sbottom_archive),
        "--region",
        "RegionB",
        "--patch",
        "sbottom_1000_131_1",
        "--normsys-interpcode",
        "code4",
        "--histosys-interpcode",
        "code4p",
        "--kernel",
        "pyhf",
        "--executor",
        "synchronous",
        "--scipy-tolerance",
        "1e-10",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    with xr.open_dataset(out) as ds:
        assert status_names(ds.status)[0] == "converged"
        assert float(ds.CLs_obs[0]) == pytest.approx(0.99995, abs=1e-4)
        assert float(ds.attrs["scipy_tolerance"]) == 1e-10


def _console_script() -> str:
    script = Path(sys.executable).with_name("pyhf-dask")
    if not script.exists():  # pragma: no cover - the package is installed for its tests
        pytest.fail(f"the pyhf-dask console script is not installed beside {sys.executable}")
    return str(script)


def test_the_console_script_scans_and_exits_with_its_status(tmp_path) -> None:
    """The installed ``pyhf-dask`` (its quick exit included): results written, status 0;
    bad input: one line, status 2; help lists every command."""
    from test_faults_support import seed_inputs

    out = tmp_path / "out.nc"
    inputs = seed_inputs(tmp_path, 6)
    args = [*inputs, "--executor", "local", "--workers", "1", "-o", str(out)]
    done = subprocess.run(
        [_console_script(), "scan", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "converged" in done.stdout + done.stderr
    with xr.open_dataset(out) as ds:
        assert status_names(ds.status).tolist() == ["converged"] * 6
    bad = subprocess.run(
        [_console_script(), "scan", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    helped = subprocess.run(
        [_console_script(), "--help"], capture_output=True, text=True, check=True
    )
    for command in ("scan", "plot", "contour"):
        assert f"  {command} " in helped.stdout


_MAIN_MODULES = """
import atexit, sys
from pathlib import Path

out = Path(sys.argv[1])

def record():
    out.write_text(" ".join(m for m in ("pyhf", "scipy.stats") if m in sys.modules))

atexit.register(record)
sys.argv = ["pyhf-dask", *sys.argv[2:]]
from pyhf_dask.cli import run
run()
"""


def test_a_repeated_scan_imports_no_pyhf_in_the_main_process(tmp_path) -> None:
    """The inputs' checks need pyhf's schema files, not pyhf (0.7 s of SciPy imports on 2
    cores): once the one-point model check has passed, the command's own process never
    imports pyhf; the workers fit."""
    from test_faults_support import seed_inputs

    inputs = seed_inputs(tmp_path, 4)
    env = {**os.environ, "PYHF_DASK_JAX_CACHE": str(tmp_path / "cache")}
    seen = tmp_path / "modules.txt"
    args = ["scan", *inputs, "--workers", "1", "-o", str(tmp_path / "out.nc")]
    for expected in ("pyhf", ""):  # the first scan builds pyhf's model once
        done = subprocess.run(
            [sys.executable, "-c", _MAIN_MODULES, str(seen), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert seen.read_text().split()[:1] == expected.split(), seen.read_text()
