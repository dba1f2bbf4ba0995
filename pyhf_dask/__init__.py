"""pyhf_dask: lazy Dask graphs of pyhf hypothesis tests over signal grids.

Example:
    >>> import pyhf_dask
    >>> grid = pyhf_dask.SignalGrid.from_path("RegionA.tar.gz")  # doctest: +SKIP
    >>> ds = pyhf_dask.scan(grid)          # lazy xarray.Dataset  # doctest: +SKIP
    >>> ds = ds.compute()                  # runs the fits        # doctest: +SKIP

:func:`remote` marks a function of a user's own ``dask.delayed`` graph as a task for the
executor of ``pyhf_dask.executors.wrap(executor, remote="marked")``; the mark survives Dask's
task fusion (annotations do not).

``pyhf_dask.executors`` and the other public names are imported on first use
(``pyhf_dask.scan``, ``pyhf_dask.executors.wrap(pool)``), not by ``import pyhf_dask``.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
import types
from typing import TYPE_CHECKING, Any

from pyhf_dask import config
from pyhf_dask._version import __version__
from pyhf_dask.exceptions import InputError, MissingDependency, PyhfDaskError
from pyhf_dask.tasks import remote

if TYPE_CHECKING:
    from pyhf_dask import executors
    from pyhf_dask.combine import best_expected, combine_regions
    from pyhf_dask.contours import find_contours
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

#: Public names imported on first use, and their modules: ``import pyhf_dask`` stays
#: light, so that worker processes (which need the kernels, not xarray) start fast.
_LAZY = {
    "executors": None,
    "best_expected": "combine",
    "combine_regions": "combine",
    "find_contours": "contours",
    "SignalGrid": "grid",
    "fit_chunk": "kernels",
    "point_names": "results",
    "status_names": "results",
    "summarize": "results",
    "to_netcdf": "results",
    "unstack": "results",
    "upper_limits": "results",
    "signal_patch": "simplemodels",
    "simple_workspace": "simplemodels",
}


def _worker_process() -> bool:
    """Whether this is a multiprocessing child (the local pool, dask.distributed's
    nannies), also while it starts: a spawned child runs the parent's main script (the
    ``pyhf-dask`` console script, a user's script) before it knows its parent."""
    if multiprocessing.parent_process() is not None:
        return True
    # set while a spawned child runs the parent's main (multiprocessing's own check)
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


if not _worker_process():
    # registers ``ds.pyhf_dask``. A worker process skips it, and with it xarray, until
    # something there needs it.
    from pyhf_dask import accessor as _accessor  # noqa: F401


class _Package(types.ModuleType):
    """``pyhf_dask.scan`` is the function, also after the module of that name is imported
    (the import system binds a submodule to its package's attribute of the same name)."""

    @property
    def scan(self) -> Any:
        """:func:`pyhf_dask.scan.scan`, imported on first use."""
        return importlib.import_module(f"{__name__}.scan").scan

    @scan.setter
    def scan(self, value: Any) -> None:
        """Ignore the binding of the submodule ``pyhf_dask.scan``: the name is the function."""


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import the public names of :data:`_LAZY` on first use.

    Example:
        >>> import pyhf_dask
        >>> pyhf_dask.executors.wrap.__name__, pyhf_dask.scan.__name__
        ('wrap', 'scan')
    """
    if name not in _LAZY:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    where = _LAZY[name]
    if where is None:
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "scan"})
