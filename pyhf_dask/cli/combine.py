"""``pyhf-dask combine``: the best expected region per point of several result files.

The command-line form of :func:`pyhf_dask.combine.combine_regions` followed by
:func:`pyhf_dask.combine.best_expected`: the results of several signal regions (``.nc``
files or ``.zarr`` stores of ``pyhf-dask scan``) are lined up by point name, and per point
the region with the lowest median expected CLs (the lowest median expected upper limit of
a POI scan) is kept, with its observed CLs and a ``best_region`` variable.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import xarray as xr

from pyhf_dask.exceptions import InputError, InvalidOption, OutputError

__all__ = ["combine", "parse_region"]

log = logging.getLogger(__name__)

_SUFFIXES = (".nc", ".zarr", ".json", ".csv")


def parse_region(item: str) -> tuple[str | None, Path]:
    """``"A=regionA.nc"`` into ``("A", Path("regionA.nc"))``; ``"regionA.nc"``: no name.

    Example:
        >>> parse_region("A=out/regionA.nc"), parse_region("regionB.nc")
        (('A', PosixPath('out/regionA.nc')), (None, PosixPath('regionB.nc')))
    """
    name, sep, path = item.partition("=")
    if sep and name and "/" not in name and not Path(item).exists():
        return name.strip(), Path(path)
    return None, Path(item)


def _open(path: Path) -> xr.Dataset:
    """A result file or store, read into memory (a ``status`` of names, as older files
    hold it, becomes the flag values)."""
    from pyhf_dask.results import encode_status, status_attrs

    if path.suffix == ".zarr" or path.is_dir():
        from pyhf_dask.store_read import is_result_store, open_store

        if not is_result_store(path):
            msg = f"{path}: not a result store of pyhf-dask scan"
            raise InputError(msg)
        ds = open_store(path)
    else:
        from pyhf_dask.cli.plot import open_result

        ds = open_result(path)
    if "status" in ds and ds["status"].dtype.kind not in "iu":
        try:
            codes = encode_status(ds["status"].values)
        except ValueError as exc:
            msg = f"{path}: {exc}"
            raise InputError(msg) from exc
        ds["status"] = xr.DataArray(codes, dims=ds["status"].dims, attrs=status_attrs())
    return ds


def _variable_strings(ds: xr.Dataset) -> xr.Dataset:
    """Every string variable and coordinate as variable-length text (Zarr v3 stores
    fixed-width strings only with a warning about their unstable specification)."""
    from pyhf_dask.results import as_text

    text = {
        str(name): (var.dims, as_text(var.values), var.attrs)
        for name, var in {**ds.coords, **ds.data_vars}.items()
        if var.dtype.kind in "OUS"
    }
    coords = {k: v for k, v in text.items() if k in ds.coords}
    out = ds.assign_coords(coords)
    return out.assign({k: v for k, v in text.items() if k not in ds.coords})


@click.command()
@click.argument("results", nargs=-1, required=True, metavar="[NAME=]RESULT ...")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="The best region per point: .nc, .zarr, or a table in .json or .csv.",
)
@click.option(
    "--dim",
    default="region",
    show_default=True,
    help="Name of the region dimension (and of the best_region variable's values).",
)
def combine(results: tuple[str, ...], output: Path, dim: str) -> None:
    """Per point, the results of the region with the best expected sensitivity.

    \b
    RESULT is a .nc file or a .zarr store of `pyhf-dask scan`, named by NAME= or else by
    its file name without suffix, e.g.
      pyhf-dask combine A=regionA.nc B=regionB.nc C=regionC.nc -o best.nc
    """
    from pyhf_dask.cli.scan import check_writable, write_netcdf
    from pyhf_dask.combine import best_expected, combine_regions
    from pyhf_dask.results import status_names

    if output.suffix not in _SUFFIXES:
        msg = f"{output}: output must end in {', '.join(_SUFFIXES)}"
        raise InvalidOption(msg)
    if output.suffix == ".zarr" and output.exists():
        msg = f"{output}: exists; remove it or choose another output"
        raise OutputError(msg)
    check_writable(output)
    regions: dict[str, xr.Dataset] = {}
    for item in results:
        name, path = parse_region(item)
        name = name or path.name.removesuffix(path.suffix)
        if name in regions:
            msg = f"{item}: the region name {name!r} is given twice (name them: A=file.nc)"
            raise InvalidOption(msg)
        regions[name] = _open(path)
    if len(regions) < 2:
        log.warning("only one region given: its results are written with best_region set")
    best = best_expected(combine_regions(regions, dim=dim), dim=dim).compute()
    if output.suffix == ".nc":
        write_netcdf(best, output)
    elif output.suffix == ".zarr":
        _variable_strings(best).to_zarr(output, mode="w-", consolidated=False)
    else:
        from pyhf_dask import export

        (export.write_json if output.suffix == ".json" else export.write_csv)(best, output)
    chosen = best["best_region"].to_series().value_counts()
    counts = ", ".join(f"{k}: {v}" for k, v in chosen.items())
    n = best.sizes["point"]
    none = int((status_names(best["status"]) == "missing").sum()) if "status" in best else 0
    unfitted = f" ({none} fitted in no region)" if none else ""
    click.echo(f"wrote {output}: {n} points{unfitted} from {len(regions)} regions (best: {counts})")
