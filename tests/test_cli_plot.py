"""``pyhf-dask plot`` and ``pyhf-dask contour`` on the committed RegionA result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyhf_dask.cli import main
from pyhf_dask.cli.plot import contour, parse_where, plot
from pyhf_dask.exceptions import InputError, InvalidOption

pytest.importorskip("matplotlib")

DATA = Path(__file__).parent / "data"
REGION_A = str(DATA / "regionA_pyhf.nc")
POI_SCAN = str(DATA / "regionA_poi_scan.nc")
registered = pytest.mark.skipif(
    not {"plot", "contour"} <= set(main.commands), reason="plot/contour not registered yet"
)


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


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_plot_writes_figures(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"exclusion{suffix}"
    result = CliRunner().invoke(plot, [REGION_A, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


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


@registered
def test_registered_commands_print_one_line_errors(tmp_path: Path) -> None:
    out = tmp_path / "exclusion.png"
    result = CliRunner().invoke(main, ["plot", REGION_A, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = CliRunner().invoke(main, ["contour", REGION_A, "--where", "mn1=7"])
    assert result.exit_code == 2
    assert "Error [option]: no points in the slice" in result.output
