"""What ``pyhf-dask scan`` prints: the result table, the summary line, the resume hint."""

from __future__ import annotations

import re
import shlex
import signal
import sys
from pathlib import Path

import click
import numpy as np
import xarray as xr

__all__ = [
    "EXIT_ALL_FAILED",
    "EXIT_FAILED_POINTS",
    "format_table",
    "interrupted",
    "report",
    "what_to_try",
]

#: Exit status of ``--fail-on-error`` when some points failed.
EXIT_FAILED_POINTS = 3
#: Exit status of a scan in which every point failed (without ``--fail-on-error``).
EXIT_ALL_FAILED = 1


def _number(value: float, width: int) -> str:
    """``value`` in ``width`` characters with 4 significant digits (7.2e-05, not 0.0001).

    Example:
        >>> [_number(v, 9) for v in (0.05234, 7.2e-05, 2.8e-10, float("nan"))]
        ['  0.05234', '  7.2e-05', '  2.8e-10', '      nan']
    """
    return f"{value:{width}.4g}"


def format_table(ds: xr.Dataset, *, limit: int | None = None) -> str:
    """Plain-text table of a computed result: one row per point, in grid order.

    Rows are sorted by :func:`pyhf_dask.results.natural_key` of the point names
    (``sbottom_300_...`` before ``sbottom_1000_...``), the order of the Python index;
    numbers have 4 significant digits and one width, so rows of failed points (NaN) stay
    aligned. A POI scan's table holds the upper limits on the POI, under a line saying
    which values were scanned.

    Example:
        >>> ds = xr.Dataset(
        ...     {"CLs_obs": ("point", [0.5, np.nan]),
        ...      "CLs_exp": (("point", "band"), [[1e-5, .2, .3, .4, .5], [np.nan] * 5]),
        ...      "status": ("point", np.array([0, 2], dtype=np.int8))},
        ...     coords={"point": ["a_10", "a_9"], "band": [-2, -1, 0, 1, 2]})
        >>> print(format_table(ds))
        patch     CLs_obs      exp-2σ      exp-1σ         exp      exp+1σ      exp+2σ  status
        a_9           nan         nan         nan         nan         nan         nan  failed
        a_10          0.5       1e-05         0.2         0.3         0.4         0.5  converged
    """
    from pyhf_dask.results import natural_order, point_names, status_names

    names = point_names(ds).tolist()
    order = natural_order(names)
    title: list[str] = []
    if "p0_obs" in ds:  # a discovery scan (q0): p0 and the significances
        header = ["p0_obs", "Z_obs", "Z_exp-2σ", "Z_exp-1σ", "Z_exp", "Z_exp+1σ", "Z_exp+2σ"]
        obs = np.asarray(ds["p0_obs"].values, dtype=float)
        exp = np.concatenate(
            [np.asarray(ds["Z_obs"].values, float)[:, None], np.asarray(ds["Z_exp"].values)],
            axis=1,
        )
        title = ["# discovery (q0): p0 and Z = Phi^-1(1 - p0); expected under the signal"]
    elif "upper_limit_obs" in ds:
        header = ["UL_obs", "UL_exp-2σ", "UL_exp-1σ", "UL_exp", "UL_exp+1σ", "UL_exp+2σ"]
        obs = np.asarray(ds["upper_limit_obs"].values, dtype=float)
        exp = np.asarray(ds["upper_limit_exp"].values, dtype=float)
        cl = float(ds.attrs.get("cl", 0.95))
        if ds.attrs.get("upper_limit") == "root":
            how = f"by root search to rtol {ds.attrs.get('limit_rtol', 1e-4):g}"
        else:
            poi = np.asarray(ds["poi"].values, dtype=float)
            how = f"from CLs at {poi.size} POI values, {poi.min():g} to {poi.max():g}"
        title = [
            f"# upper limits on {ds.attrs.get('poi_name', 'the POI')} at {cl:.0%} CL {how}"
            + ("; nan: outside the range, see limit_status" if "limit_status" in ds else "")
        ]
    else:
        if "poi" in ds.dims:  # one POI value kept along its dimension: no limits
            ds = ds.isel(poi=0)
        header = ["CLs_obs", "exp-2σ", "exp-1σ", "exp", "exp+1σ", "exp+2σ"]
        obs = np.asarray(ds["CLs_obs"].values, dtype=float)
        exp = np.asarray(ds["CLs_exp"].values, dtype=float)
    width = max([len("patch"), *map(len, names)])
    cell = max(10, *map(len, header))
    rows = [*title, "  ".join(["patch".ljust(width), *(h.rjust(cell) for h in header), "status"])]
    status = status_names(ds["status"]).tolist()
    if "limit_status" in ds and "upper_limit_obs" in ds:  # where a limit is not a number
        from pyhf_dask.kernels import LIMIT_STATUS

        flags = np.asarray(ds["limit_status"].values).tolist()
        status = [
            f"{s} (limit {LIMIT_STATUS[f]})" if 0 < f < len(LIMIT_STATUS) else s
            for s, f in zip(status, flags, strict=True)
        ]
    count = len(names) if limit is None else min(limit, len(names))
    for i in order[:count]:
        numbers = [_number(v, cell) for v in (obs[i], *exp[i])]
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

    A scan in which every point failed exits with :data:`EXIT_ALL_FAILED` (1) even without
    ``fail_on_error``: it has no result to give.
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
        if summary.n_points and summary.n_failed == summary.n_points:
            click.echo(f"pyhf-dask: every one of the {summary.n_points} points failed", err=True)
            sys.exit(EXIT_ALL_FAILED)


def what_to_try(ds: xr.Dataset, bad: np.ndarray) -> list[str]:
    """Advice for the failed points of ``ds`` from their messages (what the kernels found)."""
    from pyhf_dask.kernels.evidence import advice

    messages = [str(m) for m in np.asarray(ds["message"].values)[bad]]
    kinked = ds.attrs.get("normsys_interpcode") == "code1" or ds.attrs.get(
        "histosys_interpcode"
    ) in ("code0",)
    return [*task_advice(messages), *advice(messages, kinked_codes=bool(kinked))]


def task_advice(messages: list[str]) -> list[str]:
    """The likely cause when fit tasks (not fits) failed: a timeout, a dying worker.

    Example:
        >>> task_advice(["task failed after 3 attempt(s) on local process pool: "
        ...              "TimeoutError: no result within 0.01 s of running"])[0][:52]
        'the fit tasks timed out: --timeout 0.01 s is too sma'
    """
    text = " ".join(messages)
    tips = []
    timeouts = re.findall(r"no result within ([0-9.e+-]+) s", text)
    if timeouts:
        tips.append(
            f"the fit tasks timed out: --timeout {timeouts[0]} s is too small for a chunk "
            "(a worker's first chunk also imports and compiles); raise --timeout, or lower "
            "--chunk-size"
        )
    if "BrokenProcessPool" in text or "worker died" in text or "KilledWorker" in text:
        tips.append(
            "a worker process died (killed after a timeout of another task, or out of "
            "memory): see the log above, lower --chunk-size or --workers"
        )
    return tips


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
