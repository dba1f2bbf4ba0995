"""Parsl configuration for ``pyhf-dask scan --executor parsl --parsl-config parsl_slurm.py``.

Runs fit workers in Slurm jobs, one worker per GPU. Edit partition, account and the
environment in ``worker_init``.

Network: the interchange runs where ``pyhf-dask`` runs (a login node) and listens on the
cluster-internal interface (``ib0``) on a port in ``worker_port_range``; only the compute
nodes' worker pools connect to it. Keep that range closed to the outside; messages are
CurveZMQ-encrypted (``encrypted=True``). The client-side pipes use 127.0.0.1.
"""

from parsl.addresses import address_by_interface
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.providers import SlurmProvider

config = Config(
    executors=[
        HighThroughputExecutor(
            label="pyhf-dask-slurm",
            address=address_by_interface("ib0"),
            loopback_address="127.0.0.1",
            encrypted=True,
            worker_port_range=(54000, 55000),
            max_workers_per_node=4,
            available_accelerators=4,
            provider=SlurmProvider(
                partition="gpu",
                account="YOUR_ACCOUNT",
                nodes_per_block=1,
                init_blocks=0,
                min_blocks=0,
                max_blocks=4,
                walltime="02:00:00",
                scheduler_options="#SBATCH --gres=gpu:4",
                worker_init="module load cuda/12 && source ~/pyhf-dask-env/bin/activate",
                launcher=SrunLauncher(),
            ),
        )
    ],
    retries=0,  # pyhf_dask retries failed fit tasks itself
    run_dir="runinfo",
)
