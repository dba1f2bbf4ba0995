"""``pyhf-dask scan``: resolve one scan plan, run it, write and report the result.

The options come in groups (:mod:`pyhf_dask.cli.options`); every option with a
``pyhf-dask.*`` setting defaults to ``None`` and is resolved at call time, by
:func:`pyhf_dask.plan.resolve_plan` (fit options, chunking) or
:func:`pyhf_dask.executors.open_scheduler` (executor options). The command resolves one
:class:`~pyhf_dask.plan.ScanPlan` and hands it to :func:`pyhf_dask.scan.scan_plan` or
:func:`pyhf_dask.store.store_plan`; the output is printed by :mod:`pyhf_dask.cli.report`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import xarray as xr

from pyhf_dask import config
from pyhf_dask.cli.options import EXECUTOR, FIT, INPUT, OUTPUT
from pyhf_dask.cli.report import EXIT_FAILED_POINTS, format_table, interrupted, report
from pyhf_dask.exceptions import InputError, InvalidOption, OutputError, PyhfDaskError
from pyhf_dask.grid import SignalGrid
from pyhf_dask.plan import ScanPlan

__all__ = [
    "EXIT_FAILED_POINTS",
    "EXIT_INTERRUPTED",
    "check_writable",
    "format_table",
    "plan_from_options",
    "scan",
    "write_netcdf",
]

log = logging.getLogger(__name__)

_OUTPUT_SUFFIXES = (".nc", ".zarr")
#: Outputs written as tables of CLs, limits and statuses (:mod:`pyhf_dask.export`).
_TABLE_SUFFIXES = (".json", ".csv")
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


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@INPUT
@FIT
@EXECUTOR
@OUTPUT
def scan(inputs: tuple[str, ...], **params: Any) -> None:
    """Scan a signal grid and write CLs per point.

    \b
    INPUTS is one of:
      BKG_ONLY.json PATCHSET.json           a pyhf PatchSet
      BKG_ONLY.json patch.A.json ...        HEPData jsonpatch files
      DIR_OR_ARCHIVE [--region NAME]        a folder or .tar.gz with BkgOnly.json + patches
      URL_OR_DOI [--region NAME]            an archive downloaded once (cached), e.g.
                                            https://doi.org/10.17182/hepdata.90607.v3/r3
      WORKSPACE.json                        one workspace with its signal: one point
    """
    import dask

    out = OUTPUT.pick(params)
    output: Path | None = out["output"]
    to_store = _check_output(**out)
    start = time.perf_counter()
    fitted: list[int] = []
    with dask.config.set(INPUT.scoped_settings(params)), _stop_signals():
        try:
            with _scheduler(params) as scheduler:
                grid = _load_grid(inputs, **INPUT.pick(params))
                ds = _run(
                    grid,
                    params,
                    scheduler=scheduler,
                    output=output if to_store else None,
                    on_write=fitted.append,
                )
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
            click.echo(interrupted(output, to_store, signum), err=True)
            sys.exit(128 + signum)
    if output is not None and not to_store:
        if output.suffix in _TABLE_SUFFIXES:
            from pyhf_dask import export

            (export.write_json if output.suffix == ".json" else export.write_csv)(ds, output)
        else:
            write_netcdf(ds, output)
    if out["json_stdout"]:
        from pyhf_dask.export import to_json

        click.echo(to_json(ds))
    report(
        ds,
        output=output,
        elapsed=time.perf_counter() - start,
        fitted=sum(fitted) if to_store else None,
        table=False if out["json_stdout"] else out["table"],
        fail_on_error=out["fail_on_error"],
    )


def plan_from_options(
    grid: SignalGrid,
    params: dict[str, Any],
    *,
    scheduler: Any = None,
    output: Path | None = None,
) -> ScanPlan:
    """Resolve the :class:`~pyhf_dask.plan.ScanPlan` of the command's options.

    ``--workers`` (default: the ``pyhf-dask.workers`` setting) sizes the chunks; without
    it, the workers of ``scheduler``. A resumed store without ``--chunk-size`` keeps its
    chunk size.
    """
    from pyhf_dask.plan import resolve_plan
    from pyhf_dask.store import stored_chunk_size

    fit = FIT.pick(params)
    poi_values = list(fit.pop("poi_values"))
    if output is not None and params["resume"] and fit["chunk_size"] is None:
        fit["chunk_size"] = stored_chunk_size(output)
    return resolve_plan(
        grid,
        poi_value=poi_values[0] if len(poi_values) == 1 else (poi_values or 1.0),
        workers=config.resolve(params["workers"], "workers"),
        scheduler=scheduler,
        **fit,
    )


#: Executors whose workers are processes of this machine: started before the inputs are
#: read, so that their start and imports overlap the reading.
_LOCAL_POOLS = ("local", "processes")


@contextlib.contextmanager
def _scheduler(params: dict[str, Any]) -> Iterator[Any]:
    """The executor of the options: a local pool now (warming up), others when needed.

    Yields the opened scheduler, or a function that opens a remote executor on first call
    (a bad input is refused before an endpoint or cluster is started for it).
    """
    from pyhf_dask.executors import open_scheduler
    from pyhf_dask.kernels import resolve_kernel

    executor = EXECUTOR.pick(params)
    executor["workers"] = config.resolve(executor["workers"], "workers")
    name = str(config.resolve(executor["executor"], "executor.default"))
    with contextlib.ExitStack() as stack:
        if name in _LOCAL_POOLS:
            kernel = resolve_kernel(config.resolve(params["kernel"], "kernel"))
            preload = _WARM_UP.get(kernel, ())
            yield stack.enter_context(
                open_scheduler(**executor, device=params["device"], preload=preload)
            )
        else:
            yield _Deferred(
                lambda: stack.enter_context(open_scheduler(**executor, device=params["device"]))
            )


class _Deferred:
    """An executor opened on first use (inside the :func:`_scheduler` context)."""

    def __init__(self, opener: Any) -> None:
        self.open = opener


#: What a local worker imports (and runs) when it starts, per kernel.
_WARM_UP = {
    "jax": ("pyhf_dask.kernels.jax_kernel:warm_up",),
    "pyhf": ("pyhf_dask.kernels.reference",),
}


def _run(
    grid: SignalGrid,
    params: dict[str, Any],
    *,
    scheduler: Any,
    output: Path | None,
    on_write: Any,
) -> xr.Dataset:
    """Resolve the plan, fit it (into the store ``output``, if given) with ``scheduler``
    (a function that opens it, for remote executors)."""
    from pyhf_dask.scan import scan_plan
    from pyhf_dask.store import store_plan

    if isinstance(scheduler, _Deferred):
        scheduler = scheduler.open()
    progress = params["progress"]
    show_progress = sys.stderr.isatty() if progress is None else progress
    plan = plan_from_options(grid, params, scheduler=scheduler, output=output)
    with _progress(show_progress, _points_to_fit(plan, params, output)):
        log.info(
            "scanning %d points with kernel %s in %d task(s) of up to %d points",
            len(grid),
            plan.kernel,
            len(plan.bounds),
            plan.chunk_size,
        )
        if output is None:
            return scan_plan(plan).compute(scheduler=scheduler)
        return store_plan(
            plan,
            output,
            resume=params["resume"],
            retry_failed=params["retry_failed"],
            overwrite=params["overwrite"],
            break_lock=params["break_lock"],
            scheduler=scheduler,
            on_write=on_write,
        )


def _check_output(
    output: Path | None,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    break_lock: bool,
    **_: Any,
) -> bool:
    """Refuse, before any fit, output options that do not fit together; ``True``: a store."""
    if output is not None and output.suffix not in (*_OUTPUT_SUFFIXES, *_TABLE_SUFFIXES):
        msg = (
            f"{output}: output must end in {' or '.join(_OUTPUT_SUFFIXES)} (the result), "
            f"or {' or '.join(_TABLE_SUFFIXES)} (a table of CLs, limits and statuses)"
        )
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
    return to_store


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
    from pyhf_dask.store_read import escape_text

    ds = escape_text(ds)  # file names as data: any bytes survive, escaped
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
    inputs: tuple[str, ...],
    *,
    region: str | None,
    labels: str | None,
    patterns: tuple[str, ...],
    ignore_digest: bool = False,
    **_: Any,
) -> SignalGrid:
    names = labels.split(",") if labels else None
    try:
        grid = SignalGrid.from_inputs(
            list(inputs), region=region, labels=names, ignore_digest=ignore_digest
        )
        return grid.select(patterns)
    except PyhfDaskError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        given = ", ".join(map(str, inputs))
        msg = f"{given}: cannot be read as a signal grid: {type(exc).__name__}: {exc}"
        raise InputError(msg) from exc


def _points_to_fit(plan: ScanPlan, params: dict[str, Any], output: Path | None) -> int:
    """Points this run fits: the grid's, or a resumed store's pending (and failed) ones."""
    from pyhf_dask.store import is_result_store, open_store

    if output is None or not params["resume"] or not is_result_store(output):
        return len(plan.grid)
    from pyhf_dask.results import status_names

    left = ("pending", "failed", "partial") if params["retry_failed"] else ("pending",)
    return sum(s in left for s in status_names(open_store(output)["status"]).tolist())


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Any:
    """Points fitted, rate and time left on stderr (:class:`pyhf_dask.progress.PointProgress`)."""
    if not enabled:
        yield
        return
    from pyhf_dask.progress import PointProgress

    with PointProgress(total):
        yield
