"""SignalGrid: patchsets, patch files, folders, archives and function-defined grids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pyhf_dask.exceptions import InvalidGrid, InvalidPatch
from pyhf_dask.grid import (
    FunctionPatches,
    SignalGrid,
    materialize,
    parse_coordinates,
    scaled_signal,
    signal_patch,
)


def two_mass_signal(m1: float, m2: float) -> list[dict]:
    """Seed-style signal whose yields depend on two masses."""
    scale = np.exp(-(m1 - 200.0) / 300.0) * (1.0 - m2 / (m1 + 1.0))
    return signal_patch([12.0 * scale, 11.0 * scale])


def test_parse_coordinates():
    assert parse_coordinates("sbottom_1300_205_60") == (1300.0, 205.0, 60.0)
    assert parse_coordinates("ERJR_100p0_20p5") == (100.0, 20.5)
    assert parse_coordinates("C1N2_Wh_hbb_300_0") == (300.0, 0.0)
    assert parse_coordinates("no_numbers_here") == ()


def test_from_patchset_uses_labels_and_values(ewk3l_dir):
    grid = SignalGrid.from_patchset(ewk3l_dir / "BkgOnly.json", ewk3l_dir / "patchset.json")
    patchset = json.loads((ewk3l_dir / "patchset.json").read_text())
    assert grid.labels == tuple(patchset["metadata"]["labels"])
    assert len(grid) == len(patchset["patches"]) == 64
    first = patchset["patches"][0]
    assert grid.names[0] == first["metadata"]["name"]
    np.testing.assert_array_equal(grid.values[0], first["metadata"]["values"])
    assert grid.patches[0] == first["patch"]
    assert grid.metadata["analysis_id"] == patchset["metadata"]["analysis_id"]


def test_patchset_digest_mismatch_is_refused(ewk3l_dir, sbottom_dir):
    with pytest.raises(InvalidPatch, match="digest does not match"):
        SignalGrid.from_patchset(
            sbottom_dir / "RegionA" / "BkgOnly.json", ewk3l_dir / "patchset.json"
        )


def test_from_patch_files_with_labels(sbottom_dir):
    region = sbottom_dir / "RegionA"
    files = [region / "patch.sbottom_1300_205_60.json", region / "patch.sbottom_1400_950_60.json"]
    grid = SignalGrid.from_patch_files(region / "BkgOnly.json", files, labels=["msb", "mn2", "mn1"])
    assert grid.names == ("sbottom_1300_205_60", "sbottom_1400_950_60")
    assert grid.labels == ("msb", "mn2", "mn1")
    np.testing.assert_array_equal(grid.values, [[1300, 205, 60], [1400, 950, 60]])
    generic = SignalGrid.from_patch_files(region / "BkgOnly.json", files)
    assert generic.labels == ("x0", "x1", "x2")


def test_wrong_number_of_labels(sbottom_dir):
    region = sbottom_dir / "RegionA"
    with pytest.raises(InvalidGrid, match="2 labels given"):
        SignalGrid.from_patch_files(
            region / "BkgOnly.json", [region / "patch.sbottom_1300_205_60.json"], labels=["a", "b"]
        )


def test_archive_and_directory_agree(sbottom_archive, sbottom_dir):
    from_archive = SignalGrid.from_archive(sbottom_archive, region="RegionB")
    from_dir = SignalGrid.from_directory(sbottom_dir, region="RegionB")
    assert len(from_archive) == 218
    assert from_archive.names == from_dir.names
    assert from_archive.workspace_digest() == from_dir.workspace_digest()
    assert from_archive.patches_digest() == from_dir.patches_digest()


def test_archive_with_a_patchset(ewk3l_archive):
    grid = SignalGrid.from_path(ewk3l_archive)
    assert grid.labels == ("mn2", "mn1")
    assert len(grid) == 64


def test_region_is_required_when_ambiguous(sbottom_archive):
    from pyhf_dask.exceptions import InvalidArchive

    with pytest.raises(InvalidArchive, match="choose one with --region"):
        SignalGrid.from_path(sbottom_archive)
    with pytest.raises(InvalidArchive, match="no region 'RegionZ'"):
        SignalGrid.from_path(sbottom_archive, region="RegionZ")


def test_duplicate_coordinates_are_refused(sbottom_dir, tmp_path):
    region = sbottom_dir / "RegionA"
    shutil.copy(region / "BkgOnly.json", tmp_path / "BkgOnly.json")
    shutil.copy(
        region / "patch.sbottom_1300_205_60.json", tmp_path / "patch.sbottom_1300_205_60.json"
    )
    shutil.copy(
        region / "patch.sbottom_1300_205_60.json", tmp_path / "patch.other_1300_205_60.json"
    )
    with pytest.raises(InvalidGrid, match="duplicate grid coordinates"):
        SignalGrid.from_path(tmp_path)


def test_select_by_glob(sbottom_archive):
    grid = SignalGrid.from_path(sbottom_archive, region="RegionA").select(["sbottom_1300_*"])
    assert grid.names
    assert all(n.startswith("sbottom_1300_") for n in grid.names)
    with pytest.raises(InvalidGrid, match="no point matches"):
        grid.select(["nothing_*"])


def test_from_function_is_a_regular_grid(seed_workspace):
    grid = SignalGrid.from_function(
        seed_workspace, two_mass_signal, m1=[200, 400, 600], m2=[0, 100]
    )
    assert len(grid) == 6
    assert grid.labels == ("m1", "m2")
    assert grid.patches is None
    source = grid.chunk(2, 4)
    assert isinstance(source, FunctionPatches)
    patches = materialize(source)
    assert patches == [two_mass_signal(400.0, 0.0), two_mass_signal(400.0, 100.0)]


def test_function_grid_is_picklable(seed_workspace):
    import pickle

    grid = SignalGrid.from_function(seed_workspace, scaled_signal, scale=[1.0, 2.0])
    source = pickle.loads(pickle.dumps(grid.chunk(0, 2)))
    assert materialize(source) == [scaled_signal(1.0), scaled_signal(2.0)]


def test_from_inputs_dispatch(ewk3l_dir, sbottom_dir):
    ps = SignalGrid.from_inputs([ewk3l_dir / "BkgOnly.json", ewk3l_dir / "patchset.json"])
    assert len(ps) == 64
    region = sbottom_dir / "RegionA"
    files = SignalGrid.from_inputs(
        [region / "BkgOnly.json", region / "patch.sbottom_1300_205_60.json"]
    )
    assert files.names == ("sbottom_1300_205_60",)
    folder = SignalGrid.from_inputs([sbottom_dir], region="RegionC")
    assert len(folder) == 215


def test_points_of_patch_files_and_their_names_from_grid():
    """Reading the points of published inputs lives in ``pyhf_dask.points``; ``grid``
    still exports ``parse_coordinates``."""
    from pyhf_dask import grid, points

    assert grid.parse_coordinates is points.parse_coordinates
    ops = signal_patch([1.0, 2.0])
    found = points.patch_file_points(
        [("b/patch.s_2_1.json", ops), ("a/patch.s_1p5_1.json", ops)], None, source="ws"
    )
    assert found.names == ("s_1p5_1", "s_2_1") and found.labels == ("x0", "x1")
    np.testing.assert_array_equal(found.values, [[1.5, 1.0], [2.0, 1.0]])
    with pytest.raises(InvalidGrid, match="duplicate labels"):
        points.check_labels(["m", "m"], 2, "ws")
    with pytest.raises(InvalidPatch, match="not a jsonpatch"):
        points.check_patch({"op": "add"}, "p.json")
