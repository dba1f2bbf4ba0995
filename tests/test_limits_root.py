"""Upper limits by root search (``upper_limit="root"``) against pyhf's ``upper_limit(scan=None)``.

The oracle is pyhf 0.7.6's own search (``toms748_scan``) with SciPy fits to tolerance 1e-10
and its root to rtol 1e-8; ours run with the default rtol 1e-4 and must agree to 1e-4
relative. Where they differ more, the ``-2 log L`` of both solutions decides
(:func:`_lower_minimum`): pyhf's SciPy fits stop in local minima of the fixed-POI fits on
the Asimov data of some sbottom points, which the JAX kernel's second starts avoid.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy.optimize import brentq
from scipy.special import log_ndtr

import pyhf_dask
from pyhf_dask.grid import SignalGrid, materialize, signal_patch, simple_workspace
from pyhf_dask.kernels import BAND, FitOptions
from pyhf_dask.kernels.limits import BAND_NSIGMA, Lockstep, expected_targets
from pyhf_dask.kernels.reference import build_model

#: pyhf's doctest model (``pyhf.simplemodels.uncorrelated_background``).
DOCTEST = ([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
#: Every 22nd RegionA point: 10 points over the whole plane.
SBOTTOM_SAMPLE = list(range(0, 217, 22))
CODES = [("code4", "code4p"), ("code1", "code0")]


def _scaled(scale: float, base: list[float]) -> Any:
    return signal_patch([b * scale for b in base])


def _grid(scales: list[float]) -> SignalGrid:
    ws = simple_workspace(*DOCTEST)
    return SignalGrid.from_function(ws, functools.partial(_scaled, base=DOCTEST[0]), scale=scales)


def _pyhf_limits(workspace: dict[str, Any], patch: Any, codes: tuple[str, str]) -> np.ndarray:
    """pyhf's ``upper_limit(scan=None)``: [obs, exp (band -2..2)], tight fits and root."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    options = FitOptions(normsys_interpcode=codes[0], histosys_interpcode=codes[1]).to_dict()
    model, data = build_model(workspace, patch, options)
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data, model, scan=None, rtol=1e-8)
    return np.array([float(obs), *map(float, exp)])


def _ours(ds: xr.Dataset) -> np.ndarray:
    return np.concatenate([ds.upper_limit_obs.values[:, None], ds.upper_limit_exp.values], axis=1)


def _sqrt_qa(cls_exp: float, k: int) -> float:
    """``sqrt(q_A)`` of an expected CLs of band index ``k`` (its formula inverted)."""
    n = BAND_NSIGMA[k]
    target = np.log(cls_exp)
    return brentq(lambda s: log_ndtr(-(n + s)) - log_ndtr(-n) - target, 0.0, 80.0, xtol=1e-14)


def _lower_minimum(grid: SignalGrid, codes: tuple[str, str], mu: float, k: int) -> float:
    """How much lower our fixed fit on the Asimov data at ``mu`` is than pyhf's (>0: ours).

    Expected CLs depends on ``q_A = -2 log L(mu) - (-2 log L(free))`` on the Asimov data
    only; both free fits end at the Asimov data's own minimum (``-2 log L`` equal to 1e-8),
    so the difference of the ``q_A`` of the two kernels at pyhf's limit is the difference of
    their fixed-fit ``-2 log L``. Ours is from the JAX kernel's POI-grid test at ``mu``.
    """
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    options = FitOptions(normsys_interpcode=codes[0], histosys_interpcode=codes[1]).to_dict()
    model, data = build_model(grid.workspace, materialize(grid.chunk(0, 1))[0], options)
    *_, calc = pyhf.infer.hypotest(
        mu, data, model, return_expected_set=True, return_calculator=True
    )
    settings = {"normsys_interpcode": codes[0], "histosys_interpcode": codes[1]}
    ds = pyhf_dask.scan(grid, kernel="jax", poi_value=mu, **settings).compute()
    ours = _sqrt_qa(float(ds.CLs_exp.values[0, k]), k) ** 2
    return float(calc.sqrtqmuA_v) ** 2 - ours


def test_lockstep_solves_many_curves_to_tolerance() -> None:
    roots = np.array([[0.3, np.sqrt(2.0), np.log(3.0), 0.01, 5.0]])

    def f(x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(x)
        return np.array(
            [
                [
                    x[0, 0] - 0.3,
                    x[0, 1] ** 2 - 2.0,
                    np.exp(x[0, 2]) - 3.0,
                    np.sqrt(x[0, 3]) - 0.1,
                    np.tanh(x[0, 4] - 5.0),
                ]
            ]
        )

    a, b = np.zeros((1, 5)), np.full((1, 5), 8.0)
    for rtol in (1e-4, 1e-10):
        solver = Lockstep(a, b, f(a), f(b), rtol=rtol)
        while not solver.done.all():
            x = solver.propose()
            assert np.all((x > solver.a) & (x < solver.b) | np.isnan(x))  # inside the bracket
            solver.update(x, f(x))
        assert not solver.failed.any()
        np.testing.assert_allclose(solver.root, roots, rtol=rtol)
    # no sign change: no root, NaN; a failed evaluation: NaN and failed
    solver = Lockstep(
        np.zeros(2), np.ones(2), np.array([1.0, -1.0]), np.array([2.0, 1.0]), rtol=1e-4
    )
    assert solver.done.tolist() == [True, False]
    solver.update(solver.propose(), np.array([np.nan, np.nan]))
    assert np.isnan(solver.root).all() and solver.failed.tolist() == [False, True]


def test_expected_targets_give_cls_alpha() -> None:
    for cl in (0.9, 0.95):
        s = expected_targets(cl)
        cls = np.exp(log_ndtr(-(BAND_NSIGMA + s)) - log_ndtr(-BAND_NSIGMA))
        np.testing.assert_allclose(cls, 1 - cl, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["jax", "pyhf"])
def test_limits_equal_pyhf_on_its_doctest_model(kernel: str) -> None:
    grid = _grid([1.0, 0.5, 2.0])
    extra = {"scipy_tolerance": 1e-10} if kernel == "pyhf" else {}
    ds = pyhf_dask.scan(grid, kernel=kernel, upper_limit="root", **extra).compute()
    assert ds.attrs["upper_limit"] == "root" and ds.upper_limit_exp.dims == ("point", "band")
    assert ds.limit_status.values.tolist() == [0, 0, 0]
    for i, patch in enumerate(materialize(grid.chunk(0, 3))):
        want = _pyhf_limits(grid.workspace, patch, ("code4", "code4p"))
        np.testing.assert_allclose(_ours(ds)[i], want, rtol=1e-4)
    # pyhf's doctest (toms748_scan to rtol 0.01, upper_limit's linear scan) for scale 1
    np.testing.assert_allclose(float(ds.upper_limit_obs[0]), 1.01156939, rtol=1e-2)
    # the limit of a signal twice as large is half as large (mu scales the signal)
    np.testing.assert_allclose(_ours(ds)[2] * 2.0, _ours(ds)[0], rtol=2e-4)


@pytest.mark.parametrize("kernel", ["jax", "pyhf"])
def test_no_root_within_the_poi_bounds_is_flagged(kernel: str) -> None:
    # a signal 200 times too small: CLs stays above 0.05 up to the POI's upper bound 10
    grid = _grid([1.0, 0.005])
    ds = pyhf_dask.scan(grid, kernel=kernel, upper_limit="root").compute()
    assert ds.limit_status.values.tolist() == [0, 1]
    assert np.isnan(_ours(ds)[1]).all() and np.isfinite(_ours(ds)[0]).all()
    assert "upper bound 10" in str(ds.message.values[1])
    assert pyhf_dask.status_names(ds.status).tolist() == ["converged", "converged"]


def test_limits_in_a_store_and_on_resume(tmp_path: Path) -> None:
    from pyhf_dask.store import scan_to_store

    grid = _grid([0.5, 1.0, 2.0, 4.0])
    path = tmp_path / "limits.zarr"
    options = {"kernel": "jax", "upper_limit": "root", "chunk_size": 2}
    stored = scan_to_store(grid, path, scheduler="synchronous", **options)
    direct = pyhf_dask.scan(grid, **options).compute()
    for name in ("upper_limit_obs", "upper_limit_exp", "limit_status"):
        np.testing.assert_array_equal(stored[name].values, direct[name].values)
    again = scan_to_store(grid, path, scheduler="synchronous", resume=True, **options)
    np.testing.assert_array_equal(again.upper_limit_obs.values, direct.upper_limit_obs.values)
    # a resume with another limit method is refused
    with pytest.raises(pyhf_dask.exceptions.SettingsMismatch, match="upper_limit"):
        scan_to_store(grid, path, scheduler="synchronous", resume=True, kernel="jax", chunk_size=2)


def test_cli_upper_limit_root(tmp_path: Path) -> None:
    import json

    from pyhf_dask.cli import main

    ws = simple_workspace(*DOCTEST)
    (tmp_path / "BkgOnly.json").write_text(json.dumps(ws))
    for scale in (1.0, 2.0):
        patch = [
            {
                "op": "replace",
                "path": "/channels/0/samples/0/data",
                "value": [12.0 * scale, 11.0 * scale],
            }
        ]
        (tmp_path / f"patch.sig_{int(scale)}.json").write_text(json.dumps(patch))
    out = tmp_path / "limits.nc"
    result = CliRunner().invoke(
        main,
        [
            "scan",
            str(tmp_path),
            "--upper-limit",
            "root",
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
    assert "by root search to rtol 0.0001" in result.output
    ds = xr.open_dataset(out)
    assert ds.limit_status.values.tolist() == [0, 0]
    want = _pyhf_limits(ws, materialize(_grid([1.0]).chunk(0, 1))[0], ("code4", "code4p"))
    np.testing.assert_allclose(_ours(ds)[0], want, rtol=1e-4)


@pytest.fixture(scope="module")
def sbottom_limits(sbottom_dir: Path) -> dict[tuple[str, str], tuple[SignalGrid, xr.Dataset]]:
    """The JAX kernel's root-searched limits of the sample, per convention (one scan each)."""
    grid = SignalGrid.from_path(sbottom_dir, region="RegionA").take(SBOTTOM_SAMPLE)
    out = {}
    for codes in CODES:
        settings = {"normsys_interpcode": codes[0], "histosys_interpcode": codes[1]}
        ds = pyhf_dask.scan(grid, kernel="jax", upper_limit="root", **settings).compute()
        out[codes] = (grid, ds)
    return out


@pytest.mark.pyhf_search
@pytest.mark.slow
@pytest.mark.timeout(3600)  # pyhf's search of one code1/code0 point took > 20 min under load
@pytest.mark.parametrize("codes", CODES, ids=["code4-code4p", "code1-code0"])
@pytest.mark.parametrize("k", range(len(SBOTTOM_SAMPLE)))
def test_limits_equal_pyhf_on_sbottom_points(
    sbottom_limits: dict[tuple[str, str], tuple[SignalGrid, xr.Dataset]],
    codes: tuple[str, str],
    k: int,
) -> None:
    # one point per test: pyhf's search takes 2-5 minutes a point with 1e-10 fits
    grid, ds = sbottom_limits[codes]
    name = grid.names[k]
    assert int(ds.limit_status.values[k]) == 0, ds.message.values[k]
    ours = _ours(ds)[k]
    want = _pyhf_limits(grid.workspace, materialize(grid.chunk(k, k + 1))[0], codes)
    rel = np.abs(ours - want) / want
    assert rel[0] <= 1e-4, (name, ours, want)
    for j in np.flatnonzero(rel[1:] > 1e-4):
        # pyhf's fixed fit on the Asimov data at its limit is a local minimum: ours is
        # lower there (the -2 log L says who is right), and our limit solves our curve
        gain = _lower_minimum(grid.take([k]), codes, float(want[1 + j]), int(j))
        assert gain > 1e-6, (name, BAND[j], ours, want, gain)


def _search_fits(ds: xr.Dataset) -> np.ndarray:
    import re

    return np.array(
        [int(re.search(r"limits: (\d+) fits", str(m)).group(1)) for m in ds.message.values]
    )


@pytest.mark.parametrize("kernel", ["jax", "pyhf"])
def test_observed_only_and_expected_only(kernel: str) -> None:
    grid = _grid([1.0, 2.0])
    extra = {"scipy_tolerance": 1e-10} if kernel == "pyhf" else {}
    full = pyhf_dask.scan(grid, kernel=kernel, upper_limit="root", **extra).compute()
    obs = pyhf_dask.scan(grid, kernel=kernel, upper_limit="root", curves="observed", **extra)
    exp = pyhf_dask.scan(grid, kernel=kernel, upper_limit="root", curves="expected", **extra)
    obs, exp = obs.compute(), exp.compute()
    np.testing.assert_allclose(obs.upper_limit_obs.values, full.upper_limit_obs.values, rtol=1e-4)
    np.testing.assert_allclose(exp.upper_limit_exp.values, full.upper_limit_exp.values, rtol=1e-4)
    assert np.isnan(obs.upper_limit_exp.values).all() and np.isnan(exp.upper_limit_obs).all()
    assert obs.limit_status.values.tolist() == exp.limit_status.values.tolist() == [0, 0]
    assert obs.attrs["limit_curves"] == "observed"
    # fewer fits: the observed curve alone, the expected curves alone
    assert (_search_fits(obs) < _search_fits(exp)).all()
    assert (_search_fits(exp) < _search_fits(full)).all()


def test_observed_only_needs_the_root_search() -> None:
    with pytest.raises(pyhf_dask.exceptions.InvalidOption, match="--upper-limit root"):
        pyhf_dask.scan(_grid([1.0]), poi_value=[0.0, 1.0, 2.0], curves="observed")


def test_cli_observed_only(tmp_path: Path) -> None:
    import json

    from pyhf_dask.cli import main

    (tmp_path / "BkgOnly.json").write_text(json.dumps(simple_workspace(*DOCTEST)))
    patch = [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [12.0, 11.0]}]
    (tmp_path / "patch.sig_1.json").write_text(json.dumps(patch))
    runner = CliRunner()
    base = ["scan", str(tmp_path), "--kernel", "jax", "--executor", "synchronous", "--table"]
    result = runner.invoke(main, [*base, "--upper-limit", "root", "--observed-only"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("sig_1"))
    assert row.split()[2:7] == ["nan"] * 5 and float(row.split()[1]) == pytest.approx(1.0116, 1e-3)
    result = runner.invoke(main, [*base, "--expected-only"])
    assert result.exit_code == 2 and "--upper-limit root" in result.output
