"""Random models with every modifier type, at both interpolation conventions (property-based).

Each example draws a two-channel workspace with normsys, histosys (either direction, so
that kinks may be convex or concave), shapesys, staterror, lumi, shapefactor and
normfactor modifiers, some shared between channels, and observations around the
expectation. The JAX kernel must certify every point and agree with the careful
orthant-wise minimisation of :mod:`careful` to 2e-5 in every CLs value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from careful import careful_hypotest, kinked_parameters, make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyhf_dask.kernels import FitOptions

pytest.importorskip("jax")

TOLERANCE = 2e-5


def random_workspace(seed: int) -> dict[str, Any]:
    """A small workspace using every modifier type, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    channels, observations = [], []
    shared_hi, shared_lo = float(rng.uniform(1.02, 1.2)), float(rng.uniform(0.8, 0.98))
    for c, nbins in enumerate((2, 3)):
        bkg = rng.uniform(20, 80, nbins)
        other = rng.uniform(5, 20, nbins)
        up = bkg * rng.uniform(0.85, 1.2, nbins)  # either side of the nominal
        down = bkg * rng.uniform(0.85, 1.2, nbins)
        samples = [
            {
                "name": "signal",
                "data": list(rng.uniform(1, 10, nbins)),
                "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                ],
            },
            {
                "name": "bkg",
                "data": list(bkg),
                "modifiers": [
                    {"name": "lumi", "type": "lumi", "data": None},
                    {
                        "name": "norm_shared",
                        "type": "normsys",
                        "data": {"hi": shared_hi, "lo": shared_lo},
                    },
                    {
                        "name": f"shape_{c}",
                        "type": "histosys",
                        "data": {"hi_data": list(up), "lo_data": list(down)},
                    },
                    {"name": f"stat_{c}", "type": "staterror", "data": list(np.sqrt(bkg) * 0.3)},
                ],
            },
            {
                "name": "other",
                "data": list(other),
                "modifiers": [
                    {
                        "name": f"sys_{c}",
                        "type": "shapesys",
                        "data": list(other * rng.uniform(0.05, 0.2, nbins)),
                    },
                    {
                        "name": "norm_other",
                        "type": "normsys",
                        "data": {
                            "hi": float(rng.uniform(0.9, 1.15)),
                            "lo": float(rng.uniform(0.85, 1.1)),
                        },
                    },
                    {"name": "k_other", "type": "normfactor", "data": None}
                    if c == 0
                    else {"name": "sf", "type": "shapefactor", "data": None},
                ],
            },
        ]
        channels.append({"name": f"ch{c}", "samples": samples})
        expected = bkg + other
        observations.append(
            {"name": f"ch{c}", "data": list(np.round(rng.normal(expected, np.sqrt(expected))))}
        )
    return {
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
                            "sigmas": [0.02],
                            "bounds": [[0.8, 1.2]],
                            "inits": [1.0],
                        }
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def _check(seed: int, normcode: str, histcode: str) -> None:
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    spec = random_workspace(seed)
    options = FitOptions(normsys_interpcode=normcode, histosys_interpcode=histcode).to_dict()
    out = hypotest_chunk(spec, [[]], options)
    assert out["status"][0] == "converged", out["message"][0]
    model, data = make_model(spec, normcode, histcode)
    kinks = kinked_parameters(model, normcode, histcode)
    obs, exp = careful_hypotest(model, data, 1.0, kinks, n_random=1)
    assert abs(out["CLs_obs"][0, 0] - obs) <= TOLERANCE, (seed, out["CLs_obs"][0, 0], obs)
    np.testing.assert_allclose(out["CLs_exp"][0, 0], exp, atol=TOLERANCE, err_msg=str(seed))


@pytest.mark.slow
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**20))
def test_random_model_smooth_codes(seed: int) -> None:
    """code4/code4p (pyhf's defaults)."""
    _check(seed, "code4", "code4p")


@pytest.mark.slow
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**20))
def test_random_model_kinked_codes(seed: int) -> None:
    """code1/code0: the careful minimisation visits 2^k orthants (about 3 min per example)."""
    _check(seed, "code1", "code0")
