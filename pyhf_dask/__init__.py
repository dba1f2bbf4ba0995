"""pyhf_dask: lazy Dask graphs of pyhf hypothesis tests over signal grids.

Example:
    >>> import pyhf_dask
    >>> grid = pyhf_dask.SignalGrid.from_path("RegionA.tar.gz")  # doctest: +SKIP
    >>> ds = pyhf_dask.scan(grid)          # lazy xarray.Dataset  # doctest: +SKIP
    >>> ds = ds.compute()                  # runs the fits        # doctest: +SKIP

:func:`remote` marks a function of a user's own ``dask.delayed`` graph as a task for the
executor of ``pyhf_dask.executors.wrap(executor, remote="marked")``; the mark survives Dask's
task fusion (annotations do not).

``pyhf_dask.executors`` is imported on first use (``pyhf_dask.executors.wrap(pool)``), not
by ``import pyhf_dask``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pyhf_dask import accessor as _accessor  # noqa: F401 (registers ds.pyhf_dask)
from pyhf_dask import config
from pyhf_dask._version import __version__
from pyhf_dask.combine import best_expected, combine_regions
from pyhf_dask.contours import find_contours
from pyhf_dask.exceptions import InputError, MissingDependency, PyhfDaskError
from pyhf_dask.grid import SignalGrid
from pyhf_dask.kernels import fit_chunk
from pyhf_dask.results import (
    point_names,
    status_names,
    summarize,
    to_netcdf,
    unstack,
    upper_limits,
)
from pyhf_dask.scan import scan
from pyhf_dask.simplemodels import signal_patch, simple_workspace
from pyhf_dask.tasks import remote

if TYPE_CHECKING:
    from pyhf_dask import executors

__all__ = [
    "InputError",
    "MissingDependency",
    "PyhfDaskError",
    "SignalGrid",
    "__version__",
    "best_expected",
    "combine_regions",
    "config",
    "executors",
    "find_contours",
    "fit_chunk",
    "point_names",
    "remote",
    "scan",
    "signal_patch",
    "simple_workspace",
    "status_names",
    "summarize",
    "to_netcdf",
    "unstack",
    "upper_limits",
]

#: Subpackages imported on first attribute access (they pull in heavier dependencies).
_LAZY = ("executors",)


def __getattr__(name: str) -> Any:
    """Import the subpackages of :data:`_LAZY` on first use.

    Example:
        >>> import pyhf_dask
        >>> pyhf_dask.executors.wrap.__name__
        'wrap'
    """
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
