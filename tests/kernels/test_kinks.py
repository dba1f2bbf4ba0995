"""Hand-made shapes of trouble, at kinked and smooth codes, against a careful minimisation.

Each workspace puts a minimum where a naive fitter goes wrong: on a kink, across a kink,
on a one-sided variation, or in one of two modes. The JAX kernel and the reference kernel
must agree with :func:`careful.careful_hypotest` (orthant-wise multi-start L-BFGS-B on
pyhf's own ``-2 logpdf``) to 2e-5 in every CLs value and report ``converged``; the
reference kernel must certify every value where plain pyhf is right, and every value it
certifies must be right.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from careful import careful_hypotest, kinked_parameters, make_model

from pyhf_dask.kernels import FitOptions, reference
from pyhf_dask.kernels.certify import kkt_residual

pytest.importorskip("jax")

CODES = [("code1", "code0"), ("code4", "code4p")]
TOLERANCE = 2e-5


def _sample(name: str, data: list[float], modifiers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "data": data, "modifiers": modifiers}


def _signal(data: list[float]) -> dict[str, Any]:
    return _sample("signal", data, [{"name": "mu", "type": "normfactor", "data": None}])


def _histosys(name: str, hi: list[float], lo: list[float]) -> dict[str, Any]:
    return {"name": name, "type": "histosys", "data": {"hi_data": hi, "lo_data": lo}}


def _normsys(name: str, hi: float, lo: float) -> dict[str, Any]:
    return {"name": name, "type": "normsys", "data": {"hi": hi, "lo": lo}}


def _workspace(channels: list[tuple[str, list[Any], list[float]]]) -> dict[str, Any]:
    return {
        "channels": [{"name": name, "samples": samples} for name, samples, _ in channels],
        "observations": [{"name": name, "data": obs} for name, _, obs in channels],
        "measurements": [
            {"name": "meas", "config": {"poi": "mu", "parameters": []}},
        ],
        "version": "1.0.0",
    }


def v_shaped() -> dict[str, Any]:
    """A histosys whose up and down variations both lie above the nominal, data below."""
    bkg = [50.0, 60.0]
    return _workspace(
        [
            (
                "sr",
                [
                    _signal([6.0, 4.0]),
                    _sample("bkg", bkg, [_histosys("v", [56.0, 67.0], [54.0, 64.0])]),
                ],
                [44.0, 52.0],
            )
        ]
    )


def shared_normsys() -> dict[str, Any]:
    """One normsys in two channels, opposite asymmetries and opposite pulls of the data."""
    return _workspace(
        [
            (
                "a",
                [_signal([3.0]), _sample("bkg", [100.0], [_normsys("n", 1.15, 0.97)])],
                [114.0],
            ),
            (
                "b",
                [_signal([2.0]), _sample("bkg", [80.0], [_normsys("n", 1.03, 0.82)])],
                [70.0],
            ),
        ]
    )


def one_sided() -> dict[str, Any]:
    """A histosys whose down variation equals the nominal; the data pull downwards."""
    bkg = [40.0, 30.0]
    return _workspace(
        [
            (
                "sr",
                [
                    _signal([5.0, 3.0]),
                    _sample("bkg", bkg, [_histosys("h", [46.0, 34.0], list(bkg))]),
                ],
                [35.0, 27.0],
            )
        ]
    )


def bimodal() -> dict[str, Any]:
    """A histosys whose up and down variations both lie below the nominal: two modes."""
    return _workspace(
        [
            (
                "sr",
                [
                    _signal([8.0, 6.0]),
                    _sample(
                        "bkg",
                        [100.0, 100.0],
                        [
                            _histosys("b", [86.0, 91.0], [89.0, 85.0]),
                            _normsys("n", 1.05, 0.96),
                        ],
                    ),
                ],
                [84.0, 83.0],
            )
        ]
    )


SHAPES = {
    "v_shaped": v_shaped,
    "shared_normsys": shared_normsys,
    "one_sided": one_sided,
    "bimodal": bimodal,
}


@pytest.mark.parametrize("codes", CODES, ids="/".join)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shape_matches_careful_minimisation(shape: str, codes: tuple[str, str]) -> None:
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    spec = SHAPES[shape]()
    normcode, histcode = codes
    poi_values = (0.0, 1.0, 2.5)
    options = FitOptions(
        poi_values=poi_values, normsys_interpcode=normcode, histosys_interpcode=histcode
    ).to_dict()
    model, data = make_model(spec, normcode, histcode)
    kinks = kinked_parameters(model, normcode, histcode)
    jax_out = hypotest_chunk(spec, [[]], options)
    tight = {**options, "scipy_tolerance": 1e-10}
    ref_out = reference.hypotest_chunk(spec, [[]], tight)
    assert jax_out["status"][0] == "converged", jax_out["message"][0]
    for j, mu in enumerate(poi_values):
        obs, exp = careful_hypotest(model, data, mu, kinks)
        assert abs(jax_out["CLs_obs"][0, j] - obs) <= TOLERANCE, (mu, jax_out["CLs_obs"][0], obs)
        np.testing.assert_allclose(jax_out["CLs_exp"][0, j], exp, atol=TOLERANCE)
        # the reference kernel: certified values are right, and pyhf's right answers certified
        pyhf_obs, pyhf_exp = _plain_pyhf(model, data, mu)
        pyhf_right = abs(pyhf_obs - obs) <= TOLERANCE and np.allclose(
            pyhf_exp, exp, atol=TOLERANCE, rtol=0
        )
        certified = bool(np.isfinite(ref_out["CLs_obs"][0, j]))
        # at mu = 0 CLs is 1 from fits in any mode: a right value there does not make the
        # fits right, and the reference kernel may refuse fits that sit in a worse mode
        assert certified or not pyhf_right or mu == 0.0, (mu, ref_out["message"][0])
        if certified:
            assert abs(ref_out["CLs_obs"][0, j] - obs) <= TOLERANCE, (mu, ref_out["message"][0])
            np.testing.assert_allclose(ref_out["CLs_exp"][0, j], exp, atol=TOLERANCE)


def _plain_pyhf(model: Any, data: np.ndarray, mu: float) -> tuple[float, np.ndarray]:
    """``pyhf.infer.hypotest`` as a user calls it (SciPy tolerance 1e-10)."""
    import pyhf

    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            obs, exp = pyhf.infer.hypotest(
                mu, data, model, test_stat="qtilde", return_expected_set=True
            )
    finally:
        pyhf.set_backend("numpy")
    return float(obs), np.array([float(e) for e in exp])


def test_kinked_minimum_is_held_and_reported() -> None:
    """At code1/code0 the one-sided histosys sits exactly on its kink; the message says so."""
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    options = FitOptions(normsys_interpcode="code1", histosys_interpcode="code0").to_dict()
    out = hypotest_chunk(one_sided(), [[]], options)
    assert out["status"][0] == "converged"
    assert "held at a kink" in out["message"][0]


def test_kkt_residual_is_one_sided_at_kinks() -> None:
    """A kink whose one-sided slopes bracket 0 passes; a smooth slope of 1 does not."""
    bounds = [(-5.0, 5.0), (0.0, 5.0)]

    def f(x: np.ndarray) -> float:
        return float(np.where(x[0] > 0, 0.7 * x[0], -0.8 * x[0]) + (x[1] - 0.5) ** 2)

    assert kkt_residual(f, np.array([0.0, 0.5]), bounds, []) < 1e-5
    assert abs(kkt_residual(f, np.array([0.3, 0.5]), bounds, []) - 0.7) < 1e-5
    # a bound pushes back: a gradient into the bound is no violation
    assert kkt_residual(lambda x: float(x[1]), np.array([0.0, 0.0]), bounds, []) < 1e-9
    # a fixed parameter is not judged
    assert kkt_residual(f, np.array([0.3, 0.5]), bounds, [0]) < 1e-5


def test_sbottom_1300_205_60_at_code1_code0(sbottom_dir: Any) -> None:
    """The issue's real kinked case: 20 of 55 parameters end at a kink; CLs_obs 0.237102."""
    import pyhf_dask
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    grid = pyhf_dask.SignalGrid.from_path(sbottom_dir, region="RegionA")
    patch = grid.patches[grid.names.index("sbottom_1300_205_60")]
    options = FitOptions(normsys_interpcode="code1", histosys_interpcode="code0").to_dict()
    out = hypotest_chunk(grid.workspace, [patch], options)
    assert out["status"][0] == "converged", out["message"][0]
    assert "held at a kink" in out["message"][0]
    assert float(out["CLs_obs"][0, 0]) == pytest.approx(0.237102, abs=2e-5)
