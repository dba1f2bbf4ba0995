"""Discovery scans (``test_stat="q0"``): p0 and Z of both kernels against pyhf's hypotest.

pyhf 0.7.6's ``hypotest(0.0, data, model, test_stat="q0", return_expected_set=True)``
returns the observed p0 (``CLsb``) and the expected p0 band under the signal hypothesis
(``CLsb_exp`` for ``n = 2, 1, 0, -1, -2``): the oracle, to 1e-5, with SciPy fits run to a
tight tolerance so that the reference's own stopping error does not enter.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
import pytest
import xarray as xr
from reference_values import REFERENCE, SBOTTOM_SETTINGS
from scipy.stats import norm

import pyhf_dask
from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.grid import (
    SignalGrid,
    materialize,
    scaled_signal,
    signal_patch,
    simple_workspace,
)
from pyhf_dask.kernels.reference import build_model

#: Hand-made workspaces with a signal excess: (signal, background, uncertainty, observed).
EXCESS = [
    ([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [70.0, 61.0]),  # about 2 sigma
    ([5.0, 20.0, 3.0], [30.0, 40.0, 10.0], [2.0, 4.0, 1.5], [36.0, 75.0, 12.0]),  # about 4
    ([2.0], [100.0], [10.0], [95.0]),  # a deficit: muhat at the bound 0, p0 = 0.5
]


def _pyhf_q0(workspace: dict[str, Any], patch: Any, options: dict[str, Any]) -> np.ndarray:
    """pyhf's observed p0 and expected band of one point, [obs, exp(-2..2) in pyhf order]."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    model, data = build_model(workspace, patch, options)
    obs, exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected_set=True)
    return np.array([float(obs), *map(float, exp)])


def _ours(ds: xr.Dataset) -> np.ndarray:
    return np.concatenate([ds.p0_obs.values[:, None], ds.p0_exp.values], axis=1)


def _scaled(scale: float, base: list[float]) -> Any:
    return signal_patch([b * scale for b in base])


def _grid(
    signal: list[float], bkg: list[float], unc: list[float], obs: list[float], scales: list[float]
) -> SignalGrid:
    ws = simple_workspace(signal, bkg, unc, obs)
    return SignalGrid.from_function(ws, functools.partial(_scaled, base=signal), scale=scales)


def _tight(kernel: str) -> dict[str, Any]:
    """The reference kernel's SciPy fits to the oracle's tolerance (same pyhf, same fits)."""
    return {"scipy_tolerance": 1e-12} if kernel == "pyhf" else {}


def _options() -> dict[str, Any]:
    from pyhf_dask.kernels import FitOptions

    return FitOptions(test_stat="q0", poi_values=(0.0,)).to_dict()


@pytest.mark.parametrize("kernel", ["pyhf", "jax"])
def test_q0_equals_pyhf_on_workspaces_with_an_excess(kernel: str) -> None:
    for signal, bkg, unc, observed in EXCESS:
        grid = _grid(signal, bkg, unc, observed, [0.5, 1.0, 2.0])
        ws = grid.workspace
        ds = pyhf_dask.scan(grid, test_stat="q0", kernel=kernel, **_tight(kernel)).compute()
        assert pyhf_dask.status_names(ds.status).tolist() == ["converged"] * 3
        for i, patch in enumerate(materialize(grid.chunk(0, 3))):
            want = _pyhf_q0(ws, patch, _options())
            np.testing.assert_allclose(_ours(ds)[i], want, rtol=1e-5, atol=1e-9)
        # Z = Phi^-1(1 - p0), per point and band
        np.testing.assert_allclose(ds.Z_obs.values, norm.isf(ds.p0_obs.values), rtol=1e-9)
        np.testing.assert_allclose(ds.Z_exp.values, norm.isf(ds.p0_exp.values), rtol=1e-9)
    # the deficit: muhat at its bound 0, q0 = 0 up to the fits' precision (sqrt(q0) of a
    # -2 log L difference of 1e-12 is 1e-6), p0 = 1/2
    assert float(ds.p0_obs[0]) == pytest.approx(0.5, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["pyhf", "jax"])
def test_q0_equals_pyhf_on_the_sbottom_reference_points(sbottom_dir: Path, kernel: str) -> None:
    for (region, name), _ in REFERENCE.items():
        grid = SignalGrid.from_path(sbottom_dir, region=region).select([name])
        settings = {**SBOTTOM_SETTINGS, **_tight(kernel)}
        ds = pyhf_dask.scan(grid, test_stat="q0", kernel=kernel, **settings).compute()
        assert pyhf_dask.status_names(ds.status).tolist() == ["converged"], ds.message.values
        options = {**_options(), **SBOTTOM_SETTINGS}
        want = _pyhf_q0(grid.workspace, materialize(grid.chunk(0, 1))[0], options)
        got = _ours(ds)[0]
        np.testing.assert_allclose(got[1:], want[1:], rtol=1e-5, atol=1e-9, err_msg=name)
        q0_ours, q0_pyhf = norm.isf(got[0]) ** 2, norm.isf(want[0]) ** 2
        if q0_pyhf < 1e-6:
            # best fit at the POI's bound 0: q0 = 0 exactly when the free fit finds the
            # bound; pyhf's SciPy free fit ends up to 1e-9 above it in -2 log L, and
            # sqrt(q0) turns that into 2e-5 on p0 = 1/2. The lower -2 log L is right:
            # ours is no higher than pyhf's.
            assert q0_ours <= q0_pyhf + 1e-10, name
        else:
            assert got[0] == pytest.approx(want[0], rel=1e-5), name


def test_q0_results_merge_with_a_cls_scan() -> None:
    ws = simple_workspace(*EXCESS[0])
    grid = SignalGrid.from_function(ws, scaled_signal, scale=[0.5, 1.0])
    cls = pyhf_dask.scan(grid, kernel="jax").compute()
    q0 = pyhf_dask.scan(grid, test_stat="q0", kernel="jax").compute()
    assert "poi" not in q0.coords and "CLs_obs" not in q0
    both = xr.merge(
        [cls, q0[["p0_obs", "p0_exp", "Z_obs", "Z_exp"]]], compat="no_conflicts", join="exact"
    )
    assert {"CLs_obs", "CLs_exp", "p0_obs", "Z_exp"} <= set(both.data_vars)
    np.testing.assert_array_equal(both.Z_obs.values, q0.Z_obs.values)
    np.testing.assert_array_equal(both.CLs_obs.values, cls.CLs_obs.values)


def test_q0_refuses_other_poi_values_and_limits() -> None:
    grid = SignalGrid.from_function(simple_workspace(*EXCESS[0]), scaled_signal, scale=[1.0])
    with pytest.raises(InvalidOption, match="POI = 0 only"):
        pyhf_dask.scan(grid, test_stat="q0", poi_value=[0.0, 1.0])
    with pytest.raises(InvalidOption, match="not 'q0'"):
        pyhf_dask.scan(grid, test_stat="q0", upper_limit="root")


def test_q0_store_round_trip(tmp_path: Path) -> None:
    from pyhf_dask.store import scan_to_store

    grid = _grid(*EXCESS[1], [1.0, 2.0])
    path = tmp_path / "q0.zarr"
    stored = scan_to_store(grid, path, kernel="jax", test_stat="q0", scheduler="synchronous")
    direct = pyhf_dask.scan(grid, kernel="jax", test_stat="q0").compute()
    for name in ("p0_obs", "p0_exp", "Z_obs", "Z_exp"):
        np.testing.assert_allclose(stored[name].values, direct[name].values, rtol=1e-12)
    again = scan_to_store(
        grid, path, kernel="jax", test_stat="q0", resume=True, scheduler="synchronous"
    )
    assert pyhf_dask.status_names(again.status).tolist() == ["converged"] * 2


def _plane_signal(m1: float, m2: float) -> Any:
    return signal_patch([0.5 * m1, 0.3 * m2])


def test_significance_map_of_a_q0_scan() -> None:
    import matplotlib

    matplotlib.use("Agg")
    ws = simple_workspace([10.0, 10.0], [50.0, 52.0], [3.0, 4.0], [75.0, 70.0])
    values = [5.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    grid = SignalGrid.from_function(ws, _plane_signal, m1=values, m2=values)
    ds = pyhf_dask.scan(grid, test_stat="q0", kernel="jax").compute()
    assert (ds.Z_exp.sel(band=0).max() > 5) and (ds.Z_exp.sel(band=0).min() < 3)
    fig = ds.pyhf_dask.plot_significance_map(curve="exp")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Z = 3" in labels and "Z = 5" in labels
    assert ax.get_title().startswith("Discovery significance, expected (exp)")
    # the Z = 3 line separates the points below 3 from those above
    z3 = next(line for line in ax.get_lines() if line.get_label() == "Z = 3")
    assert len(z3.get_xdata()) > 2


def test_cli_q0_scan_table_and_significance_plot(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from pyhf_dask.cli import main

    ws = simple_workspace([10.0, 10.0], [50.0, 52.0], [3.0, 4.0], [75.0, 70.0])
    (tmp_path / "BkgOnly.json").write_text(json.dumps(ws))
    for m1 in (5, 40, 100):
        for m2 in (5, 40, 100):
            patch = _plane_signal(float(m1), float(m2))
            (tmp_path / f"patch.sig_{m1}_{m2}.json").write_text(json.dumps(patch))
    out = tmp_path / "q0.nc"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "scan",
            str(tmp_path),
            "--test-stat",
            "q0",
            "--labels",
            "m1,m2",
            "--kernel",
            "jax",
            "--executor",
            "synchronous",
            "-o",
            str(out),
            "--table",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "# discovery (q0)" in result.output and "Z_obs" in result.output
    ds = xr.open_dataset(out)
    assert (ds.Z_obs.values > 0).all() and "CLs_obs" not in ds
    png = tmp_path / "z.png"
    result = runner.invoke(main, ["plot", str(out), "--kind", "significance", "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 0
