"""scan(): laziness, the graph, correctness against pyhf, POI scans and upper limits."""

from __future__ import annotations

import dask
import numpy as np
import pyhf
import pytest
from reference_values import REFERENCE, SBOTTOM_SETTINGS

import pyhf_dask
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.grid import SignalGrid, scaled_signal, signal_patch, simple_workspace
from pyhf_dask.results import status_names


def _direct_hypotest(ws: dict, scale: float, poi: float, test_stat: str = "qtilde"):
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[12.0 * scale, 11.0 * scale], bkg=[50.0, 52.0], bkg_uncertainty=[3.0, 7.0]
    )
    data = [51.0, 48.0, *model.config.auxdata]
    return pyhf.infer.hypotest(poi, data, model, test_stat=test_stat, return_expected_set=True)


def test_scan_is_lazy_and_workspace_enters_graph_once(seed_grid):
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=1)
    assert dask.is_dask_collection(ds)
    assert all(dask.is_dask_collection(ds[v].data) for v in ds.data_vars)
    graph = dict(ds.__dask_graph__())
    ws_keys = [k for k in graph if str(k).startswith("pyhf-dask-workspace-")]
    fit_keys = [k for k in graph if str(k).startswith("pyhf-dask-fit-")]
    assert len(ws_keys) == 1
    assert len(fit_keys) == len(seed_grid)


def test_seed_model_equals_direct_hypotest(seed_grid, seed_workspace):
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=3).compute(scheduler="synchronous")
    assert (status_names(ds.status) == "converged").all()
    for i, scale in enumerate(ds.scale.values):
        obs, exp = _direct_hypotest(seed_workspace, float(scale), 1.0)
        assert ds.CLs_obs.values[i] == pytest.approx(float(obs), rel=1e-9)
        np.testing.assert_allclose(ds.CLs_exp.values[i], [float(e) for e in exp], rtol=1e-9)


def test_one_bin_readme_model():
    ws = simple_workspace([5.0], [50.0], [7.0], [50.0])
    grid = SignalGrid.from_function(ws, lambda s: signal_patch([s]), s=[5.0])
    ds = pyhf_dask.scan(grid, kernel="pyhf", poi_value=1.0).compute(scheduler="threads")
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[5.0], bkg=[50.0], bkg_uncertainty=[7.0]
    )
    obs, exp = pyhf.infer.hypotest(
        1.0, [50.0, *model.config.auxdata], model, test_stat="qtilde", return_expected_set=True
    )
    assert float(ds.CLs_obs[0]) == pytest.approx(float(obs), rel=1e-9)
    np.testing.assert_allclose(ds.CLs_exp[0], np.array(exp, dtype=float), rtol=1e-9)


def test_poi_scan_upper_limit_equals_pyhf(seed_workspace):
    grid = SignalGrid.from_function(seed_workspace, scaled_signal, scale=[1.0])
    scan_values = np.linspace(0.0, 5.0, 21)
    ds = pyhf_dask.scan(grid, kernel="pyhf", poi_value=scan_values).compute(scheduler="synchronous")
    assert ds.CLs_obs.dims == ("point", "poi")
    assert ds.CLs_exp.dims == ("point", "poi", "band")
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[12.0, 11.0], bkg=[50.0, 52.0], bkg_uncertainty=[3.0, 7.0]
    )
    data = [51.0, 48.0, *model.config.auxdata]
    obs_limit, exp_limits = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, scan=scan_values, level=0.05
    )
    assert float(ds.upper_limit_obs[0]) == pytest.approx(float(obs_limit), rel=1e-9)
    np.testing.assert_allclose(ds.upper_limit_exp[0], np.array(exp_limits, dtype=float), rtol=1e-9)


def test_test_stat_q(seed_grid, seed_workspace):
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", test_stat="q").compute(scheduler="synchronous")
    obs, _ = _direct_hypotest(seed_workspace, 2.0, 1.0, test_stat="q")
    assert float(ds.CLs_obs.isel(point=3)) == pytest.approx(float(obs), rel=1e-9)
    assert ds.attrs["test_stat"] == "q"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("test_stat", "qmu"),  # q0 is supported since issue 21 (tests/test_q0.py)
        ("normsys_interpcode", "code9"),
        ("kernel", "torch"),
        ("chunk_size", 0),
        ("poi_value", [1.0, 0.5]),
        ("measurement", "nope"),
    ],
)
def test_bad_options_are_rejected(seed_grid, option, value):
    with pytest.raises(InvalidOption):
        pyhf_dask.scan(
            seed_grid, kernel="pyhf", **{option: value}
        ) if option != "kernel" else pyhf_dask.scan(seed_grid, kernel=value)


def test_schedulers_agree(seed_grid):
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf", chunk_size=2)
    sync = ds.compute(scheduler="synchronous")
    threads = ds.compute(scheduler="threads")
    processes = ds.compute(scheduler="processes", num_workers=2)
    for other in (threads, processes):
        np.testing.assert_array_equal(sync.CLs_obs.values, other.CLs_obs.values)
        np.testing.assert_array_equal(sync.CLs_exp.values, other.CLs_exp.values)


def test_distributed_client(seed_grid):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = pyhf_dask.scan(seed_grid, kernel="pyhf").compute(scheduler=client)
    sync = pyhf_dask.scan(seed_grid, kernel="pyhf").compute(scheduler="synchronous")
    np.testing.assert_array_equal(sync.CLs_obs.values, result.CLs_obs.values)


@pytest.mark.parametrize(("region", "name"), list(REFERENCE))
def test_sbottom_reference_values(sbottom_archive, region, name):
    grid = SignalGrid.from_path(sbottom_archive, region=region).select([name])
    ds = pyhf_dask.scan(grid, kernel="pyhf", **SBOTTOM_SETTINGS).compute(scheduler="synchronous")
    obs, exp = REFERENCE[(region, name)]
    assert status_names(ds.status)[0] == "converged"
    assert float(ds.CLs_obs[0]) == pytest.approx(obs, rel=1e-5)
    np.testing.assert_allclose(ds.CLs_exp.values[0], exp, rtol=1e-5)


def test_failing_fits_are_recorded_and_scan_goes_on(ewk3l_dir):
    grid = SignalGrid.from_patchset(ewk3l_dir / "BkgOnly.json", ewk3l_dir / "patchset.json")
    grid = grid.take(range(3))
    ds = pyhf_dask.scan(grid, kernel="pyhf").compute(scheduler="synchronous")
    assert len(ds.point) == 3
    for status, message, cls in zip(
        status_names(ds.status), ds.message.values, ds.CLs_obs.values, strict=True
    ):
        assert str(status) in ("converged", "failed")
        if status == "failed":
            assert np.isnan(cls)
            assert "iterations" in message
            assert "KKT residual" in message
    # pyhf's scipy fits stop after one iteration here: they must not pass silently
    assert (status_names(ds.status) == "failed").any()


def test_provenance_attrs_are_flat(seed_grid):
    ds = pyhf_dask.scan(seed_grid, kernel="pyhf")
    for key in (
        "pyhf_version",
        "kernel",
        "test_stat",
        "normsys_interpcode",
        "histosys_interpcode",
        "workspace_digest",
        "poi_name",
    ):
        assert key in ds.attrs
    assert ds.attrs["workspace_digest"] == pyhf.utils.digest(seed_grid.workspace)
    assert all(isinstance(v, str | int | float | np.ndarray) for v in ds.attrs.values())


def test_graph_grows_with_chunks_not_points(seed_workspace):
    small = SignalGrid.from_function(seed_workspace, scaled_signal, scale=np.linspace(0, 2, 1000))
    large = SignalGrid.from_function(seed_workspace, scaled_signal, scale=np.linspace(0, 2, 10_000))
    n_small = len(dict(pyhf_dask.scan(small, kernel="pyhf", chunk_size=50).__dask_graph__()))
    n_large = len(dict(pyhf_dask.scan(large, kernel="pyhf", chunk_size=500).__dask_graph__()))
    assert n_small == n_large  # 20 chunks each
    n_more = len(dict(pyhf_dask.scan(large, kernel="pyhf", chunk_size=250).__dask_graph__()))
    assert n_more > n_large


def test_point_without_signal_fails_alone(sbottom_archive, caplog):
    """RegionB's sbottom_1500_1495_60 patch adds no signal (no mu_SIG): that point fails with
    pyhf's message, the other point is fitted."""
    grid = SignalGrid.from_path(sbottom_archive, region="RegionB").select(
        ["sbottom_1500_1495_60", "sbottom_1400_550_60"]
    )
    ds = pyhf_dask.scan(grid, kernel="pyhf", **SBOTTOM_SETTINGS).compute(scheduler="synchronous")
    by_name = dict(zip(ds.point.values, status_names(ds.status), strict=True))
    assert by_name == {"sbottom_1400_550_60": "converged", "sbottom_1500_1495_60": "failed"}
    failed = str(ds.message.sel(point="sbottom_1500_1495_60").values)
    assert "mu_SIG" in failed
    assert "not a normfactor of the model for 1 of 2 points" in caplog.text


def test_nan_cls_from_pyhf_is_a_failed_point(sbottom_archive):
    """pyhf (SciPy default tolerance) returns CLs_obs = nan here while every fit reports
    success: the point must be failed, not converged with a NaN."""
    grid = SignalGrid.from_path(sbottom_archive, region="RegionB").select(["sbottom_1000_131_1"])
    ds = pyhf_dask.scan(grid, kernel="pyhf", **SBOTTOM_SETTINGS).compute(scheduler="synchronous")
    assert status_names(ds.status)[0] == "failed"
    assert "non-finite CLs" in str(ds.message.values[0])
    assert np.isnan(ds.CLs_exp.values[0]).all()
