"""Outputs people reuse (issue 22, item 13): JSON and CSV of CLs and limits, ``--json`` on
standard output, ``pyhf-dask combine``, contour JSON with units, HEPData YAML tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from click.testing import CliRunner

import pyhf_dask
from pyhf_dask import export
from pyhf_dask.cli import main
from pyhf_dask.combine import best_expected, combine_regions
from pyhf_dask.contours import find_contours
from pyhf_dask.results import encode_status, point_names, status_attrs, status_names

DATA = Path(__file__).parent / "data"
REGION_A = DATA / "regionA_pyhf.nc"
POI = ["0", "0.5", "1", "2", "4"]
BKG = {
    "channels": [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "bkg",
                    "data": [50.0, 52.0],
                    "modifiers": [
                        {"name": "uncorr_bkguncrt", "type": "shapesys", "data": [3.0, 7.0]}
                    ],
                }
            ],
        }
    ],
    "observations": [{"name": "SR", "data": [51.0, 48.0]}],
    "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}
SIGNALS = {"sig_100_10": [12.0, 11.0], "sig_200_10": [6.0, 5.0], "sig_300_10": [0.0, 0.0]}


def _patch(yields: list[float]) -> list[dict]:
    sample = {
        "name": "signal",
        "data": yields,
        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
    }
    return [{"op": "add", "path": "/channels/0/samples/0", "value": sample}]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """BkgOnly.json and three patch files; the last signal is zero (CLs of 1, no limit)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "BkgOnly.json").write_text(json.dumps(BKG))
    files = []
    for name, yields in SIGNALS.items():
        (root / f"patch.{name}.json").write_text(json.dumps(_patch(yields)))
        files.append(str(root / f"patch.{name}.json"))
    return [str(root / "BkgOnly.json"), *files]


def _scan(inputs: list[str], *args: str) -> object:
    options = ["--kernel", "pyhf", "--executor", "synchronous", "--labels", "m1,m2"]
    poi = [a for p in POI for a in ("--poi-value", p)]
    return CliRunner().invoke(main, ["scan", *inputs, *options, *poi, *args])


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> xr.Dataset:
    out = tmp_path_factory.mktemp("nc") / "scan.nc"
    result = _scan(inputs, "-o", str(out))
    assert result.exit_code == 0, result.output
    return xr.load_dataset(out)


def _same(a: float | None, b: float) -> bool:
    return (a is None and not math.isfinite(b)) or a == b


def test_json_output_holds_every_number_of_the_nc(inputs, reference, tmp_path):
    out = tmp_path / "results.json"
    result = _scan(inputs, "-o", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())  # strict JSON: NaN would not parse as null
    assert data["labels"] == ["m1", "m2"]
    assert data["poi"] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert data["units"] == {"m1": "GeV", "m2": "GeV"}
    assert [p["name"] for p in data["points"]] == list(SIGNALS)
    names = point_names(reference).tolist()
    status = status_names(reference.status).tolist()
    for point in data["points"]:
        i = names.index(point["name"])
        assert point["status"] == status[i]
        assert [point["m1"], point["m2"]] == [float(reference.m1[i]), float(reference.m2[i])]
        assert point["CLs_obs"] == reference.CLs_obs[i].values.tolist()
        assert point["CLs_exp"] == reference.CLs_exp[i].values.tolist()
        assert _same(point["upper_limit_obs"], float(reference.upper_limit_obs[i]))
        limits = zip(point["upper_limit_exp"], reference.upper_limit_exp[i].values, strict=True)
        for got, want in limits:
            assert _same(got, float(want))
    first = data["points"][0]
    assert 0.0 < first["upper_limit_obs"] < 4.0  # a real limit inside the POI grid


def test_csv_output_one_row_per_point_and_poi(inputs, reference, tmp_path):
    out = tmp_path / "results.csv"
    result = _scan(inputs, "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(SIGNALS) * len(POI)
    names = point_names(reference).tolist()
    for row in rows:
        i = names.index(row["point"])
        j = POI.index(f"{float(row['poi']):g}")
        assert float(row["CLs_obs"]) == float(reference.CLs_obs[i, j])
        bands = ["CLs_exp_m2", "CLs_exp_m1", "CLs_exp", "CLs_exp_p1", "CLs_exp_p2"]
        assert [float(row[b]) for b in bands] == reference.CLs_exp[i, j].values.tolist()
        limit = float(row["upper_limit_obs"])
        want = float(reference.upper_limit_obs[i])
        assert limit == want or (math.isnan(limit) and math.isnan(want))
        assert row["status"] == status_names(reference.status)[i]
        assert float(row["m1"]) == float(reference.m1[i])


def test_json_on_stdout_replaces_the_table(inputs, reference):
    result = _scan(inputs, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["name"] for p in data["points"]] == list(SIGNALS)
    assert "exp+1σ" not in result.stdout  # no table


def test_records_of_a_lazy_result_equal_the_computed_ones(inputs):
    grid = pyhf_dask.SignalGrid.from_inputs(inputs, labels=["m1", "m2"])
    lazy = pyhf_dask.scan(grid, kernel="pyhf")
    with _synchronous():
        from_lazy = export.result_records(lazy)["points"]
    computed = export.result_records(lazy.compute(scheduler="synchronous"))["points"]
    for point in (*from_lazy, *computed):
        assert point.pop("fit_time") > 0  # the only thing two runs may differ in
    assert from_lazy == computed


def _synchronous():
    import dask

    return dask.config.set(scheduler="synchronous")


# ----------------------------------------------------------------- combine


def _regions(tmp_path: Path) -> tuple[Path, Path]:
    """RegionA (its status as flag values, as scans write it now) and region B: RegionA
    with other expected CLs (half of the points better, half worse) and CLs_obs 0.123."""
    ds = xr.load_dataset(REGION_A)
    ds["status"] = xr.DataArray(encode_status(ds.status.values), dims="point", attrs=status_attrs())
    a_path = tmp_path / "regionA.nc"
    pyhf_dask.to_netcdf(ds, a_path)
    factor = np.where(np.arange(ds.sizes["point"]) % 2 == 0, 0.5, 2.0)
    ds["CLs_exp"] = ds.CLs_exp * xr.DataArray(factor, dims="point")
    ds["CLs_obs"] = ds.CLs_obs * 0 + 0.123
    b_path = tmp_path / "regionB.nc"
    pyhf_dask.to_netcdf(ds, b_path)
    return a_path, b_path


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_combine_command_equals_best_expected(tmp_path, suffix):
    a_path, b_path = _regions(tmp_path)
    out = tmp_path / f"best{suffix}"
    result = CliRunner().invoke(main, ["combine", f"A={a_path}", str(b_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "from 2 regions" in result.output
    got = (
        xr.open_zarr(out, consolidated=False).load() if suffix == ".zarr" else xr.load_dataset(out)
    )
    want = best_expected(
        combine_regions({"A": xr.load_dataset(a_path), "regionB": xr.load_dataset(b_path)})
    ).compute()
    assert got.best_region.values.tolist() == want.best_region.values.tolist()
    assert sorted(set(got.best_region.values.tolist())) == ["A", "regionB"]
    np.testing.assert_array_equal(got.CLs_obs.values, want.CLs_obs.values)
    np.testing.assert_array_equal(got.CLs_exp.values, want.CLs_exp.values)
    picked_b = got.best_region.values == "regionB"
    assert (got.CLs_obs.values[picked_b] == 0.123).all()


def test_combine_reads_older_files_with_status_names(tmp_path):
    out = tmp_path / "best.nc"
    result = CliRunner().invoke(main, ["combine", f"A={REGION_A}", f"B={REGION_A}", "-o", str(out)])
    assert result.exit_code == 0, result.output
    best = xr.load_dataset(out)
    assert set(best.best_region.values.tolist()) == {"A"}  # a tie: the first region
    assert (status_names(best.status) == status_names(xr.load_dataset(REGION_A).status)).all()


def test_combine_refuses_a_name_given_twice(tmp_path):
    result = CliRunner().invoke(
        main, ["combine", f"A={REGION_A}", f"A={REGION_A}", "-o", str(tmp_path / "b.nc")]
    )
    assert result.exit_code == 2
    assert "given twice" in result.output


# ----------------------------------------------------------------- contours


def test_contour_json_carries_units():
    result = CliRunner().invoke(main, ["contour", str(REGION_A)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["units"] == {"msb": "GeV", "mn2": "GeV", "mn1": "GeV"}
    assert find_contours(xr.load_dataset(REGION_A)).to_dict()["units"] == data["units"]


def test_hepdata_tables_hold_the_contour_lines(tmp_path):
    out = tmp_path / "hepdata"
    result = CliRunner().invoke(
        main, ["contour", str(REGION_A), "--format", "hepdata", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    found = find_contours(xr.load_dataset(REGION_A))
    documents = list(yaml.safe_load_all((out / "submission.yaml").read_text()))
    assert "comment" in documents[0]
    tables = documents[1:]
    assert len({t["data_file"] for t in tables}) == len(tables)
    assert len(tables) == sum(len(c.lines) for c in found.contours)
    lines = [(c.curve, line) for c in found.contours for line in c.lines]
    for table, (curve, line) in zip(tables, lines, strict=True):
        data = yaml.safe_load((out / table["data_file"]).read_text())
        (x,) = data["independent_variables"]
        (y,) = data["dependent_variables"]
        assert x["header"] == {"name": "msb", "units": "GeV"}
        assert y["header"] == {"name": "mn2", "units": "GeV"}
        qualifiers = {q["name"]: q for q in y["qualifiers"]}
        assert qualifiers["mn1"] == {"name": "mn1", "value": 60.0, "units": "GeV"}
        assert "0.95 CL" in qualifiers["Limit"]["value"]
        assert [v["value"] for v in x["values"]] == np.round(line[:, 0], 6).tolist()
        assert [v["value"] for v in y["values"]] == np.round(line[:, 1], 6).tolist()
        assert table["name"].startswith(("Observed", "Expected"))
        assert curve in {"obs", "exp", "exp-1", "exp+1", "exp-2", "exp+2"}


def test_hepdata_single_file_needs_one_line(tmp_path):
    found = find_contours(xr.load_dataset(REGION_A), curves=("obs",))
    out = tmp_path / "obs.yaml"
    if len(found.get("obs").lines) == 1:
        export.write_hepdata(found, out)
        data = yaml.safe_load(out.read_text())
        assert len(data["independent_variables"][0]["values"]) == len(found.get("obs").lines[0])
    result = CliRunner().invoke(
        main, ["contour", str(REGION_A), "--format", "hepdata", "-o", str(tmp_path / "all.yaml")]
    )
    assert result.exit_code == 2
    assert "give a folder" in result.output
