"""Result helpers: upper limits, unstacking, netCDF round trip, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from test_grid import two_mass_signal

import pyhf_dask
from pyhf_dask.grid import SignalGrid, scaled_signal
from pyhf_dask.kernels import STATUS
from pyhf_dask.results import summarize, to_netcdf, unstack, upper_limits


def test_upper_limits_interpolate_like_pyhf():
    poi = np.array([0.0, 1.0, 2.0])
    obs = np.array([[1.0, 0.1, 0.01]])
    exp = np.repeat(obs[:, :, None], 5, axis=2)
    lim_obs, lim_exp = upper_limits(obs, exp, poi, cl=0.95)
    assert lim_obs[0] == pytest.approx(np.interp(0.05, [0.01, 0.1, 1.0], [2.0, 1.0, 0.0]))
    np.testing.assert_allclose(lim_exp[0], lim_obs[0])
    # a failed POI value is left out: the limit comes from the values that are right
    nan_obs = obs.copy()
    nan_obs[0, 1] = np.nan
    expected = np.interp(0.05, [0.01, 1.0], [2.0, 0.0])
    assert upper_limits(nan_obs, exp, poi)[0][0] == pytest.approx(expected)
    # fewer than two values left: no limit
    nan_obs[0, 2] = np.nan
    assert np.isnan(upper_limits(nan_obs, exp, poi)[0][0])


def test_unstack_regular_grid(seed_workspace):
    grid = SignalGrid.from_function(seed_workspace, two_mass_signal, m1=[300, 500], m2=[0, 50, 100])
    ds = pyhf_dask.scan(grid, kernel="pyhf").compute(scheduler="synchronous")
    cube = unstack(ds)
    assert cube.CLs_obs.dims == ("m1", "m2")
    assert cube.CLs_exp.dims == ("m1", "m2", "band")
    assert float(cube.CLs_obs.sel(m1=500, m2=50)) == float(
        ds.CLs_obs.where((ds.m1 == 500) & (ds.m2 == 50), drop=True)[0]
    )


def test_netcdf_round_trip(seed_workspace, tmp_path):
    grid = SignalGrid.from_function(seed_workspace, scaled_signal, scale=[1.0, 3.0])
    ds = pyhf_dask.scan(grid, kernel="pyhf", poi_value=[0.5, 1.0, 2.0]).compute(
        scheduler="synchronous"
    )
    path = tmp_path / "out.nc"
    to_netcdf(ds, path)
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)
        assert back.status.attrs["flag_meanings"].split()[:4] == list(STATUS)
    summary = summarize(ds)
    assert summary.n_points == 2
    assert summary.n_converged == 2
    assert summary.n_failed == 0
    assert str(summary).startswith("2 points: 2 converged")
