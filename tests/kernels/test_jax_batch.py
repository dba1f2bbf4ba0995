"""Padding to bucket shapes and the fixed-size fit scheduler of the JAX kernel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_jax_kernel import _random_workspace

from pyhf_dask.kernels.jax_batch import (
    MAX_ITER,
    ROUND,
    bucket,
    dims_of,
    pad_model,
    padded_dims,
    run_fits,
    run_rows,
)
from pyhf_dask.kernels.jax_model import apply_patch, build_dense

OPTIONS = {"normsys_interpcode": "code4", "histosys_interpcode": "code4p", "measurement": None}


def test_bucket_is_monotonic_and_covers() -> None:
    sizes = [bucket(n) for n in range(1, 300)]
    assert all(b >= n for n, b in zip(range(1, 300), sizes, strict=True))
    assert sizes == sorted(sizes)
    assert len(set(sizes)) < 32  # few distinct shapes
    assert all((b - n) / n <= 0.125 for n, b in zip(range(64, 300), sizes[63:], strict=True))


@pytest.mark.parametrize(("normcode", "histcode"), [("code4", "code4p"), ("code1", "code2")])
def test_padding_keeps_likelihood_gradient_and_hessian(normcode: str, histcode: str) -> None:
    import jax
    import jax.numpy as jnp

    from pyhf_dask.kernels import jax_fit
    from pyhf_dask.kernels.jax_kernel import _configure_jax

    _configure_jax()
    options = {**OPTIONS, "normsys_interpcode": normcode, "histosys_interpcode": histcode}
    ws, patches = _random_workspace(np.random.default_rng(5))
    model = build_dense(apply_patch(ws, patches[0]), options)
    settings = jax_fit.FitSettings(normcode, histcode)
    raw = dims_of(model)
    tight = padded_dims([model])
    wide = tuple(d + 5 for d in tight)  # every dimension padded, not only to a bucket
    rng = np.random.default_rng(9)
    n_par = raw[0]
    theta = np.clip(
        model.arrays["init"] + rng.uniform(-1.0, 1.0, n_par),
        model.arrays["lower"] + 0.05,
        model.arrays["upper"],
    )
    vgh = jax.jit(jax_fit.value_grad_hess, static_argnames=("s",))
    results = []
    for dims in (raw, wide):
        arrays = {k: jnp.asarray(v) for k, v in pad_model(model, dims).items()}  # type: ignore[arg-type]
        a = jax_fit.prepare(arrays, settings)
        full = np.zeros(dims[0])
        full[:n_par] = theta
        value, grad, hess = vgh(jnp.asarray(full), a["data"], a["aux"], a, settings)
        assert np.all(np.asarray(grad)[n_par:] == 0.0)
        results.append((float(value), np.asarray(grad)[:n_par], np.asarray(hess)[:n_par, :n_par]))
    for value, grad, hess in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-12)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hess, results[0][2], rtol=1e-10, atol=1e-10)


def _fake_fit(needed: np.ndarray) -> Any:
    """A 'fit' that converges after ``needed[row]`` iterations (row id in ``init[:, 0]``)."""
    calls: list[int] = []

    def fit(
        model: dict[str, np.ndarray],
        init: np.ndarray,
        lam: np.ndarray,
        fixed: np.ndarray,
        data: np.ndarray,
        aux: np.ndarray,
        flip: np.ndarray,
        max_iter: int,
    ) -> dict[str, np.ndarray]:
        assert not flip.any()
        calls.append(len(init))
        row = init[:, 0].astype(int)
        done = init[:, 1].astype(int)
        left = needed[row] - done
        steps = np.minimum(left, max_iter)
        theta = init.copy()
        theta[:, 1] += steps
        return {
            "theta": theta,
            "lam": lam,
            "value": model["x"][:, 0] + 0.0,
            "pgrad": np.zeros(len(init)),
            "converged": steps == left,
            "n_iter": steps,
        }

    fit.calls = calls  # type: ignore[attr-defined]
    return fit


def test_run_fits_refills_and_caps() -> None:
    rng = np.random.default_rng(0)
    n = 150
    needed = rng.integers(0, 60, n)
    needed[[3, 77]] = [MAX_ITER + 50, MAX_ITER]
    fit = _fake_fit(needed)
    init = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(float)
    models = {"x": np.arange(10.0)[:, None]}
    which = np.arange(n) % 10
    empty = np.zeros((n, 1))
    out = run_fits(fit, models, which, init, init > 9, empty, empty, 32)
    assert set(fit.calls) == {32}  # one batch size only
    expect = np.minimum(needed, MAX_ITER)
    np.testing.assert_array_equal(out["n_iter"], expect)
    np.testing.assert_array_equal(out["converged"], needed <= MAX_ITER)
    np.testing.assert_array_equal(out["value"], which)  # each row saw its own point
    # refilling keeps the batches full: about as many calls as the work needs
    work = np.ceil(np.maximum(expect, 1) / ROUND).sum()
    assert len(fit.calls) <= work / 32 + 2 * MAX_ITER / ROUND


def test_run_rows_pads_the_last_batch() -> None:
    seen = []

    def func(model: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(len(rows))
        return {"y": model["x"][:, 0] + rows}

    out = run_rows(func, {"x": np.arange(10.0)[:, None]}, np.arange(10.0), 4)
    assert seen == [4, 4, 4]
    np.testing.assert_array_equal(out["y"], 2 * np.arange(10.0))
