"""Fixed-POI fits with two minima: every fixed fit starts from several points, the lowest wins.

The hand-made workspaces have one bin and two parameters (``mu`` and a histosys ``alpha``
on both samples, both variations above the nominal, an excess in the data): at POI = 1
the likelihood has two wells in ``alpha``, the global one away from where a Newton fit
from pyhf's suggested start goes, while the free fit has one minimum. The oracle is a
dense scan of pyhf's own ``-2 logpdf`` (NumPy backend) refined by bounded Brent steps for
the fixed fits, and L-BFGS-B from a grid of starts for the free ones; CLs follow from the
global minima with pyhf's asymptotic formulas (written out here).

The slow test runs the two ATLAS 1Lbb points where the POI = 1 fit on the data used to end
in the higher of two minima of a jet-energy-scale parameter (issue 24).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.optimize
from scipy.stats import norm

from pyhf_dask.kernels import FitOptions

pytest.importorskip("jax")

#: ``-2 log L`` agreement with the oracle's global minima.
VALUE_TOLERANCE = 1e-6
#: CLs agreement with the CLs of the oracle's global minima.
CLS_TOLERANCE = 1e-5


def _workspace(
    bkg: float, bkg_hi: float, bkg_lo: float, sig: float, sig_hi: float, sig_lo: float, n: float
) -> dict[str, Any]:
    """One bin: a signal (``mu``) and a background, one histosys ``alpha`` on both."""

    def histosys(hi: float, lo: float) -> dict[str, Any]:
        return {"name": "alpha", "type": "histosys", "data": {"hi_data": [hi], "lo_data": [lo]}}

    signal = {
        "name": "signal",
        "data": [sig],
        "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None},
            histosys(sig_hi, sig_lo),
        ],
    }
    background = {"name": "bkg", "data": [bkg], "modifiers": [histosys(bkg_hi, bkg_lo)]}
    return {
        "channels": [{"name": "sr", "samples": [signal, background]}],
        "observations": [{"name": "sr", "data": [n]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


#: Bimodal at POI = 1 on the data (wells near alpha = 0.53 and 1.29, the second 0.21 lower;
#: a Newton fit from pyhf's start ends in the first), one minimum in the
#: free fit (mu_hat = 0, at its bound), so that CLs depend on the POI = 1 fit.
DOUBLE_WELL = _workspace(100.0, 81.6, 111.0, 18.5, 30.9, 36.0, 87.0)
#: The same with the wells 0.04 apart, and mu_hat = 0.29.
DOUBLE_WELL_2 = _workspace(100.0, 97.0, 93.6, 38.2, 33.9, 74.9, 111.0)
MODELS = {"double_well": DOUBLE_WELL, "double_well_2": DOUBLE_WELL_2}


class _Oracle:
    """Global minima of pyhf's ``-2 logpdf`` of a two-parameter (``mu``, ``alpha``) model."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import pyhf

        pyhf.set_backend("numpy")
        self.ws = pyhf.Workspace(spec)
        self.model = self.ws.model()
        self.data = np.asarray(self.ws.data(self.model), dtype=float)
        self.poi = self.model.config.poi_index
        self.alpha = self.model.config.par_slice("alpha").start
        self.bounds = np.asarray(self.model.config.suggested_bounds(), dtype=float)
        self.grid = np.linspace(*self.bounds[self.alpha], 20001)

    def nll(self, pars: np.ndarray, data: np.ndarray) -> float:
        return float(-2.0 * self.model.logpdf(np.asarray(pars, dtype=float), data)[0])

    def _pars(self, mu: float, alpha: float) -> np.ndarray:
        x = np.zeros(2)
        x[self.poi], x[self.alpha] = mu, alpha
        return x

    def fixed_minima(self, mu: float, data: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Every local minimum in ``alpha`` at POI = ``mu``, lowest first (scan + Brent)."""
        import pyhf

        batch = self.ws.model(batch_size=len(self.grid))
        pars = np.zeros((len(self.grid), 2))
        pars[:, self.poi], pars[:, self.alpha] = mu, self.grid
        f = -2.0 * np.asarray(batch.logpdf(pars, np.asarray(data)), dtype=float)
        pyhf.set_backend("numpy")
        inner = np.flatnonzero((f[1:-1] <= f[:-2]) & (f[1:-1] <= f[2:])) + 1
        ends = [j for j in (0, len(f) - 1) if f[j] <= f[1 if j == 0 else j - 1]]
        out = []
        step = self.grid[1] - self.grid[0]
        for j in [*inner.tolist(), *ends]:
            lo = max(self.grid[0], self.grid[j] - step)
            hi = min(self.grid[-1], self.grid[j] + step)
            res = scipy.optimize.minimize_scalar(
                lambda a: self.nll(self._pars(mu, a), data),
                bounds=(lo, hi),
                method="bounded",
                options={"xatol": 1e-12},
            )
            out.append((float(res.fun), self._pars(mu, float(res.x))))
        return sorted(out, key=lambda t: t[0])

    def free_minimum(self, data: np.ndarray) -> tuple[float, np.ndarray]:
        """The lowest L-BFGS-B minimum from a grid of starts (``mu`` x ``alpha``)."""
        best: tuple[float, np.ndarray] = (np.inf, np.zeros(2))
        for mu in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
            for alpha in np.linspace(-3.0, 3.0, 13):
                res = scipy.optimize.minimize(
                    lambda x: self.nll(x, data),
                    self._pars(mu, alpha),
                    method="L-BFGS-B",
                    bounds=[tuple(b) for b in self.bounds],
                    options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
                )
                if res.fun < best[0]:
                    best = (float(res.fun), np.asarray(res.x))
        return best

    def hypotest(self, mu: float) -> dict[str, Any]:
        """The five fits' global minima and CLs (qtilde, asymptotic) at POI = ``mu``."""
        free = self.free_minimum(self.data)
        fixed = self.fixed_minima(mu, self.data)
        zero = self.fixed_minima(0.0, self.data)[0]
        asimov = np.asarray(self.model.expected_data(zero[1]), dtype=float)
        free_a = self.free_minimum(asimov)
        fixed_a = self.fixed_minima(mu, asimov)[0]
        q = 0.0 if free[1][self.poi] > mu else max(fixed[0][0] - free[0], 0.0)
        q_a = 0.0 if free_a[1][self.poi] > mu else max(fixed_a[0] - free_a[0], 0.0)
        sq, sq_a = np.sqrt(q), np.sqrt(q_a)
        t = sq - sq_a if sq <= sq_a else (q - q_a) / (2.0 * sq_a)
        cls_obs = norm.sf(t + sq_a) / norm.sf(t)
        band = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
        return {
            "values": [zero[0], free[0], fixed[0][0], free_a[0], fixed_a[0]],
            "fixed_minima": fixed,
            "muhat": float(free[1][self.poi]),
            "asimov": asimov,
            "cls_obs": float(cls_obs),
            "cls_exp": norm.sf(band + sq_a) / norm.sf(band),
        }


def _kernel_fits(spec: dict[str, Any]) -> tuple[dict[str, np.ndarray], Any]:
    """The JAX kernel's fits of one point (the arrays behind its CLs) and its dense model."""
    from pyhf_dask.kernels import jax_kernel
    from pyhf_dask.kernels.jax_batch import stack_models
    from pyhf_dask.kernels.jax_model import build_dense, structure_key

    options = FitOptions().to_dict()
    jax_kernel._configure_jax()
    dense = build_dense(spec, options, structure_key(spec, options))
    return jax_kernel._run_group(stack_models([dense]), options, jax_kernel._device(None)), dense


def _to_pyhf(model: Any, dense: Any, x: np.ndarray) -> np.ndarray:
    """Parameters of the dense model's order in pyhf's order."""
    out = np.zeros(model.config.npars)
    offset = 0
    for name in dense.par_names:
        size = model.config.param_set(name).n_parameters
        out[model.config.par_slice(name)] = x[offset : offset + size]
        offset += size
    return out


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], _Oracle, dict[str, Any]]:
    spec = MODELS[request.param]
    oracle = _Oracle(spec)
    return spec, oracle, oracle.hypotest(1.0)


def test_the_workspaces_are_bimodal_at_fixed_poi_only(case: Any) -> None:
    """The premise: two minima at POI = 1 on the data, one in the free fit, mu_hat < 1."""
    _, oracle, truth = case
    assert truth["muhat"] < 1.0  # qtilde > 0: the POI = 1 fit makes the CLs
    minima = truth["fixed_minima"]
    assert len(minima) == 2
    assert minima[1][0] - minima[0][0] > 0.03  # far above rounding and DISAGREE
    assert abs(minima[0][1][oracle.alpha] - minima[1][1][oracle.alpha]) > 0.3
    # the free fit's profile over alpha (mu free) has one minimum
    profile = []
    for alpha in np.linspace(-3.0, 3.0, 121):
        res = scipy.optimize.minimize_scalar(
            lambda mu, a=alpha: oracle.nll(oracle._pars(mu, a), oracle.data),
            bounds=tuple(oracle.bounds[oracle.poi]),
            method="bounded",
            options={"xatol": 1e-10},
        )
        profile.append(res.fun)
    p = np.asarray(profile)
    assert int(np.sum((p[1:-1] < p[:-2]) & (p[1:-1] < p[2:]))) == 1


def test_every_fit_reaches_the_global_minimum(case: Any) -> None:
    spec, oracle, truth = case
    res, dense = _kernel_fits(spec)
    thetas = [
        (res["obs_theta"][0, 0], oracle.data),
        (res["obs_theta"][0, 1], oracle.data),
        (res["obs_theta"][0, 2], oracle.data),
        (res["asimov_theta"][0, 0], truth["asimov"]),
        (res["asimov_theta"][0, 1], truth["asimov"]),
    ]
    assert bool(np.all(res["converged"][0]))
    for k, ((x, data), best) in enumerate(zip(thetas, truth["values"], strict=True)):
        ours = oracle.nll(_to_pyhf(oracle.model, dense, x), data)
        assert abs(ours - best) < VALUE_TOLERANCE, (k, ours, best)


def test_cls_are_those_of_the_global_minima(case: Any) -> None:
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    spec, _, truth = case
    out = hypotest_chunk(spec, [[]], FitOptions().to_dict())
    assert out["status"][0] == "converged", out["message"][0]
    assert abs(out["CLs_obs"][0, 0] - truth["cls_obs"]) < CLS_TOLERANCE
    np.testing.assert_allclose(out["CLs_exp"][0, 0], truth["cls_exp"], atol=CLS_TOLERANCE)


def test_the_disagreement_is_in_the_message(case: Any) -> None:
    """The starts found both minima: the message says so, and by how much."""
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    spec, _, truth = case
    message = str(hypotest_chunk(spec, [[]], FitOptions().to_dict())["message"][0])
    found = re.search(r"starts disagreed: .*POI=1 on data by ([0-9.e+-]+)", message)
    assert found, message
    (low, _), (high, _) = truth["fixed_minima"]
    assert float(found.group(1)) == pytest.approx(high - low, rel=2e-3)


def test_one_minimum_says_nothing(seed_workspace: dict) -> None:
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk
    from pyhf_dask.simplemodels import signal_patch

    out = hypotest_chunk(seed_workspace, [signal_patch([12.0, 11.0])], FitOptions().to_dict())
    assert out["status"][0] == "converged"
    assert "disagreed" not in str(out["message"][0])
    assert "second starts" in str(out["message"][0])


# -- the published case -------------------------------------------------------------------

_1LBB = "atlas-1Lbb-likelihood.tar.gz"
#: The points where the POI = 1 fit on the data stopped in the higher minimum (issue 24).
_POINTS = ("C1N2_Wh_hbb_450_50", "C1N2_Wh_hbb_600_250")


@pytest.fixture(scope="module")
def lbb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import DATA

    here = Path(__file__).resolve().parents[3] / "shared" / "data"
    archive = next((d / _1LBB for d in (DATA, here) if (d / _1LBB).exists()), None)
    if archive is None:
        pytest.skip(f"no {_1LBB} in {DATA} or {here} (set PYHF_DASK_DATA)")
    dest = tmp_path_factory.mktemp("1lbb")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "1Lbb"


@pytest.mark.pyhf_search
@pytest.mark.slow
def test_1lbb_fixed_fits_no_higher_than_pyhf(lbb_dir: Path) -> None:
    """Our POI = 1 fit on the data, judged by pyhf's own -2 logpdf, is no higher than pyhf's
    (SciPy tolerance 1e-10, from its default start and from ours)."""
    import pyhf

    from pyhf_dask.kernels import jax_kernel
    from pyhf_dask.kernels.jax_batch import stack_models
    from pyhf_dask.kernels.jax_model import apply_patch, build_dense, structure_key

    options = FitOptions().to_dict()
    jax_kernel._configure_jax()
    ws = json.loads((lbb_dir / "BkgOnly.json").read_text())
    specs = [
        apply_patch(ws, json.loads((lbb_dir / f"patch_{name}.json").read_text()))
        for name in _POINTS
    ]
    dense = [build_dense(s, options, structure_key(s, options)) for s in specs]
    res = jax_kernel._run_group(stack_models(dense), options, jax_kernel._device(None))
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    for row, (name, spec) in enumerate(zip(_POINTS, specs, strict=True)):
        workspace = pyhf.Workspace(spec)
        model = workspace.model()
        data = np.asarray(workspace.data(model))
        mine = _to_pyhf(model, dense[row], res["obs_theta"][row, 2])
        ours = -2.0 * float(model.logpdf(mine, data)[0])
        theirs = min(
            float(
                pyhf.infer.mle.fixed_poi_fit(
                    1.0, data, model, init_pars=init, return_fitted_val=True
                )[1]
            )
            for init in (None, mine.tolist())
        )
        assert ours <= theirs + VALUE_TOLERANCE, (name, ours, theirs)
        assert bool(res["converged"][row].all()), name
