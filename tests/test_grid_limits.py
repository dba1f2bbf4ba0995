"""Limits of a POI grid are numbers only inside the grid (issue 22, item 5).

np.interp, as pyhf's ``linear_grid_scan`` uses it, returns the grid's end where CLs never
crosses ``1 - cl`` within the grid; such limits are NaN here, with ``limit_status``
(``above_range`` / ``below_range``) and a note in ``message``, and are shown as such in the
table, the Brazil plot's legend and the limits map.
"""

from __future__ import annotations

import functools
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import pyhf_dask
from pyhf_dask.cli.report import format_table
from pyhf_dask.grid import SignalGrid, signal_patch, simple_workspace
from pyhf_dask.kernels import LIMIT_STATUS
from pyhf_dask.results import upper_limits

DOCTEST = ([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
GRID = [0.0, 0.5, 1.0, 1.5, 2.5]


def _scaled(scale: float, base: list[float]) -> Any:
    return signal_patch([b * scale for b in base])


@pytest.fixture(scope="module")
def scanned() -> Any:
    # scale 1: limits 0.56 .. 2.05, inside [0, 2.5]; scale 0.1: above 2.5; scale 40: the
    # limits (0.025 .. 0.05) lie between 0 and the first nonzero value 0.5, inside the grid
    ws = simple_workspace(*DOCTEST)
    func = functools.partial(_scaled, base=DOCTEST[0])
    grid = SignalGrid.from_function(ws, func, scale=[1.0, 0.1, 40.0])
    return pyhf_dask.scan(grid, kernel="jax", poi_value=GRID).compute()


def test_upper_limits_outside_the_grid_are_nan() -> None:
    poi = [0.0, 1.0, 2.0]
    cls = np.array([[1.0, 0.5, 0.2], [0.04, 0.02, 0.01], [1.0, 0.5, 0.01]])
    exp = np.repeat(cls[:, :, None], 5, axis=2)
    obs, lim_exp, status = upper_limits(cls, exp, poi, cl=0.95, return_status=True)
    assert np.isnan(obs[:2]).all() and np.isnan(lim_exp[:2]).all()
    assert obs[2] == pytest.approx(1.0 + (0.5 - 0.05) / (0.5 - 0.01))
    assert [LIMIT_STATUS[s] for s in status] == ["above_range", "below_range", "found"]


def test_scan_flags_limits_outside_the_grid(scanned: Any) -> None:
    ds = scanned
    obs, exp = ds.upper_limit_obs.values, ds.upper_limit_exp.values
    assert not np.isin(np.concatenate([obs, exp.ravel()]), [GRID[0], GRID[-1]]).any()
    assert np.isfinite(obs[0]) and np.isfinite(exp[0]).all()
    assert np.isnan(obs[1]) and np.isnan(exp[1]).all()
    assert ds.limit_status.values.tolist() == [0, 1, 0]
    assert ds.limit_status.attrs["flag_meanings"] == " ".join(LIMIT_STATUS)
    assert "above the POI grid (CLs > 0.05 up to POI = 2.5): NaN" in str(ds.message.values[1])
    assert "POI grid" not in str(ds.message.values[0])
    # the status of the fits is not touched: every fit converged
    assert pyhf_dask.status_names(ds.status).tolist() == ["converged"] * 3


def test_table_and_plots_do_not_show_the_grid_end(scanned: Any) -> None:
    from pyhf_dask import plots_poi

    table = format_table(scanned)
    row = next(line for line in table.splitlines() if line.startswith("scale_0.1"))
    assert row.split()[1:7] == ["nan"] * 6 and "(limit above_range)" in row
    assert "nan: outside the range, see limit_status" in table
    fig = plots_poi.plot_brazil(scanned, point=1)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Observed limit: above 2.5" in texts
    assert not any(t.startswith("Observed limit: 2.5") for t in texts)
    fig = plots_poi.plot_brazil(scanned, point=0)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("Observed limit: 1.0") for t in texts)


def _plane(m1: float, m2: float) -> Any:
    return signal_patch([0.02 * m1 * m2, 0.01 * m1 * m2])


def test_limits_map_leaves_out_limits_outside_the_grid() -> None:
    from pyhf_dask import plots_poi

    ws = simple_workspace(*DOCTEST)
    values = [10.0, 20.0, 40.0, 80.0]
    grid = SignalGrid.from_function(ws, _plane, m1=values, m2=values)
    ds = pyhf_dask.scan(grid, kernel="jax", poi_value=GRID).compute()
    above = ds.limit_status.values == 1
    assert above.any() and (~above).sum() >= 3
    outside = np.isnan(ds.upper_limit_obs.values)
    assert outside.any() and not np.isin(ds.upper_limit_obs.values, GRID[-1]).any()
    fig = plots_poi.plot_upper_limits(ds)
    ax = fig.axes[0]
    coloured = ax.collections[0].get_offsets()
    assert len(coloured) == int((~outside).sum())  # only the limits inside the grid
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("No limit") for t in texts)
