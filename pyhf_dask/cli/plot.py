"""``pyhf-dask plot`` and ``pyhf-dask contour``: exclusion plots and contours of a result file.

Without options both use the first two grid labels as axes and, for a grid with more labels,
the slice holding the most points (for the sbottom archive: ``msb`` against ``mn2`` at
``mn1 = 60``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import xarray as xr

from pyhf_dask.contours import CURVES, SliceValue
from pyhf_dask.exceptions import InputError, InvalidOption, NoUsableResults

__all__ = ["check_points", "contour", "open_result", "parse_where", "plot"]

log = logging.getLogger(__name__)

_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
_KINDS = ("exclusion", "cls", "brazil", "limits", "significance")


def open_result(path: Path) -> xr.Dataset:
    """Read a result file into memory: a netCDF file or a ``.zarr`` store (complete or not)
    as written by ``pyhf-dask scan -o``; a store's pending points have no numbers."""
    if not path.exists():
        msg = f"{path}: no such file"
        raise InputError(msg)
    try:
        if path.is_dir():  # a Zarr store: read as the scan wrote it, with no warning
            from pyhf_dask.store_read import open_store

            ds = open_store(path)
        else:
            with xr.open_dataset(path) as opened:
                ds = opened.load()
    except (OSError, ValueError, KeyError) as exc:
        msg = f"{path}: not a readable result file ({exc})"
        raise InputError(msg) from exc
    if not ("CLs_obs" in ds or "p0_obs" in ds) or "point" not in ds.dims:
        msg = f"{path}: not a pyhf_dask result (no CLs_obs or p0_obs over points)"
        raise InputError(msg)
    return ds


def check_points(ds: xr.Dataset, path: Path) -> None:
    """Say what a result's unfitted points are before drawing it: a note for the pending
    points of an interrupted store, an error naming the likely cause when no point has a
    result.

    Raises:
        NoUsableResults: every point failed or is pending.
    """
    from pyhf_dask.cli.report import what_to_try
    from pyhf_dask.results import status_names

    if "status" not in ds:
        return
    status = status_names(ds["status"])
    n, pending, failed = status.size, int((status == "pending").sum()), status == "failed"
    if pending:
        click.echo(
            f"pyhf-dask: {pending} of {n} points of {path} are pending (not fitted yet: the "
            "scan was interrupted or is running); they are drawn as pending, and "
            "`pyhf-dask scan ... --resume` fits them",
            err=True,
        )
    if n and int(failed.sum()) + pending == n:
        what = (
            f"every one of the {n} points failed"
            if not pending
            else (f"no point has a result ({int(failed.sum())} failed, {pending} pending)")
        )
        tips = what_to_try(ds, failed) if failed.any() else ["resume the scan (--resume)"]
        msg = f"{path}: {what}, nothing to draw; likely: {tips[0]}"
        raise NoUsableResults(msg)


def parse_where(items: tuple[str, ...]) -> dict[str, SliceValue]:
    """``("mn1=60", "mx=10:20")`` into ``{"mn1": 60.0, "mx": (10.0, 20.0)}``.

    Example:
        >>> parse_where(("mn1=60", "mx=10:20"))
        {'mn1': 60.0, 'mx': (10.0, 20.0)}
    """
    where: dict[str, SliceValue] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(item)
            if ":" in value:
                low, high = (float(v) for v in value.split(":"))
                where[name.strip()] = (min(low, high), max(low, high))
            else:
                where[name.strip()] = float(value)
        except ValueError as exc:
            msg = f"--where {item!r}: expected NAME=VALUE or NAME=LOW:HIGH, e.g. mn1=60"
            raise InvalidOption(msg) from exc
    return where


def _plane_options(func: Any) -> Any:
    options = [
        click.option(
            "-x",
            "--x",
            "x",
            metavar="NAME",
            help="Coordinate on the horizontal axis [default: first grid label].",
        ),
        click.option(
            "-y",
            "--y",
            "y",
            metavar="NAME",
            help="Coordinate on the vertical axis [default: second grid label].",
        ),
        click.option(
            "--where",
            multiple=True,
            metavar="NAME=VALUE",
            help="Slice of another coordinate, e.g. mn1=60 or mn1=50:70 (repeatable) "
            "[default: the slice holding the most points].",
        ),
        click.option(
            "--mix-slices",
            is_flag=True,
            help="Accept a --where range that holds several values of its coordinate (points "
            "of several slices in one plane) [default: refused].",
        ),
        click.option(
            "--cl", type=float, default=None, help="Confidence level [default: the result's, 0.95]."
        ),
        click.option(
            "--poi",
            type=float,
            default=None,
            help="POI value of a POI scan [default: 1, or the nearest].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Figure file: .png, .pdf or .svg.",
)
@click.option(
    "--kind",
    type=click.Choice(_KINDS),
    default="exclusion",
    show_default=True,
    help="exclusion plot, CLs map, Brazil band of a point, upper-limit map, or the "
    "significance (Z) map of a --test-stat q0 scan with its Z = 3, 5 lines.",
)
@_plane_options
@click.option("--band2/--no-band2", default=False, help="Also draw the ±2σ expected band.")
@click.option("--points/--no-points", default=True, help="Mark the fitted points.")
@click.option(
    "--symbols/--names",
    default=False,
    help="Axis labels as SUSY symbols (m(b̃₁)) or coordinate names [default: names].",
)
@click.option(
    "--curve",
    type=click.Choice(CURVES),
    default="obs",
    show_default=True,
    help="Curve of a CLs map.",
)
@click.option(
    "--point",
    default="0",
    metavar="NAME|INDEX",
    help="Point of a Brazil band: patch name or index [default: 0].",
)
@click.option("--log-y", is_flag=True, help="Logarithmic CLs axis of a Brazil band.")
@click.option("--title", default=None, help="Title of an exclusion plot.")
@click.option("--label", default=None, help="Analysis label at the head of the legend.")
@click.option(
    "--energy", type=float, default=None, metavar="TEV", help="Centre-of-mass energy, in TeV."
)
@click.option(
    "--lumi", type=float, default=None, metavar="IFB", help="Integrated luminosity, in fb⁻¹."
)
@click.option(
    "--kinematic-limit",
    type=float,
    default=None,
    metavar="OFFSET",
    help="Draw the line y = x - OFFSET (0 for m(χ̃⁰₂) = m(b̃₁) in the sbottom plane).",
)
def plot(
    results: Path,
    output: Path,
    kind: str,
    x: str | None,
    y: str | None,
    where: tuple[str, ...],
    mix_slices: bool,
    cl: float | None,
    poi: float | None,
    band2: bool,
    points: bool,
    symbols: bool,
    curve: str,
    point: str,
    log_y: bool,
    title: str | None,
    label: str | None,
    energy: float | None,
    lumi: float | None,
    kinematic_limit: float | None,
) -> None:
    """Draw an exclusion plot (or another plot) of RESULTS (.nc or .zarr) into a figure file.

    Bands have the same colours in every plot: green ±1σ, yellow ±2σ.
    """
    from pyhf_dask import plots, plots_poi

    if output.suffix.lower() not in _FIGURE_SUFFIXES:
        msg = f"{output}: figure file must end in {', '.join(_FIGURE_SUFFIXES)}"
        raise InvalidOption(msg)
    ds = open_result(results)
    check_points(ds, results)
    heading: dict[str, Any] = {"label": label, "energy": energy, "lumi": lumi}
    plane: dict[str, Any] = {
        "x": x,
        "y": y,
        "where": parse_where(where),
        "mix_slices": mix_slices,
        "symbols": symbols,
        "kinematic_limit": kinematic_limit,
        **heading,
    }
    if kind == "exclusion":
        plots.plot_exclusion(
            ds,
            cl=cl,
            poi=poi,
            band2=band2,
            show_points=points,
            title=title,
            save_figure=output,
            **plane,
        )
    elif kind == "cls":
        plots.plot_cls_map(ds, curve=curve, cl=cl, poi=poi, save_figure=output, **plane)
    elif kind == "brazil":
        which: int | str = int(point) if point.lstrip("-").isdigit() else point
        plots_poi.plot_brazil(ds, point=which, cl=cl, log_y=log_y, save_figure=output, **heading)
    elif kind == "significance":
        plots_poi.plot_significance_map(ds, curve=curve, save_figure=output, **plane)
    else:
        plots_poi.plot_upper_limits(ds, save_figure=output, **plane)
    click.echo(f"wrote {output}")


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON file [default: standard output].",
)
@_plane_options
@click.option(
    "--curve",
    "curves",
    type=click.Choice(CURVES),
    multiple=True,
    help="Curve to trace (repeatable) [default: all]",
)
@click.option(
    "--limits",
    is_flag=True,
    help="Trace where the upper limit on the POI is 1 (POI scans) instead of CLs.",
)
@click.option(
    "--resolution",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Interpolation mesh nodes per axis.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "hepdata"]),
    default="json",
    show_default=True,
    help="JSON polylines, or HEPData YAML tables (-o FOLDER: submission.yaml and one table "
    "per line; -o FILE.yaml: one line's table).",
)
def contour(
    results: Path,
    output: Path | None,
    x: str | None,
    y: str | None,
    where: tuple[str, ...],
    mix_slices: bool,
    cl: float | None,
    poi: float | None,
    curves: tuple[str, ...],
    limits: bool,
    resolution: int,
    fmt: str = "json",
) -> None:
    """Write the CLs = 1 - CL contours of RESULTS.nc as JSON polylines (or HEPData tables)."""
    from pyhf_dask.contours import find_contours

    if fmt == "hepdata" and output is None:
        msg = "--format hepdata needs -o FOLDER (or -o FILE.yaml for one line)"
        raise InvalidOption(msg)
    if fmt == "hepdata" and output is not None and output.suffix.lower() == ".json":
        msg = f"{output}: HEPData tables are YAML: give a folder or a .yaml file"
        raise InvalidOption(msg)
    if fmt == "json" and output is not None and output.suffix.lower() != ".json":
        msg = f"{output}: contour file must end in .json"
        raise InvalidOption(msg)
    ds = open_result(results)
    check_points(ds, results)
    found = find_contours(
        ds,
        x=x,
        y=y,
        where=parse_where(where),
        mix_slices=mix_slices,
        cl=cl,
        poi=poi,
        curves=curves or CURVES,
        resolution=resolution,
        quantity="upper_limit" if limits else "cls",
    )
    if fmt == "hepdata":
        from pyhf_dask.export import write_hepdata

        assert output is not None
        written = write_hepdata(found, output)
        click.echo(f"wrote {output}: {len(written)} HEPData files")
        return
    text = found.to_json()
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        lines = sum(len(c.lines) for c in found.contours)
        click.echo(
            f"wrote {output}: {lines} lines in {found.x_name}-{found.y_name}"
            + (f" at {found.selection}" if found.selection else "")
        )
