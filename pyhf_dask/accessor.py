"""The ``ds.pyhf_dask`` accessor: contours and plots of a result Dataset in a notebook.

Importing this module (``pyhf_dask`` does) registers the accessor on every
:class:`xarray.Dataset`.

Example:
    >>> import xarray as xr
    >>> ds = xr.open_dataset("regionA.nc")                  # doctest: +SKIP
    >>> found = ds.pyhf_dask.contour()  # msb vs mn2 at mn1 = 60  # doctest: +SKIP
    >>> found.get("obs").lines[0][:2]                        # doctest: +SKIP
    >>> fig = ds.pyhf_dask.plot_exclusion(band2=True)       # doctest: +SKIP

A lazy Dataset (straight from :func:`pyhf_dask.scan`) is computed once, on the first call
that needs values, and kept by the accessor (an INFO log says so): a contour and several
plots of the same Dataset run every fit once. ``ds.pyhf_dask.computed`` is that Dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:  # the modules themselves (scipy, matplotlib) are imported when used
    from matplotlib.figure import Figure

    from pyhf_dask.contours import Contours, Plane, Quantity, SliceValue, Transform

__all__ = ["PyhfDaskAccessor"]

log = logging.getLogger(__name__)


@xr.register_dataset_accessor("pyhf_dask")
class PyhfDaskAccessor:
    """Post-processing of a computed result: ``ds.pyhf_dask.<method>(...)``.

    Every method forwards to :mod:`pyhf_dask.contours` or :mod:`pyhf_dask.plots` with the
    Dataset as first argument; see those functions for the options. The plots return a
    Figure that a notebook shows inline as it is (no ``%matplotlib inline`` needed);
    :func:`pyhf_dask.figures.save_figure` writes it. A lazy Dataset is computed once, the
    first time values are needed (see :attr:`computed`).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._source = ds
        self._computed: xr.Dataset | None = None

    @property
    def computed(self) -> xr.Dataset:
        """The Dataset with its values in memory: a lazy one is computed once, then kept.

        Example:
            >>> import xarray as xr
            >>> ds = xr.Dataset({"a": ("x", [1.0])}).chunk()
            >>> ds.pyhf_dask.computed.a.chunks is None
            True
        """
        if self._computed is None:
            from pyhf_dask.results import is_lazy

            if is_lazy(self._source):
                n_tasks = len(self._source.__dask_graph__() or {})
                log.info(
                    "ds.pyhf_dask: computing the lazy Dataset once (%d tasks) and keeping it "
                    "for every later contour and plot of this Dataset",
                    n_tasks,
                )
                self._computed = self._source.compute()
            else:
                self._computed = self._source
        return self._computed

    @property
    def _ds(self) -> xr.Dataset:
        return self.computed

    @property
    def labels(self) -> list[str]:
        """The grid coordinate names, in order."""
        from pyhf_dask.contours import grid_labels

        return grid_labels(self._source)  # attributes and coordinates only: nothing to compute

    def plane(
        self,
        *,
        x: str | None = None,
        y: str | None = None,
        where: Mapping[str, SliceValue] | None = None,
        poi: float | None = None,
        mix_slices: bool = False,
    ) -> Plane:
        """The points of one plane (:func:`pyhf_dask.contours.select_plane`)."""
        from pyhf_dask.contours import select_plane

        return select_plane(self._ds, x=x, y=y, where=where, poi=poi, mix_slices=mix_slices)

    def contour(
        self,
        *,
        x: str | None = None,
        y: str | None = None,
        where: Mapping[str, SliceValue] | None = None,
        cl: float | None = None,
        curves: Sequence[str] | None = None,
        poi: float | None = None,
        quantity: Quantity = "cls",
        how: Transform | None = None,
        resolution: int = 200,
        mix_slices: bool = False,
    ) -> Contours:
        """Exclusion contours (:func:`pyhf_dask.contours.find_contours`).

        Example:
            >>> ds.pyhf_dask.contour(where={"mn1": 60}).get("obs")  # doctest: +SKIP
        """
        from pyhf_dask.contours import CURVES, find_contours

        return find_contours(
            self._ds,
            x=x,
            y=y,
            where=where,
            cl=cl,
            curves=CURVES if curves is None else curves,
            poi=poi,
            quantity=quantity,
            how=how,
            resolution=resolution,
            mix_slices=mix_slices,
        )

    def plot_exclusion(self, **kwargs: Any) -> Figure:
        """The exclusion plot (:func:`pyhf_dask.plots.plot_exclusion`)."""
        from pyhf_dask.plots import plot_exclusion

        return plot_exclusion(self._ds, **kwargs)

    def plot_cls_map(self, **kwargs: Any) -> Figure:
        """CLs per point with the CLs = 1 - cl line (:func:`pyhf_dask.plots.plot_cls_map`)."""
        from pyhf_dask.plots import plot_cls_map

        return plot_cls_map(self._ds, **kwargs)

    def plot_brazil(self, *, point: int | str = 0, **kwargs: Any) -> Figure:
        """The Brazil band of one point of a POI scan (:func:`pyhf_dask.plots_poi.plot_brazil`)."""
        from pyhf_dask.plots_poi import plot_brazil

        return plot_brazil(self._ds, point=point, **kwargs)

    def plot_upper_limits(self, **kwargs: Any) -> Figure:
        """Map of upper limits of a POI scan (:func:`pyhf_dask.plots_poi.plot_upper_limits`)."""
        from pyhf_dask.plots_poi import plot_upper_limits

        return plot_upper_limits(self._ds, **kwargs)

    def plot_significance_map(self, **kwargs: Any) -> Figure:
        """Z map of a q0 scan (:func:`pyhf_dask.plots_poi.plot_significance_map`)."""
        from pyhf_dask.plots_poi import plot_significance_map

        return plot_significance_map(self._ds, **kwargs)
