"""A Dask cluster of one worker per GPU on this machine (dask-cuda), then a scan on it.

    pip install "pyhf_dask[cuda]"      # jax[cuda12], distributed, dask-cuda
    python deploy/gpu/dask_cuda_local.py sbottom.tar.gz RegionA

dask-cuda's ``LocalCUDACluster`` starts one worker process per visible GPU, each with
``CUDA_VISIBLE_DEVICES`` rotated so that its GPU comes first (JAX uses that one);
:func:`pyhf_dask.gpu.local_cuda_cluster` adds ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so
that a worker's JAX never takes 75% of its GPU up front. Network: the scheduler and the
workers listen on 127.0.0.1 only (``LocalCUDACluster`` default for a local cluster).
"""

import sys

from distributed import Client

import pyhf_dask
from pyhf_dask.executors import wrap
from pyhf_dask.gpu import local_cuda_cluster

if __name__ == "__main__":
    archive, region = sys.argv[1:3]
    grid = pyhf_dask.SignalGrid.from_path(archive, region=region)
    cluster = local_cuda_cluster(host="127.0.0.1", dashboard_address="127.0.0.1:8787")
    with cluster, Client(cluster) as client:
        lazy = pyhf_dask.scan(grid, kernel="jax", device="gpu")
        ds = lazy.compute(scheduler=wrap(client.get_executor()))
    ds.to_netcdf(f"{region}.nc")
    print(ds.CLs_obs.values)
