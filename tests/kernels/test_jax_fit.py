"""Certificates of the Newton fitter that do not need a whole model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

import jax

from pyhf_dask.kernels import jax_fit

jax.config.update("jax_enable_x64", True)


def test_decrement_is_the_gain_of_a_newton_step_on_a_quadratic() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 5))
    h = m @ m.T + 0.1 * np.eye(5)
    g = rng.normal(size=5)
    x_min = -np.linalg.solve(h, g)
    gain = 0.0 - (0.5 * x_min @ h @ x_min + g @ x_min)  # f(0) - f(x_min)
    free = np.ones(5, bool)
    assert float(jax_fit._certificate(h, g, free)[1]) == pytest.approx(gain, rel=1e-7)


def test_decrement_ignores_parameters_out_of_the_system() -> None:
    h = np.diag([2.0, 1e-12, 4.0])
    g = np.array([0.2, 5.0, 0.4])
    free = np.array([True, False, True])
    expected = 0.5 * (0.2**2 / 2.0 + 0.4**2 / 4.0)
    assert float(jax_fit._certificate(h, g, free)[1]) == pytest.approx(expected, rel=1e-7)


def test_flat_direction_has_no_finite_decrement() -> None:
    """A stall along a concave direction is never certified by the decrement."""
    h = np.diag([1.0, -1e-3])
    g = np.array([0.0, 1e-3])
    assert not bool(jax_fit._certificate(h, g, np.ones(2, bool))[0])
    assert not np.isfinite(float(jax_fit._certificate(h, g, np.ones(2, bool))[1]))


def test_large_gradient_on_a_steep_parameter_gains_nothing() -> None:
    """The 3L case: curvature ~1e12 (shapesys tau), gradient ~1: nothing left to gain."""
    h = np.diag([2e12, 1.0])
    g = np.array([1.0, 0.0])
    assert float(jax_fit._certificate(h, g, np.ones(2, bool))[1]) < jax_fit._STALL_GAIN
