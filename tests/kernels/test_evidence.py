"""What the kernel says about fits it cannot certify."""

from __future__ import annotations

import numpy as np
import pytest

from pyhf_dask.kernels import FitOptions
from pyhf_dask.kernels.evidence import advice, parameter_labels, uncertified_reason

pytest.importorskip("jax")


def test_uncertified_jax_fits_say_why_and_go_to_the_second_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a KKT tolerance no fit can meet (and no stall accepted), every point names its
    first uncertified fit with the evidence, and the reference kernel (second path) answers."""
    from pyhf_dask.grid import signal_patch, simple_workspace
    from pyhf_dask.kernels import jax_fit, jax_nll
    from pyhf_dask.kernels.jax_kernel import hypotest_chunk

    # a new tolerance is a new compiled fit, which reads the stall gain when traced
    monkeypatch.setattr(jax_nll.FitSettings.__init__, "__defaults__", (1e-30,))
    monkeypatch.setattr(jax_fit, "_STALL_GAIN", -1.0)
    ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
    out = hypotest_chunk(ws, [signal_patch([12.0, 11.0])], FitOptions().to_dict())
    message = str(out["message"][0])
    assert "not certified; first: POI=0 on data (Asimov)" in message
    assert "> 1e-30" in message
    assert out["status"][0] == "fallback", message
    assert np.isfinite(out["CLs_obs"][0]).all()


def test_reason_names_parameters_at_a_bound() -> None:
    labels = parameter_labels(["mu", "gamma"], [1, 2])
    why = uncertified_reason(
        np.array([0.0, 1e-10, 1.0]),
        np.array([0.0, 1e-10, 1e-10]),
        np.array([10.0, 10.0, 10.0]),
        np.array([True, False, False]),
        value=np.inf,
        pgrad=np.inf,
        psd=True,
        gtol=1e-4,
        labels=labels,
    )
    assert why.startswith("-2lnL is not finite")
    assert why.endswith("at a bound: gamma[0]")  # mu is fixed: not named


def test_advice_follows_the_reasons() -> None:
    tips = advice(["flat or concave direction; KKT residual 3 > 0.0001"], kinked_codes=True)
    assert any("flat direction" in t for t in tips)
    assert any("code4/code4p" in t for t in tips)
    assert advice(["JAX: 1 of 5 fits not certified"], kinked_codes=False) == [
        "re-run the failed points with --kernel pyhf (the reference kernel)"
    ]
    assert (
        "leave it out"
        in advice(["POI 'mu' is not a parameter of the model"], kinked_codes=False)[0]
    )
    assert "message" in advice([], kinked_codes=False)[0]


def test_cli_prints_what_to_try_for_failed_points() -> None:
    import xarray as xr

    from pyhf_dask.cli.report import what_to_try

    ds = xr.Dataset(
        {"message": ("point", ["fine", "KKT residual 2 > 0.0001; at a bound: mu"])},
        attrs={"normsys_interpcode": "code1", "histosys_interpcode": "code0"},
    )
    tips = what_to_try(ds, np.array([False, True]))
    assert any("bound" in t for t in tips) and any("code4/code4p" in t for t in tips)
