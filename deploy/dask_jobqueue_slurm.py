"""Start a Dask cluster on Slurm with dask-jobqueue, then scan with ``--executor distributed``.

    pip install dask-jobqueue
    python deploy/dask_jobqueue_slurm.py      # prints the scheduler address and waits
    pyhf-dask scan ... --executor distributed --scheduler-address tcp://10.0.0.5:8786

Network: the scheduler listens on the cluster-internal interface (``ib0``) port 8786 for
workers and clients on the cluster; the dashboard on 127.0.0.1:8787 only (reach it with
``ssh -L 8787:127.0.0.1:8787 login-node``). Workers listen on the compute nodes'
internal interface for peer-to-peer transfers. Enable TLS (``security=``) if the
cluster network is shared with untrusted users.
"""

import time

from dask_jobqueue import SLURMCluster

if __name__ == "__main__":
    cluster = SLURMCluster(
        queue="gpu",
        account="YOUR_ACCOUNT",
        cores=4,
        processes=4,
        memory="32GB",
        walltime="02:00:00",
        interface="ib0",
        scheduler_options={"dashboard_address": "127.0.0.1:8787", "port": 8786},
        job_extra_directives=["--gres=gpu:4"],
        job_script_prologue=["module load cuda/12", "source ~/pyhf-dask-env/bin/activate"],
    )
    cluster.scale(jobs=2)
    print(cluster.scheduler_address, flush=True)
    try:
        while True:
            time.sleep(60)
    finally:
        cluster.close()
