"""A hand-written ``dask.delayed`` graph of ``pyhf.infer.hypotest`` sent to an endpoint.

The adapter (``pyhf_dask.executors.wrap``) takes any ``concurrent.futures.Executor``: a
Globus Compute ``Executor`` for a real endpoint, or, as here, the in-process endpoint
engine (``LocalEndpointExecutor``: tasks are packed exactly as the Globus Compute SDK packs
them and run on the endpoint's own engine; no web service). The user's tasks are sent in
batches (``batch_size`` calls per submission, one round trip each), with the adapter's
retries and timeouts; Dask's plumbing (``sum`` below) stays in this process.

Which tasks go: with ``remote="all"`` (the default) every task calling a function from
outside Dask, NumPy and the standard library; with ``remote="marked"`` only tasks made
``with dask.annotate(pyhf_dask_remote=True):`` or with ``pyhf_dask.remote(func)``
(a mark that survives Dask's task fusion, which drops annotations).

Run it (a few seconds; needs ``pip install 'pyhf_dask[globus]'``)::

    python examples/delayed_to_endpoint.py
"""

from __future__ import annotations

import logging

import dask
import numpy as np
import pyhf
from dask.delayed import Delayed

from pyhf_dask.executors import wrap
from pyhf_dask.executors.engine import LocalEndpointExecutor

__all__ = ["build", "main"]

log = logging.getLogger(__name__)


def build(mu_values: list[float]) -> tuple[list[Delayed], Delayed]:
    """One delayed ``hypotest`` per POI value, and the number of excluded values."""
    model = pyhf.simplemodels.uncorrelated_background(
        signal=[12.0, 11.0], bkg=[50.0, 52.0], bkg_uncertainty=[3.0, 7.0]
    )
    data = [51.0, 48.0, *model.config.auxdata]
    cls = [
        dask.delayed(pyhf.infer.hypotest)(mu, data, model, test_stat="qtilde") for mu in mu_values
    ]
    excluded = dask.delayed(sum)([dask.delayed(float)(c) < 0.05 for c in cls])
    return cls, excluded


def main() -> dict[str, object]:
    """Compute the graph on the in-process endpoint and in this thread; compare."""
    mu_values = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    cls, excluded = build(mu_values)
    with LocalEndpointExecutor("process", workers=2) as endpoint:
        adapter = wrap(endpoint, batch_size=3)
        remote = dask.compute(*cls, excluded, scheduler=adapter)
    local = dask.compute(*cls, excluded, scheduler="synchronous")
    for mu, value in zip(mu_values, remote, strict=False):
        print(f"mu = {mu:3.1f}: CLs = {float(value):.4f}")
    print(f"excluded POI values: {remote[-1]}; {adapter.stats}")
    return {
        "same": all(np.array_equal(a, b) for a, b in zip(remote, local, strict=True)),
        "stats": dict(adapter.stats),
    }


if __name__ == "__main__":
    print(main())
