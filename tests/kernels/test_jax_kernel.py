"""The JAX kernel against pyhf (the reference kernel and pyhf's published regression values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reference_values import REFERENCE

import pyhf_dask
from pyhf_dask.grid import signal_patch, simple_workspace
from pyhf_dask.kernels import FitOptions, reference
from pyhf_dask.kernels.jax_kernel import hypotest_chunk

SBOTTOM_OPTIONS = FitOptions(normsys_interpcode="code4", histosys_interpcode="code4p").to_dict()


# points compared with the reference kernel (a different parameter list included)
SUBSET = {
    "RegionA": ["sbottom_700_680_550", "sbottom_1000_205_60", "sbottom_1100_630_500"],
    "RegionB": ["sbottom_900_250_60", "sbottom_1200_630_500"],
    "RegionC": ["sbottom_1000_205_60", "sbottom_1400_1150_60"],
}


def _existing(grid: Any, names: list[str]) -> list[str]:
    return [n for n in names if n in grid.names]


@pytest.fixture(scope="module")
def sbottom_results(sbottom_dir: Path) -> dict[str, Any]:
    """JAX results of every point of the reference table and the subset, per region."""
    out: dict[str, Any] = {}
    for region in ("RegionA", "RegionB", "RegionC"):
        grid = pyhf_dask.SignalGrid.from_path(sbottom_dir, region=region)
        names = [n for (r, n) in REFERENCE if r == region] + _existing(grid, SUBSET[region])
        index = [grid.names.index(n) for n in names]
        patches = [grid.patches[i] for i in index]
        out[region] = (
            grid,
            names,
            patches,
            hypotest_chunk(grid.workspace, patches, SBOTTOM_OPTIONS),
        )
    return out


def test_reference_values(sbottom_results: dict[str, Any]) -> None:
    for (region, name), (obs, exp) in REFERENCE.items():
        _, names, _, res = sbottom_results[region]
        i = names.index(name)
        assert res["status"][i] == "converged", res["message"][i]
        np.testing.assert_allclose(res["CLs_obs"][i, 0], obs, rtol=1e-4)
        np.testing.assert_allclose(res["CLs_exp"][i, 0], exp, rtol=1e-4)


def test_sbottom_subset_matches_reference_kernel(sbottom_results: dict[str, Any]) -> None:
    checked = 0
    for region, (grid, names, patches, res) in sbottom_results.items():
        sub = [names.index(n) for n in _existing(grid, SUBSET[region])]
        ref = reference.hypotest_chunk(grid.workspace, [patches[i] for i in sub], SBOTTOM_OPTIONS)
        for row, i in enumerate(sub):
            assert res["status"][i] == "converged", res["message"][i]
            if ref["status"][row] != "converged":
                continue  # pyhf's own fit is unreliable here; nothing to compare with
            assert abs(res["CLs_obs"][i, 0] - ref["CLs_obs"][row, 0]) <= 2e-4, names[i]
            assert np.abs(res["CLs_exp"][i, 0] - ref["CLs_exp"][row, 0]).max() <= 2e-4
            checked += 1
    assert checked >= 5


def test_structures_are_split(sbottom_results: dict[str, Any]) -> None:
    grid, _names, patches, res = sbottom_results["RegionA"]
    from pyhf_dask.kernels.jax_model import apply_patch, structure_key

    keys = {structure_key(apply_patch(grid.workspace, p), SBOTTOM_OPTIONS) for p in patches}
    assert len(keys) == 2  # sbottom_700_680_550 has its own parameter list
    assert (res["status"] == "converged").all()
    assert (res["fit_time"] > 0).all()


@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
def test_seed_model_matches_pyhf(test_stat: str) -> None:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    patches = [signal_patch([12.0 * s, 11.0 * s]) for s in (0.3, 0.7, 1.0, 2.0)]
    options = FitOptions(poi_values=(0.5, 1.0, 1.5, 3.0), test_stat=test_stat).to_dict()
    ours = hypotest_chunk(ws, patches, options)
    ref = reference.hypotest_chunk(ws, patches, options)
    assert (ours["status"] == "converged").all(), ours["message"]
    assert ours["CLs_obs"].shape == (4, 4)
    assert ours["CLs_exp"].shape == (4, 4, 5)
    np.testing.assert_allclose(ours["CLs_obs"], ref["CLs_obs"], atol=2e-4)
    np.testing.assert_allclose(ours["CLs_exp"], ref["CLs_exp"], atol=2e-4)


def test_seed_model_matches_pyhf_docstring() -> None:
    # pyhf's AsymptoticCalculator.expected_pvalues docstring, qtilde at mu = 1
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    out = hypotest_chunk(ws, [signal_patch([12.0, 11.0])], FitOptions().to_dict())
    np.testing.assert_allclose(
        out["CLs_exp"][0, 0],
        [0.00260626, 0.01382005, 0.06445321, 0.23525644, 0.57303621],
        rtol=1e-4,  # pyhf's own SLSQP fits stop slightly off the minimum
    )


def test_q0_runs_in_the_jax_kernel() -> None:
    # q0 used to fall back to the reference kernel; now the JAX kernel fits it itself
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    patches = [signal_patch([12.0, 11.0]), signal_patch([6.0, 5.0])]
    options = FitOptions(poi_values=(0.0,), test_stat="q0").to_dict()
    out = hypotest_chunk(ws, patches, options)
    ref = reference.hypotest_chunk(ws, patches, {**options, "scipy_tolerance": 1e-12})
    assert out["status"].tolist() == ["converged", "converged"], out["message"]
    assert not any("fallback" in str(m) for m in out["message"])
    # the kernels return p0 in the CLs fields; the scan renames them p0_obs, p0_exp
    np.testing.assert_allclose(out["CLs_obs"], ref["CLs_obs"], rtol=1e-5)
    np.testing.assert_allclose(out["CLs_exp"], ref["CLs_exp"], rtol=1e-5)


def test_unsupported_modifier_falls_back() -> None:
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], observed=[51, 48])
    weird = [
        {
            "op": "add",
            "path": "/channels/0/samples/0/modifiers/-",
            "value": {"name": "x", "type": "mystery", "data": None},
        }
    ]
    out = hypotest_chunk(ws, [weird, signal_patch([6.0, 5.0])], FitOptions().to_dict())
    assert out["status"][0] == "failed"  # pyhf cannot build it either
    assert "mystery" in out["message"][0]
    assert out["status"][1] == "converged"


def test_ewk_3l_keeps_going(ewk3l_dir: Path) -> None:
    grid = pyhf_dask.SignalGrid.from_path(ewk3l_dir)
    patches = list(grid.patches[:16])
    out = hypotest_chunk(grid.workspace, patches, FitOptions().to_dict())
    for status, message, cls in zip(
        out["status"], out["message"], out["CLs_obs"][:, 0], strict=True
    ):
        assert status in ("converged", "failed")
        assert message
        if status == "failed":
            assert np.isnan(cls)
            assert "iterations" in message


# ------------------------------------------------------------------ random workspaces
def _random_workspace(rng: np.random.Generator) -> tuple[dict[str, Any], list[Any]]:
    """Two channels using every modifier type, plus signal patches."""
    channels = []
    observations = []
    for c, nbins in enumerate((2, 3)):
        bkg1 = rng.uniform(20, 60, nbins)
        bkg2 = rng.uniform(5, 20, nbins)
        samples = [
            {
                "name": "signal",
                "data": list(rng.uniform(1, 8, nbins)),
                "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                    {
                        "name": f"stat_{c}",
                        "type": "staterror",
                        "data": list(rng.uniform(0.1, 1.0, nbins)),
                    },
                ],
            },
            {
                "name": "bkg1",
                "data": list(bkg1),
                "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {
                        "name": "norm_a",
                        "type": "normsys",
                        "data": {
                            "hi": float(rng.uniform(1.02, 1.2)),
                            "lo": float(rng.uniform(0.8, 0.98)),
                        },
                    },
                    {
                        "name": "shape_a",
                        "type": "histosys",
                        "data": {
                            "hi_data": list(bkg1 * rng.uniform(1.0, 1.15, nbins)),
                            "lo_data": list(bkg1 * rng.uniform(0.85, 1.0, nbins)),
                        },
                    },
                    {
                        "name": f"stat_{c}",
                        "type": "staterror",
                        "data": list(rng.uniform(0.5, 2.0, nbins)),
                    },
                    {
                        "name": f"sys_{c}",
                        "type": "shapesys",
                        "data": list(bkg1 * rng.uniform(0.02, 0.1, nbins)),
                    },
                ],
            },
            {
                "name": "bkg2",
                "data": list(bkg2),
                "modifiers": [
                    {"name": "k_bkg2", "type": "normfactor", "data": None},
                    {
                        "name": "norm_a",
                        "type": "normsys",
                        "data": {
                            "hi": float(rng.uniform(1.02, 1.2)),
                            "lo": float(rng.uniform(0.8, 0.98)),
                        },
                    },
                    {"name": "free_shape", "type": "shapefactor", "data": None},
                ]
                if c == 1
                else [
                    {"name": "k_bkg2", "type": "normfactor", "data": None},
                    {
                        "name": "shape_a",
                        "type": "histosys",
                        "data": {
                            "hi_data": list(bkg2 * rng.uniform(1.0, 1.2, nbins)),
                            "lo_data": list(bkg2 * rng.uniform(0.8, 1.0, nbins)),
                        },
                    },
                ],
            },
        ]
        expected = bkg1 + bkg2
        channels.append({"name": f"ch{c}", "samples": samples})
        observations.append({"name": f"ch{c}", "data": [float(x) for x in rng.poisson(expected)]})
    ws = {
        "channels": channels,
        "observations": observations,
        "measurements": [
            {
                "name": "meas",
                "config": {
                    "poi": "mu",
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.05],
                            "bounds": [[0.5, 1.5]],
                            "inits": [1.0],
                        },
                        {"name": "k_bkg2", "bounds": [[0.1, 5.0]]},
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }
    patches = [
        [
            {
                "op": "replace",
                "path": f"/channels/{c}/samples/0/data",
                "value": [float(x) for x in rng.uniform(0.5, 10, n)],
            }
            for c, n in ((0, 2), (1, 3))
        ]
        for _ in range(3)
    ]
    return ws, patches


@pytest.mark.parametrize(
    ("seed", "normcode", "histcode"),
    [
        (1, "code4", "code4p"),
        (2, "code1", "code0"),
        (3, "code4", "code2"),
        (4, "code1", "code4p"),
    ],
)
# SciPy's SLSQP warns when it clips a step to the bounds; under the suite's "error" filter
# that warning made every reference fit raise, so no point was compared at all
@pytest.mark.filterwarnings("ignore:Values in x were outside bounds:RuntimeWarning")
def test_random_workspaces_match_pyhf(seed: int, normcode: str, histcode: str) -> None:
    ws, patches = _random_workspace(np.random.default_rng(seed))
    options = FitOptions(
        poi_values=(0.5, 1.0), normsys_interpcode=normcode, histosys_interpcode=histcode
    ).to_dict()
    ours = hypotest_chunk(ws, patches, options)
    # pyhf at a tight SciPy tolerance: at its default, seed 1's free fit on the Asimov data
    # stops in a direction the data barely constrain (-2 log L changes by 3e-5 over the POI
    # range), so q_A = 0 and CLs = 1.0 at POI 0.5, where tolerance 1e-10 and 1e-12 give
    # 0.99577 and 0.99574 (ours: 0.99574)
    tight = {**options, "scipy_tolerance": 1e-12}
    ref = reference.hypotest_chunk(ws, patches, tight)
    assert (ours["status"] == "converged").all(), ours["message"]
    compared = 0
    for i in range(len(patches)):
        if ref["status"][i] != "converged":
            continue
        np.testing.assert_allclose(ours["CLs_obs"][i], ref["CLs_obs"][i], atol=2e-4)
        np.testing.assert_allclose(ours["CLs_exp"][i], ref["CLs_exp"][i], atol=2e-4)
        compared += 1
    # pyhf certifies all 3 points of every seed here: a comparison that skips them all
    # (or most) checks nothing
    assert compared == len(patches) == 3, ref["message"]


def test_exact_hessian_matches_autodiff() -> None:
    import jax
    import jax.numpy as jnp

    from pyhf_dask.kernels import jax_fit
    from pyhf_dask.kernels.jax_kernel import _configure_jax
    from pyhf_dask.kernels.jax_model import apply_patch, build_dense

    _configure_jax()
    static = {"static_argnums": (4,)}
    exact = jax.jit(jax_fit.value_grad_hess, **static)
    auto_grad = jax.jit(jax.grad(jax_fit.twice_nll), **static)
    auto_hess = jax.jit(jax.hessian(jax_fit.twice_nll), **static)
    ws, patches = _random_workspace(np.random.default_rng(7))
    for normcode, histcode in (("code4", "code4p"), ("code1", "code2"), ("code4", "code0")):
        options = {
            "normsys_interpcode": normcode,
            "histosys_interpcode": histcode,
            "measurement": None,
        }
        model = build_dense(apply_patch(ws, patches[0]), options)
        settings = jax_fit.FitSettings(normcode, histcode)
        arrays = jax_fit.prepare(
            {k: jnp.asarray(v) for k, v in {**model.arrays, **model.shared()}.items()}, settings
        )
        rng = np.random.default_rng(3)
        for _ in range(3):
            theta = np.clip(
                model.arrays["init"] + rng.uniform(-1.5, 1.5, model.arrays["init"].size),
                model.arrays["lower"] + 0.05,
                model.arrays["upper"],
            )
            args = (arrays["data"], arrays["aux"], arrays)
            _, grad, hess = exact(jnp.asarray(theta), *args, settings)
            auto_g = auto_grad(jnp.asarray(theta), *args, settings)
            auto_h = auto_hess(jnp.asarray(theta), *args, settings)
            np.testing.assert_allclose(grad, auto_g, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(hess, auto_h, rtol=1e-8, atol=1e-7)


def test_dense_model_agrees_with_pyhf() -> None:
    from pyhf_dask.kernels.jax_check import _CHECKED, structure_verdict
    from pyhf_dask.kernels.jax_model import apply_patch, build_dense

    ws, patches = _random_workspace(np.random.default_rng(11))
    options = {"normsys_interpcode": "code4", "histosys_interpcode": "code4p", "measurement": None}
    spec = apply_patch(ws, patches[1])
    model = build_dense(spec, options)
    _CHECKED.pop(model.key, None)
    assert structure_verdict(spec, options, model) is None
    assert json.dumps(ws)  # the workspace itself was not modified by the patching
    assert ws["channels"][0]["samples"][0]["data"] != spec["channels"][0]["samples"][0]["data"]
