"""Inputs as analyses publish them (issue 22, items 10-12).

- patch files named ``patch_<name>.json`` (ATLAS 1Lbb, HEPData ins1755298) in folders and
  archives, the point named ``<name>``; mixed with ``patch.<name>.json``;
- a patchset whose digest does not match its workspace: refused with the override named,
  used with ``--ignore-digest`` / ``ignore_digest=True`` and a warning naming the mismatch;
- a single workspace with its signal in it: a one-point scan, as ``pyhf cls ws.json``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyhf
import pytest
from click.testing import CliRunner

import pyhf_dask
from pyhf_dask.archives import is_bkg_only, is_patch_file, patch_name
from pyhf_dask.cli import main
from pyhf_dask.exceptions import InvalidGrid, InvalidPatch
from pyhf_dask.grid import SignalGrid, simple_workspace

BAD = Path(__file__).parent / "bad_inputs"
DATA = Path(os.environ.get("PYHF_DASK_DATA") or Path(__file__).resolve().parents[1] / "data")
DIGEST_CASE = BAD / "09_patchset_digest_mismatch"
LBB = next(
    (
        p
        for p in (
            DATA / "atlas-1Lbb-likelihood.tar.gz",
            Path("/work/shared/data/atlas-1Lbb-likelihood.tar.gz"),
        )
        if p.exists()
    ),
    None,
)
BKG = simple_workspace([0.0, 0.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
SIGNALS = {"C1N2_Wh_hbb_300_0": [12.0, 11.0], "C1N2_Wh_hbb_400_100": [6.0, 5.0]}


def _bkg_only() -> dict:
    """The background-only workspace (its signal sample removed)."""
    ws = json.loads(json.dumps(BKG))
    ws["channels"][0]["samples"] = [
        s for s in ws["channels"][0]["samples"] if s["name"] != "signal"
    ]
    return ws


def _folder(root: Path, names: dict[str, str]) -> Path:
    """``root/1Lbb`` with BkgOnly.json and one patch file per ``{file name: point}``."""
    folder = root / "1Lbb"
    folder.mkdir(parents=True)
    (folder / "BkgOnly.json").write_text(json.dumps(_bkg_only()))
    for file, point in names.items():
        (folder / file).write_text(json.dumps(_signal(SIGNALS[point])))
    return folder


def _signal(yields: list[float]) -> list[dict]:
    """The jsonpatch adding a signal sample with ``mu`` to the background-only workspace."""
    sample = {
        "name": "signal",
        "data": yields,
        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
    }
    return [{"op": "add", "path": "/channels/0/samples/0", "value": sample}]


def _archive(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return dest


def _pyhf_cls(ws_spec: dict, patch: list[dict] | None = None) -> tuple[float, list[float]]:
    """pyhf's own CLs (``pyhf cls`` with its defaults)."""
    pyhf.set_backend("numpy")
    workspace = pyhf.Workspace(ws_spec)
    model = workspace.model(patches=[patch] if patch else None)
    obs, exp = pyhf.infer.hypotest(
        1.0, workspace.data(model), model, test_stat="qtilde", return_expected_set=True
    )
    return float(obs), [float(e) for e in exp]


def _scan(*args: str) -> object:
    return CliRunner().invoke(
        main, ["scan", *args, "--kernel", "pyhf", "--executor", "synchronous"]
    )


# ----------------------------------------------------------------- 10: patch_<name>.json


def test_patch_file_names_of_both_forms():
    assert patch_name("1Lbb/patch_C1N2_Wh_hbb_1000_0.json") == "C1N2_Wh_hbb_1000_0"
    assert patch_name("RegionA/patch.sbottom_1300_205_60.json") == "sbottom_1300_205_60"
    assert is_patch_file(Path("patch_C1N2_Wh_hbb_1000_0.json"))
    assert not is_patch_file(Path("patchset.json"))
    assert not is_patch_file(Path("patch_.json"))
    assert is_bkg_only(Path("1Lbb/BkgOnly.json"))


@pytest.mark.parametrize("as_archive", [False, True])
def test_folder_or_archive_of_underscore_patches(tmp_path, as_archive):
    folder = _folder(tmp_path, {f"patch_{name}.json": name for name in SIGNALS})
    path = _archive(folder, tmp_path / "1Lbb.tar.gz") if as_archive else folder
    grid = SignalGrid.from_path(path, labels=["m1", "m2"])
    assert grid.names == ("C1N2_Wh_hbb_300_0", "C1N2_Wh_hbb_400_100")
    assert grid.values.tolist() == [[300.0, 0.0], [400.0, 100.0]]
    assert grid.patches == (
        _signal(SIGNALS["C1N2_Wh_hbb_300_0"]),
        _signal(SIGNALS["C1N2_Wh_hbb_400_100"]),
    )


def test_cli_scan_of_underscore_patches_matches_pyhf(tmp_path):
    folder = _folder(tmp_path, {f"patch_{name}.json": name for name in SIGNALS})
    out = tmp_path / "out.json"
    result = _scan(str(folder), "--labels", "m1,m2", "-o", str(out))
    assert result.exit_code == 0, result.output
    points = {p["name"]: p for p in json.loads(out.read_text())["points"]}
    assert set(points) == set(SIGNALS)
    for name, yields in SIGNALS.items():
        obs, exp = _pyhf_cls(_bkg_only(), _signal(yields))
        assert points[name]["CLs_obs"] == pytest.approx(obs, rel=1e-6)
        assert points[name]["CLs_exp"] == pytest.approx(exp, rel=1e-6)


def test_listed_underscore_patch_files_lose_the_prefix(tmp_path):
    folder = _folder(tmp_path, {f"patch_{name}.json": name for name in SIGNALS})
    files = sorted(folder.glob("patch_*.json"))
    grid = SignalGrid.from_patch_files(folder / "BkgOnly.json", files)
    assert grid.names == tuple(sorted(SIGNALS))


def test_mixed_folder_uses_both_forms(tmp_path):
    folder = _folder(
        tmp_path,
        {
            "patch.C1N2_Wh_hbb_300_0.json": "C1N2_Wh_hbb_300_0",
            "patch_C1N2_Wh_hbb_400_100.json": "C1N2_Wh_hbb_400_100",
        },
    )
    grid = SignalGrid.from_path(folder)
    assert grid.names == ("C1N2_Wh_hbb_300_0", "C1N2_Wh_hbb_400_100")


def test_mixed_folder_naming_one_point_twice_is_refused(tmp_path):
    folder = _folder(
        tmp_path,
        {
            "patch.C1N2_Wh_hbb_300_0.json": "C1N2_Wh_hbb_300_0",
            "patch_C1N2_Wh_hbb_300_0.json": "C1N2_Wh_hbb_300_0",
        },
    )
    with pytest.raises(InvalidGrid, match=r"names the same point 'C1N2_Wh_hbb_300_0' as .*patch\."):
        SignalGrid.from_path(folder)


@pytest.mark.skipif(LBB is None, reason="the ATLAS 1Lbb archive is not here")
def test_published_1lbb_archive_reads_as_a_grid():
    assert LBB is not None
    grid = SignalGrid.from_path(LBB, labels=["m1", "m2"])
    assert len(grid) == 125
    assert all(name.startswith("C1N2_Wh_hbb_") for name in grid.names)
    index = grid.names.index("C1N2_Wh_hbb_1000_0")
    assert grid.values[index].tolist() == [1000.0, 0.0]
    with tarfile.open(LBB) as tar:
        member = tar.extractfile("1Lbb/patch_C1N2_Wh_hbb_1000_0.json")
        assert member is not None
        assert grid.patches is not None and grid.patches[index] == json.load(member)


# ----------------------------------------------------------------- 11: digest mismatch


def test_digest_mismatch_names_the_override():
    with pytest.raises(InvalidPatch, match=r"sha256 000000000000 != .*--ignore-digest"):
        SignalGrid.from_path(DIGEST_CASE)
    result = _scan(str(DIGEST_CASE / "BkgOnly.json"), str(DIGEST_CASE / "patchset.json"))
    assert result.exit_code == 2
    assert "pass --ignore-digest" in result.output


def test_ignore_digest_warns_and_matches_pyhf(caplog):
    ws = json.loads((DIGEST_CASE / "BkgOnly.json").read_text())
    ps = json.loads((DIGEST_CASE / "patchset.json").read_text())
    with caplog.at_level(logging.WARNING, logger="pyhf_dask.patchsets"):
        grid = SignalGrid.from_patchset(
            DIGEST_CASE / "BkgOnly.json", DIGEST_CASE / "patchset.json", ignore_digest=True
        )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "sha256 000000000000 != " in warned[0] and "used anyway" in warned[0]
    ds = pyhf_dask.scan(grid, kernel="pyhf").compute(scheduler="synchronous")
    obs, exp = _pyhf_cls(ws, ps["patches"][0]["patch"])
    assert float(ds.CLs_obs[0]) == pytest.approx(obs, rel=1e-6)
    assert ds.CLs_exp[0].values.tolist() == pytest.approx(exp, rel=1e-6)


def test_cli_ignore_digest(tmp_path):
    """A real process: the warning reaches stderr as one line; the scan runs."""
    out = tmp_path / "out.json"
    args = [str(DIGEST_CASE / "BkgOnly.json"), str(DIGEST_CASE / "patchset.json")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyhf_dask",
            "scan",
            *args,
            "--ignore-digest",
            "-o",
            str(out),
            "--kernel",
            "pyhf",
            "--executor",
            "synchronous",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert "sha256 000000000000 != 3a01449c57a6" in warnings[0]
    assert [p["name"] for p in json.loads(out.read_text())["points"]] == ["sig_100_10"]


def test_ignore_digest_in_a_folder():
    grid = SignalGrid.from_path(DIGEST_CASE, ignore_digest=True)
    assert grid.names == ("sig_100_10",)


# ----------------------------------------------------------------- 12: one workspace


@pytest.fixture
def ws_file(tmp_path) -> Path:
    path = tmp_path / "my_model.json"
    path.write_text(
        json.dumps(simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0]))
    )
    return path


def test_single_workspace_is_a_one_point_grid(ws_file):
    for grid in (SignalGrid.from_path(ws_file), SignalGrid.from_inputs([ws_file])):
        assert grid.names == ("my_model",)
        assert grid.labels == () and grid.values.shape == (1, 0)
        assert grid.patches == ([],)
    ds = pyhf_dask.scan(SignalGrid.from_path(ws_file), kernel="pyhf").compute(
        scheduler="synchronous"
    )
    obs, exp = _pyhf_cls(json.loads(ws_file.read_text()))
    assert ds.point.values.tolist() == ["my_model"]
    assert float(ds.CLs_obs[0]) == pytest.approx(obs, rel=1e-6)
    assert ds.CLs_exp[0].values.tolist() == pytest.approx(exp, rel=1e-6)


def test_cli_single_workspace_prints_json(ws_file):
    result = CliRunner().invoke(
        main, ["scan", str(ws_file), "--kernel", "pyhf", "--executor", "synchronous", "--json"]
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    data = json.loads(text)
    obs, exp = _pyhf_cls(json.loads(ws_file.read_text()))
    (point,) = data["points"]
    assert point["name"] == "my_model" and point["status"] == "converged"
    assert point["CLs_obs"] == pytest.approx(obs, rel=1e-6)
    assert point["CLs_exp"] == pytest.approx(exp, rel=1e-6)


def test_single_workspace_without_the_poi_is_one_clear_line(tmp_path):
    path = tmp_path / "bkg.json"
    path.write_text(json.dumps(_bkg_only()))
    result = _scan(str(path))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error [")


def test_single_workspace_with_region_is_refused(ws_file):
    with pytest.raises(InvalidGrid, match="--region only applies"):
        SignalGrid.from_inputs([ws_file], region="A")


def test_workspace_name_gives_coordinates_with_labels(ws_file, tmp_path):
    named = tmp_path / "model_300_100.json"
    named.write_bytes(ws_file.read_bytes())
    grid = SignalGrid.from_path(named, labels=["m1", "m2"])
    assert grid.values.tolist() == [[300.0, 100.0]]
    assert os.fspath(named) == grid.source
    assert np.isfinite(grid.values).all()
