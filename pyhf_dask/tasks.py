"""What a Dask task must carry to run on a remote executor: the remote-task protocol.

:class:`~pyhf_dask.executors.ExecutorScheduler` decides where a task runs from what the
task *is*, never from its key name:

- **the callable is marked** (``__pyhf_dask_remote__ = True``). A mark is part of the
  task's function, so it survives Dask's graph optimisation (linear fusion hides a task
  inside another one; the adapter finds it there). :class:`Remote` marks any function
  (``dask.delayed(remote(f))(...)``); the fit tasks of a scan are
  :class:`pyhf_dask.graph.FitTask` objects, which also say how to split a call into
  smaller calls (payload limits), how many points a call covers, and what a failed call's
  result is (:class:`SplittableTask`).
- **the task is annotated** ``with dask.annotate(pyhf_dask_remote=True):`` (the name is
  :data:`ANNOTATION`). Annotations are simple but Dask drops them when it fuses tasks (a
  ``dask.array`` computation); use :func:`remote` where that matters.
  ``pyhf_dask_remote=False`` keeps a task in the client.
- with ``wrap(executor, remote="all")`` (the default), every other task that calls a
  function from outside Dask, NumPy, xarray, the standard library and pyhf_dask's own
  plumbing is sent too.

Tasks without split protocol (a user's ``dask.delayed`` calls) are sent in batches: one
submission runs :func:`run_batch` over a list of calls, for endpoints with a per-task
latency. This module is physics-free and imports nothing from the package.

Example:
    >>> import dask
    >>> double = remote(lambda x: 2 * x)
    >>> is_remote(double), dask.compute(dask.delayed(double)(3), scheduler="synchronous")
    (True, (6,))
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "ANNOTATION",
    "MARKER",
    "Call",
    "Remote",
    "RemoteTaskInClient",
    "SplittableTask",
    "client_side",
    "is_remote",
    "refuse_in_client",
    "remote",
    "run_batch",
]

#: Attribute that marks a callable as a remote task.
MARKER = "__pyhf_dask_remote__"
#: Dask annotation that marks (``True``) or keeps local (``False``) the annotated tasks.
ANNOTATION = "pyhf_dask_remote"

#: A call as shipped in a batch: function, positional and keyword arguments.
Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_IN_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pyhf_dask_in_client", default=None
)


class RemoteTaskInClient(RuntimeError):
    """A remote task was about to run in the client of an executor adapter."""


def is_remote(obj: Any) -> bool:
    """Whether ``obj`` is a callable marked as a remote task.

    Example:
        >>> is_remote(len), is_remote(Remote(len))
        (False, True)
    """
    return getattr(obj, MARKER, False) is True


@runtime_checkable
class SplittableTask(Protocol):
    """A remote task that the adapter can split, check and mark failed without knowing it.

    ``args``/``kwargs`` are the computed arguments of one call of the task.
    """

    __pyhf_dask_remote__: ClassVar[bool]

    @property
    def worker(self) -> Callable[..., Any]:
        """Plain function submitted to the executor with the call's arguments."""
        ...

    def n_points(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Points (units of work) the call covers."""
        ...

    def split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], parts: int
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The call as up to ``parts`` smaller calls, in order."""
        ...

    def combine(self, results: Sequence[Any]) -> Any:
        """The result of a call from the results of its pieces, in order."""
        ...

    def failed(self, args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> Any:
        """The result of a call whose points all failed, ``message`` saying why."""
        ...

    def check(self, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """What is wrong with ``result`` as a result of the call (``""``: nothing)."""
        ...

    def result_bytes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Expected size of the call's serialized result."""
        ...


class Remote:
    """A function marked as a remote task; calling it calls the function.

    Args:
        func: any picklable function (serialized by reference where it can be).
    """

    __pyhf_dask_remote__: ClassVar[bool] = True

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    @property
    def worker(self) -> Callable[..., Any]:
        """The function submitted to the executor."""
        return self.func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        refuse_in_client(f"remote task {self!r}")
        return self.func(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Remote, (self.func,))

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("pyhf_dask.tasks.Remote", tokenize(self.func))

    def __repr__(self) -> str:
        return f"remote({getattr(self.func, '__qualname__', self.func)!r})"


def remote(func: Callable[..., Any]) -> Remote:
    """Mark ``func`` as a remote task (the mark survives Dask's task fusion).

    Example:
        >>> remote(abs)(-2)
        2
    """
    return func if isinstance(func, Remote) else Remote(func)


def run_batch(calls: Sequence[Call]) -> list[tuple[bool, Any]]:
    """Worker side of a batch: run each call, ``(True, value)`` or ``(False, error)``.

    An error is the exception when it pickles, else a ``RuntimeError`` with its text, so
    one failing call does not lose the others' results.

    Example:
        >>> run_batch([(abs, (-1,), {}), (int, ("x",), {})])[0]
        (True, 1)
    """
    import pickle

    out: list[tuple[bool, Any]] = []
    for func, args, kwargs in calls:
        try:
            out.append((True, func(*args, **kwargs)))
        except Exception as exc:  # reported per call, retried by the adapter
            try:
                pickle.dumps(exc)
                out.append((False, exc))
            except Exception:  # an exception that does not pickle goes back as text
                out.append((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
    return out


@contextlib.contextmanager
def client_side(name: str) -> Iterator[None]:
    """While active, :func:`refuse_in_client` raises: tasks run in the client of ``name``."""
    token = _IN_CLIENT.set(name)
    try:
        yield
    finally:
        _IN_CLIENT.reset(token)


def refuse_in_client(what: str) -> None:
    """Raise :class:`RemoteTaskInClient` when called under :func:`client_side`.

    Remote tasks call this first, so none ever runs silently in an adapter's client.

    Example:
        >>> refuse_in_client("a fit")  # outside any adapter: nothing happens
    """
    name = _IN_CLIENT.get()
    if name is not None:
        msg = (
            f"{what} was about to run in the client instead of on {name}; the adapter "
            "did not find it in the task graph (compute with optimize_graph=False, or "
            "report the graph that hid it)"
        )
        raise RemoteTaskInClient(msg)
