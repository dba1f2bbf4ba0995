"""``pyhf-dask plot`` and ``pyhf-dask contour`` on the committed RegionA result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from pyhf_dask.cli import main
from pyhf_dask.cli.plot import contour, parse_where, plot
from pyhf_dask.exceptions import InputError, InvalidOption

pytest.importorskip("matplotlib")

DATA = Path(__file__).parent / "data"
REGION_A = str(DATA / "regionA_pyhf.nc")
POI_SCAN = str(DATA / "regionA_poi_scan.nc")


def test_contour_defaults_to_msb_mn2_at_mn1_60(tmp_path: Path) -> None:
    out = tmp_path / "contours.json"
    result = CliRunner().invoke(contour, [REGION_A, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "msb-mn2" in result.output
    data = json.loads(out.read_text())
    assert (data["x"], data["y"], data["slice"]) == ("msb", "mn2", {"mn1": 60.0})
    assert [c["curve"] for c in data["contours"]] == [
        "obs",
        "exp",
        "exp-1",
        "exp+1",
        "exp-2",
        "exp+2",
    ]
    assert data["contours"][0]["lines"]
    assert all(len(point) == 2 for point in data["contours"][0]["lines"][0])


def test_contour_to_stdout_with_options() -> None:
    result = CliRunner().invoke(
        contour,
        [REGION_A, "-x", "msb", "-y", "mn2", "--where", "mn1=60", "--curve", "obs", "--cl", "0.9"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["cl"] == 0.9
    assert [c["curve"] for c in data["contours"]] == ["obs"]
    assert data["contours"][0]["level"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "suffix",
    [
        ".png",
        pytest.param(".pdf", marks=pytest.mark.slow),
        pytest.param(".svg", marks=pytest.mark.slow),
    ],
)
def test_plot_writes_figures(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"exclusion{suffix}"
    result = CliRunner().invoke(plot, [REGION_A, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("inputs", "args"),
    [
        (REGION_A, ["--kind", "cls", "--curve", "exp", "--symbols"]),
        (REGION_A, ["--band2", "--no-points", "--where", "mn1=60", "--title", "A"]),
        (POI_SCAN, ["--kind", "brazil", "--point", "sbottom_1400_950_60"]),
        (POI_SCAN, ["--kind", "brazil", "--point", "1"]),
    ],
)
def test_plot_kinds(tmp_path: Path, inputs: str, args: list[str]) -> None:
    out = tmp_path / "figure.png"
    result = CliRunner().invoke(plot, [inputs, "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("command", "args", "error", "match"),
    [
        (plot, [REGION_A, "-o", "x.jpg"], InvalidOption, "must end in .png"),
        (plot, ["missing.nc", "-o", "x.png"], InputError, "no such file"),
        (plot, [REGION_A, "-o", "x.png", "--where", "mn1"], InvalidOption, "NAME=VALUE"),
        (plot, [REGION_A, "-o", "x.png", "-x", "mq"], InvalidOption, "unknown grid coordinate"),
        (plot, [REGION_A, "-o", "x.png", "--kind", "brazil"], InvalidOption, "POI scan"),
        (contour, [REGION_A, "-o", "x.txt"], InvalidOption, "must end in .json"),
        (contour, [REGION_A, "--where", "mn1=7"], InvalidOption, "no points in the slice"),
        (contour, [__file__], InputError, "not a readable result"),
    ],
)
def test_errors_are_input_errors(
    tmp_path: Path, command: object, args: list[str], error: type[Exception], match: str
) -> None:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert isinstance(result.exception, error)
    assert match in str(result.exception)


def test_parse_where() -> None:
    assert parse_where(("mn1=60", "mx = 20:10")) == {"mn1": 60.0, "mx": (10.0, 20.0)}
    with pytest.raises(InvalidOption):
        parse_where(("=3",))


def test_registered_commands_print_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "exclusion.png"
    result = CliRunner().invoke(main, ["plot", REGION_A, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = CliRunner().invoke(main, ["contour", REGION_A, "--where", "mn1=7"])
    assert result.exit_code == 2
    assert "Error [option]: no points in the slice" in result.output


def _one_line_error(result: object) -> str:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_a_slice_that_is_a_line_is_one_line_listing_the_planes(tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    line = _one_line_error(
        CliRunner().invoke(main, ["plot", REGION_A, "-o", out, "--where", "mn1=100"])
    )
    assert line == (
        "Error [option]: the slice mn1 = 100 holds 10 points on a line of the msb-mn2 plane, "
        "not a 2-D grid; slices of msb-mn2 with a 2-D grid: mn1 = 60 (130 points), "
        "mn1 = 500 (6 points)"
    )
    assert not Path(out).exists()


def test_a_range_across_slices_is_refused_unless_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "x.png"  # never written
    args = ["plot", REGION_A, "-o", str(out), "--where", "mn1=0:700"]
    line = _one_line_error(CliRunner().invoke(main, args))
    assert line.startswith("Error [option]: the range mn1 = 0:700 mixes 21 slices")
    assert "--where mn1=60" in line and "--mix-slices" in line
    assert not out.exists()
    mixed = ["contour", REGION_A, "--where", "mn1=0:700", "--curve", "obs", "--mix-slices"]
    result = CliRunner().invoke(main, [*mixed, "--resolution", "50"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["slice"] == {"mn1": [0.0, 700.0]}


def test_an_all_failed_result_says_so(tmp_path: Path) -> None:
    with xr.open_dataset(REGION_A) as opened:
        ds = opened.load()
    ds["status"][:] = "failed"
    ds["CLs_obs"][:] = np.nan
    ds["CLs_exp"][:] = np.nan
    failed = tmp_path / "failed.nc"
    ds.to_netcdf(failed)
    for command in (["plot", str(failed), "-o", str(tmp_path / "x.png")], ["contour", str(failed)]):
        line = _one_line_error(CliRunner().invoke(main, command))
        # the category of the results, not of an option (issue 22, item 8)
        assert line.startswith(f"Error [results]: {failed}: every one of the "), line
        assert "points failed, nothing to draw; likely: " in line


def test_analysis_label_and_kinematic_limit_options(tmp_path: Path) -> None:
    out = tmp_path / "labelled.png"
    args = ["--label", "sbottom", "--energy", "13", "--lumi", "139", "--kinematic-limit", "0"]
    result = CliRunner().invoke(main, ["plot", REGION_A, "-o", str(out), "--band2", *args])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    brazil = tmp_path / "brazil.png"
    result = CliRunner().invoke(
        main, ["plot", POI_SCAN, "-o", str(brazil), "--kind", "brazil", *args[:6]]
    )
    assert result.exit_code == 0, result.output
    assert brazil.exists()
