"""pyhf_dask: lazy Dask graphs of pyhf hypothesis tests over signal grids.

Example:
    >>> import pyhf_dask
    >>> grid = pyhf_dask.SignalGrid.from_path("RegionA.tar.gz")  # doctest: +SKIP
    >>> ds = pyhf_dask.scan(grid)          # lazy xarray.Dataset  # doctest: +SKIP
    >>> ds = ds.compute()                  # runs the fits        # doctest: +SKIP
"""

from __future__ import annotations

from pyhf_dask import accessor as _accessor  # noqa: F401 (registers ds.pyhf_dask)
from pyhf_dask import config
from pyhf_dask._version import __version__
from pyhf_dask.contours import find_contours
from pyhf_dask.exceptions import InputError, MissingDependency, PyhfDaskError
from pyhf_dask.grid import SignalGrid
from pyhf_dask.kernels import fit_chunk
from pyhf_dask.results import summarize, to_netcdf, unstack, upper_limits
from pyhf_dask.scan import scan
from pyhf_dask.simplemodels import signal_patch, simple_workspace

__all__ = [
    "InputError",
    "MissingDependency",
    "PyhfDaskError",
    "SignalGrid",
    "__version__",
    "config",
    "find_contours",
    "fit_chunk",
    "scan",
    "signal_patch",
    "simple_workspace",
    "summarize",
    "to_netcdf",
    "unstack",
    "upper_limits",
]
