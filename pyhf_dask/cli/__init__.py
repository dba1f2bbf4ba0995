"""The ``pyhf-dask`` command line. One module per command group, as in pyhf."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from pyhf_dask._version import __version__
from pyhf_dask.exceptions import PyhfDaskError

__all__ = ["QUIET_LOGGERS", "configure_logging", "main"]

log = logging.getLogger("pyhf_dask")

#: Exit status for bad input or options (as click uses for usage errors).
EXIT_INPUT_ERROR = 2
#: Exit status for an unexpected error (a bug: please report it).
EXIT_INTERNAL_ERROR = 1


def _one_line(exc: BaseException) -> str:
    """The message of an exception on one line (errors are printed as exactly one line)."""
    return " ".join(str(exc).split())


class _Group(click.Group):
    """A click group that prints pyhf_dask errors as one line and exits with status 2."""

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


def configure_logging(verbose: int = 0, *, debug: bool = False) -> None:
    """Log at WARNING by default, INFO with ``-v``, DEBUG with ``-vv`` or ``--debug``.

    Libraries set their own levels (distributed logs at INFO from its configuration, pyhf
    logs every modifier it adds): without ``-v`` their loggers are set to WARNING, and Dask's
    ``logging`` configuration (which spawned workers read too, through the environment) says
    the same. pyhf logs expected failures (a model that cannot be built) with tracebacks at
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
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        dask.config.set({"logging.distributed": "warning"})
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


def _register() -> None:
    from pyhf_dask.cli.plot import contour, plot
    from pyhf_dask.cli.scan import scan

    main.add_command(scan)
    main.add_command(plot)
    main.add_command(contour)


_register()
