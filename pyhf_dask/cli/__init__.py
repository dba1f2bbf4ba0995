"""The ``pyhf-dask`` command line. One module per command group, as in pyhf."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import Any

import click

from pyhf_dask._version import __version__
from pyhf_dask.exceptions import PyhfDaskError

__all__ = ["QUIET_LOGGERS", "configure_logging", "main", "run"]

log = logging.getLogger("pyhf_dask")

#: Exit status for bad input or options (as click uses for usage errors).
EXIT_INPUT_ERROR = 2
#: Exit status for an unexpected error (a bug: please report it).
EXIT_INTERNAL_ERROR = 1


def _one_line(exc: BaseException) -> str:
    """The message of an exception on one line (errors are printed as exactly one line)."""
    return " ".join(str(exc).split())


#: command -> "module:attribute", imported when the command is asked for (click's lazy
#: group): a local pool's spawned workers run the console script again (as
#: ``__mp_main__``), and must not import the commands' xarray, Dask and plotting with it
COMMANDS = {
    "scan": "pyhf_dask.cli.scan:scan",
    "plot": "pyhf_dask.cli.plot:plot",
    "contour": "pyhf_dask.cli.plot:contour",
    "combine": "pyhf_dask.cli.combine:combine",
}


class _Group(click.Group):
    """A click group that prints pyhf_dask errors as one line and exits with status 2, and
    imports its commands (:data:`COMMANDS`) when they are asked for."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``--debug`` is taken anywhere before ``--`` (``pyhf-dask scan ... --debug`` as
        ``pyhf-dask --debug scan ...``), as every ``[internal]`` error asks for it."""
        args = list(args)
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[1:end]:
            rest = [a for a in args[:end] if a != "--debug"]
            args = ["--debug", *rest, *args[end:]]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyhfDaskError as exc:
            if ctx.meta.get("pyhf_dask.debug"):
                raise
            category = getattr(exc, "category", "error")
            click.echo(f"Error [{category}]: {_one_line(exc)}", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get("pyhf_dask.debug"):
                raise
            log.debug("unexpected error", exc_info=True)
            click.echo(
                f"Error [internal]: {type(exc).__name__}: {_one_line(exc)} "
                "(rerun with --debug for details)",
                err=True,
            )
            sys.exit(EXIT_INTERNAL_ERROR)


#: Libraries whose INFO messages are shown only with ``-v`` (their warnings always are).
QUIET_LOGGERS = (
    "asyncio",
    "dask",
    "distributed",
    "globus_compute_endpoint",
    "globus_compute_sdk",
    "globus_sdk",
    "jax",
    "parsl",
    "pyhf",
    "tornado",
)


#: Engines whose logs reach the terminal only with ``-v`` (even their errors: a lost worker
#: or connection is reported by the scan itself).
ENGINE_LOGGERS = (
    "asyncio",
    "distributed",
    "globus_compute_endpoint",
    "globus_compute_sdk",
    "globus_sdk",
    "parsl",
    "tornado",
)


def configure_logging(verbose: int = 0, *, debug: bool = False) -> None:
    """Log at WARNING by default, INFO with ``-v``, DEBUG with ``-vv`` or ``--debug``.

    Libraries set their own levels (distributed logs at INFO from its configuration, pyhf
    logs every modifier it adds): without ``-v`` their loggers are set to WARNING, and Dask's
    ``logging`` configuration (which spawned workers read too, through the environment) says
    the same; the engines' loggers (:data:`ENGINE_LOGGERS`) are silenced below CRITICAL.
    pyhf logs expected failures (a model that cannot be built) with tracebacks at
    ERROR; pyhf_dask reports them itself in one line, so pyhf is silent below ``-vv``.
    """
    import dask

    level = logging.DEBUG if debug else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    library_level = logging.getLevelName(max(level, logging.WARNING) if verbose < 1 else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    if verbose < 1:
        # the engines' own reports of lost workers and closed connections (tracebacks of
        # WorkerLost, CommClosedError) are what the scan reports in one line itself
        for name in ENGINE_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
        dask.config.set({"logging.distributed": "critical"})
    pyhf_level = logging.DEBUG if debug or verbose > 1 else logging.CRITICAL
    logging.getLogger("pyhf").setLevel(pyhf_level)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pyhf-dask")
@click.option(
    "-v", "--verbose", count=True, help="More log output, also of Dask, Parsl, pyhf (-vv: debug)."
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Scan pyhf likelihoods over signal grids with Dask."""
    configure_logging(verbose, debug=debug)
    ctx.meta["pyhf_dask.debug"] = debug


def run() -> None:
    """The ``pyhf-dask`` console script: :func:`main`, then a quick exit.

    Once the command is done (its output written and closed, its engines stopped), the
    interpreter's own shutdown is cut short: threads are joined and the ``atexit``
    handlers run (multiprocessing's cleanup, temporary folders) as at a normal exit, but
    the teardown of some 2,000 imported modules (0.3-0.4 s) is skipped.
    """
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    quick_exit(code)


def quick_exit(code: Any) -> None:
    """Exit with ``code`` (as ``sys.exit``) without tearing the interpreter down.

    Falls back to ``sys.exit`` while a thread other than this one is still running.
    """
    import atexit
    import threading

    if isinstance(code, str):  # as sys.exit: the message on stderr, status 1
        click.echo(code, err=True)
        code = 1
    status = 0 if code is None else int(code)
    if threading.current_thread() is not threading.main_thread() or any(
        t.is_alive() and not t.daemon and t is not threading.current_thread()
        for t in threading.enumerate()
    ):
        sys.exit(status)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:  # joins threads and runs concurrent.futures' exit hooks
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(status)
