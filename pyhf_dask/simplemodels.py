"""Simple models for examples, tests and function-defined grids.

``simple_workspace`` is the workspace of ``pyhf.simplemodels.uncorrelated_background`` (the
model of pyhf's README and of the 2021 funcX demo) with observed data; ``signal_patch``
makes the patch that sets a sample's yields, the usual return value of a grid's signal
function (a function may return the yields themselves: :mod:`pyhf_dask.signals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "Patch",
    "scaled_signal",
    "scaled_yields",
    "signal_patch",
    "simple_workspace",
]

Patch = list[dict[str, Any]]


def simple_workspace(
    signal: Sequence[float],
    bkg: Sequence[float],
    bkg_uncertainty: Sequence[float],
    observed: Sequence[float],
) -> dict[str, Any]:
    """Workspace of ``pyhf.simplemodels.uncorrelated_background`` with observed data.

    Example:
        >>> ws = simple_workspace([12.0, 11.0], [50.0, 52.0], [3.0, 7.0], [51.0, 48.0])
        >>> ws["measurements"][0]["config"]["poi"]
        'mu'
    """
    import pyhf

    model = pyhf.simplemodels.uncorrelated_background(
        signal=list(signal), bkg=list(bkg), bkg_uncertainty=list(bkg_uncertainty)
    )
    return {
        "channels": model.spec["channels"],
        "observations": [{"name": "singlechannel", "data": [float(x) for x in observed]}],
        "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def signal_patch(yields: Sequence[float], *, channel: int = 0, sample: int = 0) -> Patch:
    """A patch that sets the yields of one sample (by default the first, the signal).

    Example:
        >>> signal_patch([1.0, 2.0])
        [{'op': 'replace', 'path': '/channels/0/samples/0/data', 'value': [1.0, 2.0]}]
    """
    return [
        {
            "op": "replace",
            "path": f"/channels/{channel}/samples/{sample}/data",
            "value": [float(y) for y in yields],
        }
    ]


def scaled_signal(scale: float) -> Patch:
    """Example signal function: the seed model's signal ``[12, 11]`` times ``scale``."""
    return signal_patch([12.0 * scale, 11.0 * scale])


def scaled_yields(scale: np.ndarray) -> np.ndarray:
    """Vectorized :func:`scaled_signal`: the yields ``(n, 2)`` of ``n`` scales at once.

    For ``SignalGrid.from_function(ws, scaled_yields, sample="signal", vectorized=True,
    scale=[...])``.

    Example:
        >>> scaled_yields(np.array([1.0, 2.0])).tolist()
        [[12.0, 11.0], [24.0, 22.0]]
    """
    return np.multiply.outer(np.asarray(scale, dtype=np.float64), [12.0, 11.0])
