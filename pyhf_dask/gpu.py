"""GPUs for the JAX kernel's workers: which are visible, and each worker's environment.

One JAX process per GPU is the rule: by default JAX preallocates 75% of a GPU's memory
in every process that uses it, so a pool of one worker per CPU core on one GPU fails
with ``CUDA_ERROR_OUT_OF_MEMORY`` in all but the first workers. The local executor with
``device="gpu"`` therefore starts one worker per visible GPU, pins each to its GPU with
``CUDA_VISIBLE_DEVICES`` and turns preallocation off (``XLA_PYTHON_CLIENT_PREALLOCATE=
false``; a ``XLA_PYTHON_CLIENT_PREALLOCATE`` or ``XLA_PYTHON_CLIENT_MEM_FRACTION`` set by
the user is kept). Nothing here imports JAX or initialises CUDA: the parent process of a
scan never holds GPU memory.

For ``dask.distributed``, :func:`local_cuda_cluster` starts dask-cuda's
``LocalCUDACluster`` (one worker per GPU, the ``cuda`` extra) with the same memory
setting. :func:`require_gpus` is the check of the executors that fit in this machine's
processes (Dask's threaded and synchronous schedulers).

Example:
    >>> envs = worker_environments(["0", "1"], environ={})
    >>> [e["CUDA_VISIBLE_DEVICES"] for e in envs], envs[0]["XLA_PYTHON_CLIENT_PREALLOCATE"]
    (['0', '1'], 'false')
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyhf_dask.exceptions import InvalidOption

__all__ = [
    "AUTOTUNE_OFF",
    "MEMORY_VARIABLES",
    "jax_settings",
    "local_cuda_cluster",
    "no_gpu_message",
    "physical_gpus",
    "require_gpus",
    "visible_gpus",
    "worker_environments",
]

log = logging.getLogger(__name__)

#: JAX's GPU memory settings; one set by the user is passed on unchanged.
MEMORY_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")
#: Added to a GPU worker's ``XLA_FLAGS`` unless it sets a level (:func:`jax_settings`).
AUTOTUNE_OFF = "--xla_gpu_autotune_level=0"

GpuDiscovery = Callable[[], list[str]]


def physical_gpus() -> list[str]:
    """Indices of the NVIDIA GPUs of this machine, from the driver (no CUDA context).

    ``nvidia-smi`` when it is on ``PATH``, else the driver's ``/proc`` entries, else the
    ``/dev/nvidiaN`` device files; an empty list when none is found.
    """
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("nvidia-smi failed: %s", exc)
        else:
            if done.returncode == 0:
                return [line.strip() for line in done.stdout.splitlines() if line.strip()]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i, _ in enumerate(sorted(proc.iterdir()))]
    devices = [p.name for p in Path("/dev").glob("nvidia[0-9]*")]
    return sorted((d.removeprefix("nvidia") for d in devices), key=int)


def visible_gpus(
    environ: Mapping[str, str] | None = None, physical: GpuDiscovery | None = None
) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` (as CUDA reads it) or all.

    CUDA reads ``CUDA_VISIBLE_DEVICES`` up to its first invalid entry (``-1`` hides every
    GPU); entries are indices, ``GPU-``/``MIG-`` UUIDs, or UUID prefixes, kept as given.

    Example:
        >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "2,0"}, lambda: ["0", "1", "2"])
        ['2', '0']
        >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, lambda: ["0"])
        []
    """
    env = os.environ if environ is None else environ
    found = (physical or physical_gpus)()
    if not found:
        return []
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is None:
        return list(found)
    out: list[str] = []
    for entry in (e.strip() for e in given.split(",")):
        if re.fullmatch(r"\d+", entry):
            if int(entry) >= len(found):
                break
        elif not re.match(r"(GPU|MIG)-", entry):
            break
        if entry in out:
            break
        out.append(entry)
    return out


def no_gpu_message(environ: Mapping[str, str] | None = None) -> str:
    """The one-line error for ``device="gpu"`` on a machine without a visible GPU."""
    env = os.environ if environ is None else environ
    where = env.get("CUDA_VISIBLE_DEVICES")
    hint = f" (CUDA_VISIBLE_DEVICES={where!r})" if where is not None else ""
    return (
        f"--device gpu: no GPU is visible on this machine{hint}; run on a GPU node, "
        "or use --device cpu"
    )


def require_gpus(physical: GpuDiscovery | None = None) -> list[str]:
    """The GPUs visible to this process, or the one-line error when there is none.

    Args:
        physical: GPU discovery (default :func:`physical_gpus`; tests inject one).

    Raises:
        InvalidOption: no GPU is visible (:func:`no_gpu_message`).

    Example:
        >>> require_gpus(list)  # no driver: no GPU  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pyhf_dask.exceptions.InvalidOption: --device gpu: no GPU is visible on this machine...
    """
    found = visible_gpus(physical=physical)
    if not found:
        raise InvalidOption(no_gpu_message())
    return found


def worker_environments(
    gpus: Sequence[str], workers: int | None = None, environ: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Environment variables of each GPU worker: its GPU and JAX's memory settings.

    Args:
        gpus: visible GPU ids (:func:`visible_gpus`).
        workers: worker processes (default: one per GPU); more than one per GPU are
            spread round-robin and share their GPU (preallocation off).
        environ: the parent's environment (default ``os.environ``): memory settings the
            user made are kept.

    Raises:
        InvalidOption: no GPU visible, or fewer than one worker asked for.
    """
    env = os.environ if environ is None else environ
    if not gpus:
        raise InvalidOption(no_gpu_message(env))
    n = len(gpus) if workers is None else int(workers)
    if n < 1:
        msg = f"at least one worker is needed, got {n}"
        raise InvalidOption(msg)
    memory = jax_settings(env)
    return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], **memory} for i in range(n)]


def jax_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """JAX's settings for a GPU worker: memory, and XLA's GPU autotuning off.

    Preallocation is off unless the user set a memory variable (:data:`MEMORY_VARIABLES`,
    kept as given). ``XLA_FLAGS`` gets ``--xla_gpu_autotune_level=0`` unless it already
    sets a level: autotuning times GEMM and fusion variants while compiling (5 of the 18 s
    of compilation of the 650 sbottom points on an H100) and the kernel's small batched
    matrices ran as fast without it (BENCHMARKS.md).

    Example:
        >>> jax_settings({"XLA_FLAGS": "--xla_dump_to=/tmp/d"})["XLA_FLAGS"]
        '--xla_dump_to=/tmp/d --xla_gpu_autotune_level=0'
        >>> jax_settings({"XLA_PYTHON_CLIENT_MEM_FRACTION": ".3"})["XLA_PYTHON_CLIENT_MEM_FRACTION"]
        '.3'
    """
    env = os.environ if environ is None else environ
    out = {k: env[k] for k in MEMORY_VARIABLES if k in env}
    if not out:
        out = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    flags = env.get("XLA_FLAGS", "")
    if "xla_gpu_autotune_level" not in flags:
        flags = f"{flags} {AUTOTUNE_OFF}".strip()
    out["XLA_FLAGS"] = flags
    return out


def local_cuda_cluster(workers: int | None = None, **kwargs: Any) -> Any:
    """dask-cuda's ``LocalCUDACluster``: one Dask worker per visible GPU (``cuda`` extra).

    ``workers`` picks how many GPUs to use: the first ``workers`` visible ones (in
    ``CUDA_VISIBLE_DEVICES`` order), one worker each; more workers than visible GPUs are
    refused (dask-cuda runs one worker per GPU; the ``local`` executor shares GPUs).
    Workers get ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless the user set a JAX memory
    variable; ``kwargs`` go to ``LocalCUDACluster`` (a ``CUDA_VISIBLE_DEVICES`` given
    there wins over ``workers``).

    dask-cuda replaces each worker's ``env`` with its own ``CUDA_VISIBLE_DEVICES``, so
    the memory setting (and any ``env`` given) also goes in ``distributed.nanny.environ``
    while the cluster starts its workers.

    Raises:
        MissingDependency: dask-cuda is not installed.
        InvalidOption: no GPU is visible, or ``workers`` is not between 1 and the number
            of visible GPUs.
    """
    import dask

    from pyhf_dask._optional import require

    dask_cuda = require("dask_cuda", "cuda")
    gpus = require_gpus()
    if workers is not None:
        if isinstance(workers, bool) or int(workers) < 1:
            msg = f"at least one worker is needed, got {workers}"
            raise InvalidOption(msg)
        if int(workers) > len(gpus):
            msg = (
                f"--workers {workers}: only {len(gpus)} GPU(s) are visible "
                f"({','.join(gpus)}); --executor distributed --device gpu runs one worker "
                "per GPU (--executor local shares GPUs between workers)"
            )
            raise InvalidOption(msg)
        gpus = gpus[: int(workers)]
    kwargs.setdefault("CUDA_VISIBLE_DEVICES", ",".join(gpus))
    env = jax_settings()
    kwargs["env"] = {**env, **kwargs.get("env", {})}
    environ = {**dask.config.get("distributed.nanny.environ", {}), **kwargs["env"]}
    log.info(
        "dask-cuda cluster: one worker per GPU %s, %s",
        kwargs["CUDA_VISIBLE_DEVICES"],
        ", ".join(f"{k}={v}" for k, v in env.items()),
    )
    with dask.config.set({"distributed.nanny.environ": environ}):
        return dask_cuda.LocalCUDACluster(**kwargs)
