"""Globus Compute (formerly funcX): fit tasks on a remote endpoint through the SDK ``Executor``.

Functions are serialized by reference, so the endpoint's Python environment must have the
same pyhf_dask and pyhf versions installed (checked at the start of every scan). One task
submission must stay under 10 MB and one result under 10 MiB: chunks are split to fit.

Example:
    >>> with open_globus("2a3f...-endpoint-uuid") as scheduler:  # doctest: +SKIP
    ...     ds.compute(scheduler=scheduler)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

from pyhf_dask.exceptions import InvalidOption, MissingDependency
from pyhf_dask.executors.adapter import ExecutorScheduler
from pyhf_dask.executors.engine import MAX_PAYLOAD, MAX_RESULT

__all__ = ["globus_executor", "is_globus_executor", "open_globus", "wrap"]

log = logging.getLogger(__name__)


def _executor_class() -> Any:
    """``globus_compute_sdk.Executor``, else the legacy ``funcx.FuncXExecutor``."""
    for module, name in (("globus_compute_sdk", "Executor"), ("funcx", "FuncXExecutor")):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    msg = "'globus_compute_sdk' is not installed; install it with: pip install 'pyhf_dask[globus]'"
    raise MissingDependency(msg)


def is_globus_executor(executor: Any) -> bool:
    """Whether ``executor`` is a Globus Compute/funcX SDK executor (payload limits apply)."""
    module = type(executor).__module__
    return module.startswith(("globus_compute_sdk", "funcx"))


def globus_executor(endpoint: str, **kwargs: Any) -> Any:
    """A Globus Compute ``Executor`` for ``endpoint`` (a UUID); ``kwargs`` go to the SDK."""
    import uuid

    try:
        uuid.UUID(str(endpoint))
    except ValueError as exc:
        msg = f"--endpoint must be a Globus Compute endpoint UUID, got {endpoint!r}"
        raise InvalidOption(msg) from exc
    return _executor_class()(endpoint_id=str(endpoint), **kwargs)


def wrap(executor: Any, **kwargs: Any) -> ExecutorScheduler:
    """An :class:`ExecutorScheduler` for any executor, with Globus limits where they apply.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> wrap(ThreadPoolExecutor(1)).max_payload is None
        True
    """
    if is_globus_executor(executor):
        kwargs.setdefault("max_payload", MAX_PAYLOAD)
        kwargs.setdefault("max_result", MAX_RESULT)
        kwargs.setdefault("name", f"Globus Compute endpoint {executor.endpoint_id}")
    return ExecutorScheduler(executor, **kwargs)


@contextlib.contextmanager
def open_globus(
    endpoint: str,
    *,
    retries: int | None = None,
    timeout: float | None = None,
    check_versions: bool | None = None,
    **executor_options: Any,
) -> Iterator[ExecutorScheduler]:
    """Yield an :class:`ExecutorScheduler` over a Globus Compute ``Executor``.

    Args:
        endpoint: endpoint UUID.
        retries: extra attempts of a failed or lost fit task.
        timeout: seconds per fit task, from submission (remote queueing counts).
        check_versions: compare pyhf_dask/pyhf/Python versions with the endpoint first.
        executor_options: passed to ``globus_compute_sdk.Executor`` (``client``,
            ``batch_size``, ``user_endpoint_config``, ...).
    """
    executor = globus_executor(endpoint, **executor_options)
    try:
        yield wrap(executor, retries=retries, timeout=timeout, check_versions=check_versions)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
