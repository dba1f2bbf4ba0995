"""``pyhf-dask scan``: run a hypothesis-test scan and write the result."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import xarray as xr

from pyhf_dask.exceptions import InvalidOption

__all__ = ["format_table", "scan"]

log = logging.getLogger(__name__)

_OUTPUT_SUFFIXES = (".nc", ".zarr")


def format_table(ds: xr.Dataset, *, limit: int | None = None) -> str:
    """Plain-text table of a computed result: one row per point.

    Example:
        >>> ds = xr.Dataset(
        ...     {"CLs_obs": ("point", [0.5]),
        ...      "CLs_exp": (("point", "band"), [[.1, .2, .3, .4, .5]]),
        ...      "status": ("point", ["converged"])},
        ...     coords={"patch": ("point", ["a_1"]), "band": [-2, -1, 0, 1, 2]})
        >>> print(format_table(ds))  # doctest: +NORMALIZE_WHITESPACE
        patch  CLs_obs  exp-2σ  exp-1σ  exp  exp+1σ  exp+2σ  status
        a_1    0.5000   0.1000  0.2000  0.3000 0.4000 0.5000 converged
    """
    if "poi" in ds.dims:
        ds = ds.isel(poi=0)
    names = [str(n) for n in ds["patch"].values]
    width = max([len("patch"), *map(len, names)])
    header = [
        "patch".ljust(width),
        "CLs_obs",
        "exp-2σ",
        "exp-1σ",
        "exp   ",
        "exp+1σ",
        "exp+2σ",
        "status",
    ]
    rows = ["  ".join(header)]
    obs = np.asarray(ds["CLs_obs"].values)
    exp = np.asarray(ds["CLs_exp"].values)
    status = np.asarray(ds["status"].values).astype(str)
    count = len(names) if limit is None else min(limit, len(names))
    for i in range(count):
        cells = [names[i].ljust(width), f"{obs[i]:.4f} ", *(f"{v:.4f}" for v in exp[i]), status[i]]
        rows.append("  ".join(cells))
    if count < len(names):
        rows.append(f"... {len(names) - count} more points")
    return "\n".join(rows)


def _write(ds: xr.Dataset, output: Path) -> None:
    from pyhf_dask.results import to_netcdf

    if output.suffix == ".nc":
        to_netcdf(ds, output)
    else:
        msg = f"{output}: output must end in {' or '.join(_OUTPUT_SUFFIXES)}"
        raise InvalidOption(msg)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--region", help="Sub-folder of a folder or archive input (e.g. RegionA).")
@click.option(
    "--patch",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only points whose name matches (repeatable), e.g. 'sbottom_1300_*'.",
)
@click.option("--labels", help="Names of the coordinates in patch file names, e.g. msb,mn2,mn1.")
@click.option(
    "--poi-value",
    "poi_values",
    type=float,
    multiple=True,
    help="POI value to test (repeatable: several make a POI scan with upper limits).",
)
@click.option(
    "--test-stat",
    type=click.Choice(["qtilde", "q"]),
    default=None,
    help="Test statistic [default: qtilde].",
)
@click.option(
    "--normsys-interpcode",
    type=click.Choice(["code1", "code4"]),
    default=None,
    help="normsys interpolation [default: pyhf's code1].",
)
@click.option(
    "--histosys-interpcode",
    type=click.Choice(["code0", "code2", "code4p"]),
    default=None,
    help="histosys interpolation [default: pyhf's code0].",
)
@click.option("--measurement", help="Measurement of the workspace [default: the first].")
@click.option(
    "--kernel",
    type=click.Choice(["auto", "pyhf", "jax"]),
    default=None,
    help="Fit kernel [default: jax when installed, else pyhf].",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    default=None,
    help="Device of the JAX kernel [default: JAX's choice].",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where fits run: local, threads, synchronous (more with extras).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes [default: one per core].",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Points per task [default: chosen from kernel and grid].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Result file: .nc (netCDF-4).",
)
@click.option(
    "--table/--no-table",
    default=None,
    help="Print a result table [default: when there is no output file].",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: on a terminal]."
)
def scan(
    inputs: tuple[Path, ...],
    region: str | None,
    patterns: tuple[str, ...],
    labels: str | None,
    poi_values: tuple[float, ...],
    test_stat: str | None,
    normsys_interpcode: str | None,
    histosys_interpcode: str | None,
    measurement: str | None,
    kernel: str | None,
    device: str | None,
    executor: str,
    workers: int | None,
    chunk_size: int | None,
    output: Path | None,
    table: bool | None,
    progress: bool | None,
) -> None:
    """Scan a signal grid and write CLs per point.

    \b
    INPUTS is one of:
      BKG_ONLY.json PATCHSET.json           a pyhf PatchSet
      BKG_ONLY.json patch.A.json ...        HEPData jsonpatch files
      DIR_OR_ARCHIVE [--region NAME]        a folder or .tar.gz with BkgOnly.json + patches
    """
    from pyhf_dask.executors import open_scheduler
    from pyhf_dask.grid import SignalGrid
    from pyhf_dask.results import summarize
    from pyhf_dask.scan import scan as build_scan

    if output is not None and output.suffix not in _OUTPUT_SUFFIXES:
        msg = f"{output}: output must end in {' or '.join(_OUTPUT_SUFFIXES)}"
        raise InvalidOption(msg)
    start = time.perf_counter()
    label_list = [s for s in labels.split(",")] if labels else None
    grid = SignalGrid.from_inputs(list(inputs), region=region, labels=label_list)
    grid = grid.select(patterns)
    poi: Any = poi_values[0] if len(poi_values) == 1 else (list(poi_values) or 1.0)
    lazy = build_scan(
        grid,
        poi_value=poi,
        test_stat=test_stat,
        kernel=kernel,
        chunk_size=chunk_size,
        normsys_interpcode=normsys_interpcode,
        histosys_interpcode=histosys_interpcode,
        measurement=measurement,
        device=device,
    )
    log.info("scanning %d points with kernel %s on %s", len(grid), lazy.attrs["kernel"], executor)
    show_progress = sys.stderr.isatty() if progress is None else progress
    with open_scheduler(executor, workers=workers) as scheduler, _progress(show_progress):
        ds = lazy.compute(scheduler=scheduler)
    if output is not None:
        _write(ds, output)
    if table or (table is None and output is None):
        click.echo(format_table(ds))
    elapsed = time.perf_counter() - start
    where = f" -> {output}" if output is not None else ""
    click.echo(f"pyhf-dask: {summarize(ds)} in {elapsed:.1f} s{where}", err=True)


@contextlib.contextmanager
def _progress(enabled: bool) -> Any:
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        yield
