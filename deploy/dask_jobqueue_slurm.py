"""Start a Dask cluster on Slurm with dask-jobqueue, then scan with ``--executor distributed``.

    pip install dask-jobqueue
    python deploy/dask_jobqueue_slurm.py      # prints the scheduler address and waits
    pyhf-dask scan ... --executor distributed --scheduler-address tcp://10.0.0.5:8786

Network: the scheduler listens on the cluster-internal interface (``ib0``) port 8786 for
workers and clients on the cluster; the dashboard on 127.0.0.1:8787 only (reach it with
``ssh -L 8787:127.0.0.1:8787 login-node``). Workers listen on the compute nodes'
internal interface for peer-to-peer transfers. Enable TLS (``security=``) if the
cluster network is shared with untrusted users.

GPUs: one Dask worker per GPU. Each Slurm job holds one GPU (``--gpus=1``) and runs one
worker process (``processes=1``), so Slurm's ``CUDA_VISIBLE_DEVICES`` pins the worker to
its GPU; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` keeps JAX from taking 75% of the GPU up
front. Several worker processes in one job would all use the job's first GPU and each
preallocate 75% of it (``CUDA_ERROR_OUT_OF_MEMORY`` in all but one). ``scale(jobs=N)``
gives N GPUs. On one machine, dask-cuda's ``LocalCUDACluster`` does the same
(``deploy/gpu/dask_cuda_local.py``).
"""

import time

from dask_jobqueue import SLURMCluster

if __name__ == "__main__":
    cluster = SLURMCluster(
        queue="gpu",
        account="YOUR_ACCOUNT",
        cores=4,  # host side of the worker: patch reading, model building
        processes=1,  # one JAX process per GPU
        memory="32GB",
        walltime="02:00:00",
        interface="ib0",
        scheduler_options={"dashboard_address": "127.0.0.1:8787", "port": 8786},
        job_extra_directives=["--gpus=1"],
        job_script_prologue=[
            "module load cuda/12",
            "source ~/pyhf-dask-env/bin/activate",
            "export XLA_PYTHON_CLIENT_PREALLOCATE=false",
        ],
    )
    cluster.scale(jobs=8)  # 8 GPUs
    print(cluster.scheduler_address, flush=True)
    try:
        while True:
            time.sleep(60)
    finally:
        cluster.close()
