"""What ``pyhf-dask scan`` prints: the result table, the summary line, the resume hint."""

from __future__ import annotations

import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import xarray as xr

__all__ = ["EXIT_FAILED_POINTS", "format_table", "interrupted", "report", "what_to_try"]

#: Exit status of ``--fail-on-error`` when some points failed.
EXIT_FAILED_POINTS = 3


def format_table(ds: xr.Dataset, *, limit: int | None = None) -> str:
    """Plain-text table of a computed result: one row per point, in grid order.

    Rows are sorted numerically by the grid labels (``sbottom_300_...`` before
    ``sbottom_1000_...``), else by the numbers in the patch names; every number has the
    same width, so rows of failed points (NaN) stay aligned.

    Example:
        >>> ds = xr.Dataset(
        ...     {"CLs_obs": ("point", [0.5, np.nan]),
        ...      "CLs_exp": (("point", "band"), [[.1, .2, .3, .4, .5], [np.nan] * 5]),
        ...      "status": ("point", np.array([0, 2], dtype=np.int8))},
        ...     coords={"point": ["a_10", "a_9"], "band": [-2, -1, 0, 1, 2]})
        >>> print(format_table(ds))
        patch  CLs_obs   exp-2σ   exp-1σ      exp   exp+1σ   exp+2σ  status
        a_9        nan      nan      nan      nan      nan      nan  failed
        a_10    0.5000   0.1000   0.2000   0.3000   0.4000   0.5000  converged
    """
    from pyhf_dask.planes import grid_labels
    from pyhf_dask.results import point_names, status_names

    if "poi" in ds.dims:
        ds = ds.isel(poi=0)
    names = point_names(ds).tolist()
    labels = [name for name in grid_labels(ds) if name in ds.coords]
    if labels:
        columns = [np.asarray(ds[name].values, dtype=float) for name in labels]
        keys: list[Any] = [tuple(c[i] for c in columns) for i in range(len(names))]
    else:  # natural order of the names: numbers compared as numbers
        keys = [
            [(0, float(part), "") if part[:1].isdigit() else (1, 0.0, part) for part in parts]
            for parts in (re.findall(r"\d+(?:\.\d+)?|\D+", name) for name in names)
        ]
    order = sorted(range(len(names)), key=lambda i: (keys[i], names[i]))
    width = max([len("patch"), *map(len, names)])
    header = ["CLs_obs", "exp-2σ", "exp-1σ", "exp", "exp+1σ", "exp+2σ"]
    cell = max(map(len, header))
    rows = ["  ".join(["patch".ljust(width), *(h.rjust(cell) for h in header), "status"])]
    obs = np.asarray(ds["CLs_obs"].values, dtype=float)
    exp = np.asarray(ds["CLs_exp"].values, dtype=float)
    status = status_names(ds["status"]).tolist()
    count = len(names) if limit is None else min(limit, len(names))
    for i in order[:count]:
        numbers = [f"{v:{cell}.4f}" for v in (obs[i], *exp[i])]
        rows.append("  ".join([names[i].ljust(width), *numbers, status[i]]))
    if count < len(names):
        rows.append(f"... {len(names) - count} more points")
    return "\n".join(rows)


def report(
    ds: xr.Dataset,
    *,
    output: Path | None,
    elapsed: float,
    fitted: int | None,
    table: bool | None,
    fail_on_error: bool,
) -> None:
    """Print the table (``table``, or no output file), the summary and the failed points.

    Args:
        ds: the computed result.
        output: the file written, if any.
        elapsed: seconds the scan took.
        fitted: points fitted in this run (a store), ``None`` for a whole scan.
        table: print the table (``None``: when there is no output file).
        fail_on_error: exit with :data:`EXIT_FAILED_POINTS` when a point failed.
    """
    from pyhf_dask.results import point_names, status_names, summarize

    if table or (table is None and output is None):
        click.echo(format_table(ds))
    summary = summarize(ds)
    where = f" -> {output}" if output is not None else ""
    if fitted is not None:
        where = f" ({fitted} fitted in this run){where}"
    click.echo(f"pyhf-dask: {summary} in {elapsed:.1f} s{where}", err=True)
    if summary.n_failed or summary.n_partial:
        bad = np.isin(status_names(ds.status), ("failed", "partial"))
        failed = point_names(ds)[bad]
        shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        click.echo(f"pyhf-dask: failed points: {shown} (see the 'message' variable)", err=True)
        for tip in what_to_try(ds, bad):
            click.echo(f"pyhf-dask: to try: {tip}", err=True)
        if fail_on_error:
            sys.exit(EXIT_FAILED_POINTS)


def what_to_try(ds: xr.Dataset, bad: np.ndarray) -> list[str]:
    """Advice for the failed points of ``ds`` from their messages (what the kernels found)."""
    from pyhf_dask.kernels.evidence import advice

    messages = [str(m) for m in np.asarray(ds["message"].values)[bad]]
    kinked = ds.attrs.get("normsys_interpcode") == "code1" or ds.attrs.get(
        "histosys_interpcode"
    ) in ("code0",)
    return advice(messages, kinked_codes=bool(kinked))


def interrupted(output: Path | None, to_store: bool, signum: int) -> str:
    """The line printed when a scan is stopped by a signal: what is kept, how to resume."""
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if not to_store or output is None or not output.exists():
        return f"pyhf-dask: {what}; nothing was written (a .zarr output keeps finished points)"
    from pyhf_dask.results import status_names
    from pyhf_dask.store import is_result_store, open_store

    if not is_result_store(output):
        return f"pyhf-dask: {what} before the store {output} was made"
    ds = open_store(output)
    done = int((status_names(ds.status) != "pending").sum())
    dropped = ("--resume", "--overwrite", "--break-lock")
    argv = [a for a in sys.argv[1:] if a not in dropped]
    command = shlex.join(["pyhf-dask", *argv, "--resume"])
    return (
        f"pyhf-dask: {what}; {done} of {ds.sizes['point']} points are stored in {output}. "
        f"Resume with: {command}"
    )
