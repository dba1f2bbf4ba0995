"""The options of ``pyhf-dask scan``, in groups that each know their parameter names.

An option with a ``pyhf-dask.*`` setting (:mod:`pyhf_dask.config`) is a
:class:`SettingOption`: its default is ``None`` and the setting is read when the command
runs, never when the module is imported; ``--help`` shows the setting's current value.

Example:
    >>> EXECUTOR.names[:3]
    ('executor', 'endpoint', 'scheduler_address')
    >>> FIT.pick({name: None for name in FIT.names + ("other",)}) == dict.fromkeys(FIT.names)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pyhf_dask import config
from pyhf_dask.executors import EXECUTORS
from pyhf_dask.plan import CALCTYPES, HISTOSYS_CODES, NORMSYS_CODES, TEST_STATS, UPPER_LIMITS

__all__ = [
    "EXECUTOR",
    "FIT",
    "INPUT",
    "OUTPUT",
    "OptionGroup",
    "SettingOption",
]

F = TypeVar("F", bound=Callable[..., Any])


class SettingOption(click.Option):
    """An option whose default is the ``pyhf-dask.<setting>`` value at call time.

    Args:
        setting: the key under ``pyhf-dask`` (``"executor.retries"``).
        unset: what a ``null`` setting means, for ``--help`` (``"one per core"``).
        scoped: the value given is set in :mod:`dask.config` while the command runs
            (for settings read deep inside, such as the input limits).
    """

    def __init__(
        self,
        *args: Any,
        setting: str,
        unset: str = "none",
        scoped: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs["default"] = None
        kwargs["show_default"] = False
        super().__init__(*args, **kwargs)
        self.setting = setting
        self.unset = unset
        self.scoped = scoped

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """The help line, with the setting and its value now."""
        record = super().get_help_record(ctx)
        if record is None:
            return None
        value = config.get(self.setting)
        if isinstance(value, bool) and self.is_bool_flag and self.secondary_opts:
            shown = "on" if value else "off"
        else:
            shown = self.unset if value is None else str(value)
        return record[0], f"{record[1]}  [default: {shown}; pyhf-dask.{self.setting}]".strip()


class OptionGroup:
    """Click parameters applied together, whose values the command picks by group.

    Args:
        *params: ``(declarations, attributes)`` of each :class:`click.Option` (or of a
            :class:`SettingOption` when the attributes name a ``setting``), in help order.
    """

    def __init__(self, *params: tuple[tuple[str, ...], dict[str, Any]]) -> None:
        self.params = params
        self.options = [_make(decls, attrs) for decls, attrs in params]
        self.names: tuple[str, ...] = tuple(str(option.name) for option in self.options)

    def __call__(self, func: F) -> F:
        """Add the group's options to a click command function."""
        for decls, attrs in reversed(self.params):
            cls = SettingOption if "setting" in attrs else click.Option
            func = click.option(*decls, cls=cls, **attrs)(func)
        return func

    def pick(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values of this group's options among all the command's ``values``."""
        return {name: values[name] for name in self.names}

    def scoped_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """``{"pyhf-dask.<setting>": value}`` of the scoped options given a value."""
        return {
            f"pyhf-dask.{option.setting}": values[str(option.name)]
            for option in self.options
            if isinstance(option, SettingOption)
            and option.scoped
            and values[str(option.name)] is not None
        }


def _make(decls: tuple[str, ...], attrs: dict[str, Any]) -> click.Option:
    if "setting" in attrs:
        return SettingOption(list(decls), **attrs)
    return click.Option(list(decls), **attrs)


def _option(*decls: str, **attrs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return decls, attrs


#: What is read: the signal grid and the limits on input.
INPUT = OptionGroup(
    _option("--region", help="Sub-folder of a folder or archive input (e.g. RegionA)."),
    _option(
        "--patch",
        "patterns",
        multiple=True,
        metavar="GLOB",
        help="Only points whose name matches (repeatable), e.g. 'sbottom_1300_*'.",
    ),
    _option("--labels", help="Names of the coordinates in patch file names, e.g. msb,mn2,mn1."),
    _option(
        "--ignore-digest",
        is_flag=True,
        help="Use a patchset whose digests do not match the workspace (e.g. made for a "
        "simplified likelihood), with a warning [default: refused].",
    ),
    _option(
        "--max-bins",
        type=click.IntRange(min=1),
        setting="max-bins",
        scoped=True,
        help="Most bins (and observations) per channel.",
    ),
    _option(
        "--max-file-size",
        type=click.FloatRange(min=0, min_open=True),
        metavar="MB",
        setting="max-file-size",
        scoped=True,
        help="Largest input file or archive member read.",
    ),
)

#: How each point is fitted: the plan's fit options (see :func:`pyhf_dask.plan.resolve_plan`).
FIT = OptionGroup(
    _option(
        "--poi-value",
        "poi_values",
        type=float,
        multiple=True,
        help="POI value to test (repeatable: several make a POI scan with upper limits) "
        "[default: 1].",
    ),
    _option(
        "--test-stat", type=click.Choice(TEST_STATS), setting="test-stat", help="Test statistic."
    ),
    _option(
        "--calctype",
        type=click.Choice(CALCTYPES),
        setting="calctype",
        help="CLs from asymptotic formulas or from toys (pseudo-experiments; docs/TOYS.md).",
    ),
    # plain strings: a bad value is refused in one line by the plan (exit status 2)
    _option(
        "--ntoys",
        metavar="N",
        setting="ntoys",
        help="Toys per hypothesis and POI value (--calctype toybased).",
    ),
    _option(
        "--seed",
        metavar="S",
        setting="seed",
        help="Seed of the toys: the same seed gives the same CLs (--calctype toybased).",
    ),
    _option(
        "--normsys-interpcode",
        type=click.Choice(NORMSYS_CODES),
        setting="normsys-interpcode",
        help="normsys interpolation (code4 is pyhf's Model() default).",
    ),
    _option(
        "--histosys-interpcode",
        type=click.Choice(HISTOSYS_CODES),
        setting="histosys-interpcode",
        help="histosys interpolation (code4p is pyhf's Model() default).",
    ),
    _option(
        "--scipy-tolerance",
        type=click.FloatRange(min=0, min_open=True),
        help="Tolerance of the pyhf kernel's SciPy fits [default: pyhf's]; e.g. 1e-10 for a "
        "reference scan.",
    ),
    _option("--measurement", help="Measurement of the workspace [default: the first]."),
    _option(
        "--kernel",
        type=click.Choice(["auto", "pyhf", "jax"]),
        setting="kernel",
        help="Fit kernel (auto: jax when installed, else pyhf).",
    ),
    _option(
        "--device",
        type=click.Choice(["cpu", "gpu"]),
        help="Device of the JAX kernel; gpu: one worker per visible GPU (local; "
        "distributed without --scheduler-address: dask-cuda, the cuda extra), refused "
        "when the fits run on this machine and it has no GPU [default: JAX's choice].",
    ),
    _option(
        "--cl",
        type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
        setting="cl",
        help="Confidence level of upper limits.",
    ),
    _option(
        "--upper-limit",
        type=click.Choice(UPPER_LIMITS),
        help="root: every point's observed and expected upper limits by a batched root "
        "search, no --poi-value grid needed (NaN with limit_status where a limit lies "
        "outside the POI's bounds).",
    ),
    _option(
        "--limit-rtol",
        type=click.FloatRange(min=0, max=0.1, min_open=True, max_open=True),
        setting="limit-rtol",
        help="Relative tolerance of the --upper-limit root search (pyhf's default).",
    ),
    _option(
        "--observed-only",
        "curves",
        flag_value="observed",
        default=None,
        help="With --upper-limit root: the observed limit only (2 fits per search step "
        "instead of 7; expected limits NaN).",
    ),
    _option(
        "--expected-only",
        "curves",
        flag_value="expected",
        default=None,
        help="With --upper-limit root: the expected limits only (5 fits per step instead "
        "of 7; the observed limit NaN).",
    ),
    _option(
        "--chunk-size",
        type=click.IntRange(min=1),
        setting="chunk-size",
        help="Points per task (auto: chosen from kernel, grid and --workers; a resume "
        "keeps the store's).",
    ),
)

#: Where the fits run (see :func:`pyhf_dask.executors.open_scheduler`).
EXECUTOR = OptionGroup(
    _option(
        "--executor",
        type=click.Choice(EXECUTORS),
        setting="executor.default",
        help="Where fits run. local: a spawned process pool on this machine; distributed, "
        "parsl, globus: remote workers (extras of the same names); endpoint-local: an "
        "in-process Globus Compute endpoint engine.",
    ),
    _option("--endpoint", metavar="UUID", help="Globus Compute endpoint (--executor globus)."),
    _option(
        "--scheduler-address",
        metavar="ADDR",
        help="Running Dask scheduler, e.g. tcp://host:8786 (--executor distributed; "
        "default: a loopback LocalCluster).",
    ),
    _option(
        "--parsl-config",
        type=click.Path(exists=True, dir_okay=False),
        help="Python file defining a Parsl 'config' (--executor parsl; default: a local HTEX).",
    ),
    _option(
        "--engine",
        type=click.Choice(["globus", "process"]),
        setting="executor.endpoint-engine",
        help="Endpoint engine of --executor endpoint-local.",
    ),
    _option(
        "--retries",
        type=click.IntRange(min=0),
        setting="executor.retries",
        help="Extra attempts of a failed, lost or timed-out fit task (remote executors).",
    ),
    _option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        setting="executor.timeout",
        help="Seconds per fit task before it is retried (remote executors).",
    ),
    _option(
        "--check-versions/--no-check-versions",
        setting="executor.check-versions",
        help="Check that workers run the same pyhf_dask and pyhf versions.",
    ),
    _option(
        "--workers",
        type=click.IntRange(min=1),
        setting="workers",
        unset="one per core",
        help="Local workers to start, and the workers the chunks are sized for.",
    ),
)

#: What is written and printed.
OUTPUT = OptionGroup(
    _option(
        "-o",
        "--output",
        type=click.Path(path_type=Path),
        help="Result: .nc (netCDF-4, written at the end) or .zarr (written as chunks "
        "finish; resumable).",
    ),
    _option(
        "--resume", is_flag=True, help="Continue a .zarr output: fit only the points it is missing."
    ),
    _option("--retry-failed", is_flag=True, help="With --resume, fit failed points again."),
    _option(
        "--overwrite", is_flag=True, help="Replace an existing .zarr output made by pyhf-dask."
    ),
    _option(
        "--break-lock",
        is_flag=True,
        help="Take over a .zarr output locked by a scan on another host (a dead scan's "
        "lock on this host is taken over without it).",
    ),
    _option(
        "--fail-on-error",
        is_flag=True,
        help="Exit with status 3 when any point failed or is partial.",
    ),
    _option(
        "--json",
        "json_stdout",
        is_flag=True,
        help="Print the results as JSON on standard output (as pyhf cls does), not the table.",
    ),
    _option(
        "--table/--no-table",
        default=None,
        help="Print a result table [default: when there is no output file].",
    ),
    _option(
        "--progress/--no-progress", default=None, help="Progress bar [default: on a terminal]."
    ),
)
