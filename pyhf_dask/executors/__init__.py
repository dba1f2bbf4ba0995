"""Where a scan's graph runs: schedulers for ``dask.compute`` built from executor names.

``open_scheduler("local")`` is the embedded default: Dask's process pool, started with
the ``spawn`` method (JAX deadlocks in processes forked after JAX was used).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

from pyhf_dask.exceptions import InvalidOption

__all__ = ["EXECUTORS", "open_scheduler"]

EXECUTORS = ("local", "synchronous", "threads")


@contextlib.contextmanager
def open_scheduler(executor: str = "local", *, workers: int | None = None, **_: Any) -> Iterator[Any]:
    """Context manager yielding a ``scheduler=`` value for ``dask.compute``.

    Args:
        executor: ``"local"`` (process pool), ``"threads"`` or ``"synchronous"``.
        workers: worker processes or threads (default: one per core).

    Example:
        >>> with open_scheduler("synchronous") as scheduler:
        ...     scheduler
        'synchronous'
    """
    import dask

    n = workers or os.cpu_count() or 1
    if executor == "synchronous":
        yield "synchronous"
    elif executor == "threads":
        yield functools.partial(dask.threaded.get, num_workers=n)
    elif executor == "local":
        import dask.multiprocessing

        with dask.config.set({"multiprocessing.context": "spawn"}):
            yield functools.partial(dask.multiprocessing.get, num_workers=n)
    else:
        msg = f"unknown executor {executor!r} (choose from: {', '.join(EXECUTORS)})"
        raise InvalidOption(msg)
