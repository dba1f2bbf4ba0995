"""``pyhf-dask scan``: run a hypothesis-test scan and write the result."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import xarray as xr

from pyhf_dask.exceptions import InputError, InvalidOption, OutputError, PyhfDaskError

__all__ = ["format_table", "scan"]

log = logging.getLogger(__name__)

_OUTPUT_SUFFIXES = (".nc", ".zarr")
#: Exit status of ``--fail-on-error`` when some points failed.
EXIT_FAILED_POINTS = 3
#: Names accepted by ``--executor`` (see :func:`pyhf_dask.executors.open_scheduler`).
EXECUTOR_NAMES = (
    "local",
    "threads",
    "synchronous",
    "processes",
    "distributed",
    "parsl",
    "globus",
    "endpoint-local",
)
#: Exit status after Ctrl-C (SIGINT); SIGTERM gives 143 and SIGHUP 129 (128 + signal).
EXIT_INTERRUPTED = 130
#: Signals handled like Ctrl-C: finished points kept, engines stopped, resume printed.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stopped(KeyboardInterrupt):
    """Raised in the main thread by a stop signal (a KeyboardInterrupt, so every cleanup
    path that handles Ctrl-C handles it too)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    import re

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
    help="normsys interpolation [default: code4, as pyhf's Model()].",
)
@click.option(
    "--histosys-interpcode",
    type=click.Choice(["code0", "code2", "code4p"]),
    default=None,
    help="histosys interpolation [default: code4p, as pyhf's Model()].",
)
@click.option(
    "--scipy-tolerance",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Tolerance of the pyhf kernel's SciPy fits [default: pyhf's]; e.g. 1e-10 for a "
    "reference scan.",
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
    type=click.Choice(EXECUTOR_NAMES),
    default="local",
    show_default=True,
    help="Where fits run. local: a spawned process pool on this machine; distributed, "
    "parsl, globus: remote workers (extras of the same names); endpoint-local: an "
    "in-process Globus Compute endpoint engine.",
)
@click.option("--endpoint", metavar="UUID", help="Globus Compute endpoint (--executor globus).")
@click.option(
    "--scheduler-address",
    metavar="ADDR",
    help="Running Dask scheduler, e.g. tcp://host:8786 (--executor distributed; default: "
    "a loopback LocalCluster).",
)
@click.option(
    "--parsl-config",
    type=click.Path(exists=True, dir_okay=False),
    help="Python file defining a Parsl 'config' (--executor parsl; default: a local HTEX).",
)
@click.option(
    "--engine",
    type=click.Choice(["globus", "process"]),
    default="globus",
    show_default=True,
    help="Endpoint engine of --executor endpoint-local.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts of a failed, lost or timed-out fit task (remote executors).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds per fit task before it is retried (remote executors) [default: none].",
)
@click.option(
    "--check-versions/--no-check-versions",
    default=True,
    help="Check that workers run the same pyhf_dask and pyhf versions [default: on].",
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
    help="Result: .nc (netCDF-4, written at the end) or .zarr (written as chunks "
    "finish; resumable).",
)
@click.option(
    "--resume", is_flag=True, help="Continue a .zarr output: fit only the points it is missing."
)
@click.option("--retry-failed", is_flag=True, help="With --resume, fit failed points again.")
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing .zarr output made by pyhf-dask."
)
@click.option(
    "--break-lock",
    is_flag=True,
    help="Take over a .zarr output whose lock was left by a scan that died.",
)
@click.option(
    "--max-bins",
    type=click.IntRange(min=1),
    default=None,
    help="Most bins (and observations) per channel [default: pyhf-dask.max-bins, 10000].",
)
@click.option(
    "--max-file-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MB",
    help="Largest input file or archive member read [default: pyhf-dask.max-file-size, 100].",
)
@click.option(
    "--fail-on-error",
    is_flag=True,
    help=f"Exit with status {EXIT_FAILED_POINTS} when any point failed.",
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
    scipy_tolerance: float | None,
    measurement: str | None,
    kernel: str | None,
    device: str | None,
    executor: str,
    endpoint: str | None,
    scheduler_address: str | None,
    parsl_config: str | None,
    engine: str,
    retries: int,
    timeout: float | None,
    check_versions: bool,
    workers: int | None,
    chunk_size: int | None,
    output: Path | None,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    break_lock: bool,
    max_bins: int | None,
    max_file_size: float | None,
    fail_on_error: bool,
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
    import dask

    limits = {k: v for k, v in (("max-bins", max_bins), ("max-file-size", max_file_size)) if v}
    with dask.config.set({f"pyhf-dask.{k}": v for k, v in limits.items()}), _stop_signals():
        ds, to_store, fitted, start = _run(
            inputs,
            region=region,
            patterns=patterns,
            labels=labels,
            poi_values=poi_values,
            output=output,
            resume=resume,
            retry_failed=retry_failed,
            overwrite=overwrite,
            break_lock=break_lock,
            progress=progress,
            scheduler_options={
                "executor": executor,
                "workers": workers,
                "endpoint": endpoint,
                "scheduler_address": scheduler_address,
                "parsl_config": parsl_config,
                "engine": engine,
                "retries": retries,
                "timeout": timeout,
                "check_versions": check_versions,
                "device": device,
            },
            options={
                "test_stat": test_stat,
                "kernel": kernel,
                "chunk_size": chunk_size,
                "normsys_interpcode": normsys_interpcode,
                "histosys_interpcode": histosys_interpcode,
                "measurement": measurement,
                "device": device,
                "scipy_tolerance": scipy_tolerance,
            },
        )
    from pyhf_dask.results import point_names, status_names, summarize

    if table or (table is None and output is None):
        click.echo(format_table(ds))
    elapsed = time.perf_counter() - start
    summary = summarize(ds)
    where = f" -> {output}" if output is not None else ""
    if to_store:
        where = f" ({sum(fitted)} fitted in this run){where}"
    click.echo(f"pyhf-dask: {summary} in {elapsed:.1f} s{where}", err=True)
    if summary.n_failed or summary.n_partial:
        failed = point_names(ds)[np.isin(status_names(ds.status), ("failed", "partial"))]
        shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        click.echo(f"pyhf-dask: failed points: {shown} (see the 'message' variable)", err=True)
        if fail_on_error:
            sys.exit(EXIT_FAILED_POINTS)


def _run(
    inputs: tuple[Path, ...],
    *,
    region: str | None,
    patterns: tuple[str, ...],
    labels: str | None,
    poi_values: tuple[float, ...],
    output: Path | None,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    break_lock: bool,
    progress: bool | None,
    scheduler_options: dict[str, Any],
    options: dict[str, Any],
) -> tuple[xr.Dataset, bool, list[int], float]:
    """Check the output, read the grid, fit it; the result is written before returning."""
    from pyhf_dask.executors import open_scheduler
    from pyhf_dask.scan import scan as build_scan
    from pyhf_dask.store import scan_to_store

    if output is not None and output.suffix not in _OUTPUT_SUFFIXES:
        msg = f"{output}: output must end in {' or '.join(_OUTPUT_SUFFIXES)}"
        raise InvalidOption(msg)
    to_store = output is not None and output.suffix == ".zarr"
    if (resume or retry_failed or overwrite or break_lock) and not to_store:
        what = "--resume, --retry-failed and --overwrite need"
        what = "--break-lock needs" if break_lock else what
        msg = f"{what} a .zarr output (-o results.zarr)"
        raise InvalidOption(msg)
    if retry_failed and not resume:
        msg = "--retry-failed only applies with --resume"
        raise InvalidOption(msg)
    if output is not None:
        check_writable(output)
    start = time.perf_counter()
    label_list = labels.split(",") if labels else None
    grid = _load_grid(inputs, region, label_list, patterns)
    options = {
        "poi_value": poi_values[0] if len(poi_values) == 1 else (list(poi_values) or 1.0),
        **options,
    }
    show_progress = sys.stderr.isatty() if progress is None else progress
    fitted: list[int] = []
    try:
        with open_scheduler(**scheduler_options) as scheduler, _progress(show_progress):
            if to_store:
                assert output is not None
                ds = scan_to_store(
                    grid,
                    output,
                    resume=resume,
                    retry_failed=retry_failed,
                    overwrite=overwrite,
                    break_lock=break_lock,
                    scheduler=scheduler,
                    on_write=fitted.append,
                    **options,
                )
            else:
                lazy = build_scan(grid, scheduler=scheduler, **options)
                log.info("scanning %d points with kernel %s", len(grid), lazy.attrs["kernel"])
                ds = lazy.compute(scheduler=scheduler)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        click.echo(_interrupted(output, to_store, signum), err=True)
        sys.exit(128 + signum)
    if output is not None and not to_store:
        write_netcdf(ds, output)
    return ds, to_store, fitted, start


def check_writable(output: Path) -> None:
    """Refuse, before any fit, an output that cannot be written.

    Raises:
        OutputError: the folder is missing or not writable, or the path is not usable.
    """
    folder = output.parent
    store = output.suffix == ".zarr" and output.is_dir()
    if output.exists() and output.suffix == ".nc" and not output.is_file():
        msg = f"{output}: exists and is not a file"
        raise OutputError(msg)
    target = output if store else folder
    if not target.is_dir():
        msg = f"{output}: the folder {target} does not exist"
        raise OutputError(msg)
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".pyhf-dask-write-check-"):
            pass
    except OSError as exc:
        msg = f"{output}: cannot write in {target} ({exc.strerror or exc})"
        raise OutputError(msg) from exc


def write_netcdf(ds: xr.Dataset, output: Path) -> None:
    """Write ``output`` through a temporary file in its folder, then rename it.

    If that fails, the finished results are saved beside it, else in the working folder,
    else in the temporary folder, and the error says where.

    Raises:
        OutputError: the output could not be written (the message names the rescue file).
    """
    from pyhf_dask.results import to_netcdf

    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        to_netcdf(ds, tmp)
        os.replace(tmp, output)
        return
    except Exception as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
    name = f"{output.stem}.rescued-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.nc"
    for folder in (output.parent, Path.cwd(), Path(tempfile.gettempdir())):
        rescue = folder / name
        try:
            to_netcdf(ds, rescue)
        except Exception:  # try the next place
            with contextlib.suppress(OSError):
                rescue.unlink()
            continue
        msg = f"{output}: cannot be written ({reason}); the finished results are in {rescue}"
        raise OutputError(msg)
    msg = f"{output}: cannot be written ({reason}), nor saved beside it, here or in the temp folder"
    raise OutputError(msg)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`_Stopped` once; later ones are ignored
    while the scan stops (engines shut down, temporary folders removed)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _load_grid(
    inputs: tuple[Path, ...],
    region: str | None,
    labels: list[str] | None,
    patterns: tuple[str, ...],
) -> Any:
    from pyhf_dask.grid import SignalGrid

    try:
        return SignalGrid.from_inputs(list(inputs), region=region, labels=labels).select(patterns)
    except PyhfDaskError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        names = ", ".join(map(str, inputs))
        msg = f"{names}: cannot be read as a signal grid: {type(exc).__name__}: {exc}"
        raise InputError(msg) from exc


def _interrupted(output: Path | None, to_store: bool, signum: int) -> str:
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


@contextlib.contextmanager
def _progress(enabled: bool) -> Any:
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        yield
