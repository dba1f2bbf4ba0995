"""Which tasks of a Dask graph go to the executor: found by what they are, not their keys.

The adapter receives the graph after Dask's optimisation, which may have fused a remote
task into another one (computing one variable of a scan fuses each fit with its
extraction). :func:`prepare` undoes the fusions that hide a remote task, so every remote
task is a node of its own again; :func:`route` says where each node runs.

Only public Dask interfaces are used: the task classes of :mod:`dask.task_spec`
(``Task.has_subgraph()`` says that a task is a fused subgraph; its arguments are the
inner graph, its output key and its input keys), ``dask.core.convert_legacy_graph`` for
graphs in the tuple format, and the ``__dask_graph__``/``__dask_annotations__`` protocol.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Hashable, Mapping
from typing import Any, Literal

from dask.task_spec import Alias, GraphNode, Task

from pyhf_dask.exceptions import InvalidOption
from pyhf_dask.tasks import ANNOTATION, SplittableTask, is_remote

__all__ = ["LOCAL_MODULES", "REMOTE_MODES", "Route", "prepare", "route"]

log = logging.getLogger(__name__)

#: Where a task runs: ``"split"`` (a remote task with the split protocol, submitted on
#: its own), ``"call"`` (a remote call, submitted in batches) or ``"local"`` (the client).
Route = Literal["split", "call", "local"]

#: ``remote=`` values: ``"all"`` also sends every task that calls a function from outside
#: :data:`LOCAL_MODULES`; ``"marked"`` sends marked and annotated tasks only.
REMOTE_MODES = ("all", "marked")

#: Top-level modules whose functions are plumbing that runs in the client in ``"all"``
#: mode: the standard library (``builtins``, ``operator``, ...), Dask's own tasks, array
#: assembly, and pyhf_dask's result extraction.
LOCAL_MODULES = frozenset(
    {
        *sys.stdlib_module_names,
        "dask",
        "numpy",
        "pandas",
        "pyhf_dask",
        "tlz",
        "toolz",
        "xarray",
    }
)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`REMOTE_MODES`."""
    if mode not in REMOTE_MODES:
        msg = f"unknown remote mode {mode!r} (choose from: {', '.join(REMOTE_MODES)})"
        raise InvalidOption(msg)
    return mode


def prepare(dsk: Any) -> tuple[dict[Hashable, GraphNode], dict[Hashable, Any]]:
    """The task-spec graph of what ``dask.compute`` passed, and its remote annotations."""
    from dask.core import convert_legacy_graph

    annotations: dict[Hashable, Any] = {}
    if not isinstance(dsk, Mapping):
        get_annotations = getattr(dsk, "__dask_annotations__", None)
        if get_annotations is not None:
            annotations = dict(get_annotations().get(ANNOTATION, {}))
        dsk = dsk.__dask_graph__()
    graph = dict(dsk)
    if not all(isinstance(v, GraphNode) for v in graph.values()):
        graph = convert_legacy_graph(graph)
    return graph, annotations


def route(key: Hashable, node: GraphNode, annotations: Mapping[Hashable, Any], mode: str) -> Route:
    """Where ``node`` runs (see :data:`Route`)."""
    func = getattr(node, "func", None)
    if not isinstance(node, Task) or func is None or node.has_subgraph():
        return "local"
    if is_remote(func):
        return "split" if _splittable(func) else "call"
    mark = annotations.get(key)
    if mark is not None:
        return "call" if mark else "local"
    if mode == "all" and _user_function(func):
        return "call"
    return "local"


def unfuse(
    graph: dict[Hashable, GraphNode], annotations: Mapping[Hashable, Any], mode: str
) -> dict[Hashable, GraphNode]:
    """``graph`` with every fused task that hides a remote task replaced by its parts.

    A fused task ``K`` computing the inner graph's output ``O`` becomes the inner tasks
    and an alias ``K -> O`` (Dask keeps an alias ``O -> K`` where it renamed the output;
    the inner task takes its place).

    Raises:
        RuntimeError: a remote task is hidden where it cannot be taken out.
    """
    out = dict(graph)
    work = [k for k, v in graph.items() if _hides_remote(k, v, annotations, mode)]
    while work:
        key: Any = work.pop()
        node = out[key]
        assert isinstance(node, Task)
        inner, outkey = _subgraph(key, node)
        for k, v in inner.items():
            old = out.get(k)
            if old is not None and k != key and not _alias_of(old, key) and old != v:
                msg = f"cannot take fused task {key!r} apart: its part {k!r} clashes"
                raise RuntimeError(msg)
            out[k] = v
            if _hides_remote(k, v, annotations, mode):
                work.append(k)
        if outkey != key:
            out[key] = Alias(key, outkey)
        log.debug("took fused task %r apart (%d tasks)", key, len(inner))
    for k, v in out.items():
        where = _inline_remote(v)
        if where:
            msg = (
                f"task {k!r} calls the remote task {where} inside its arguments, where it "
                "cannot be sent to the executor; make it a task of its own"
            )
            raise RuntimeError(msg)
    return out


def _subgraph(key: Hashable, node: Task) -> tuple[dict[Hashable, GraphNode], Any]:
    """Inner graph and output key of a fused task (``Task.fuse``'s argument layout)."""
    args = node.args
    ok = (
        len(args) >= 3
        and isinstance(args[0], dict)
        and all(isinstance(v, GraphNode) for v in args[0].values())
        and args[1] in args[0]
    )
    if not ok:
        msg = (
            f"task {key!r} is a fused subgraph of a form this adapter does not know; "
            "compute with optimize_graph=False"
        )
        raise RuntimeError(msg)
    return dict(args[0]), args[1]


def _alias_of(node: GraphNode, target: Hashable) -> bool:
    return isinstance(node, Alias) and node.target == target


def _hides_remote(
    key: Hashable, node: GraphNode, annotations: Mapping[Hashable, Any], mode: str
) -> bool:
    """Whether ``node`` is a fused task with a remote task inside (at any depth)."""
    if not (isinstance(node, Task) and node.has_subgraph()):
        return False
    inner = node.args[0] if node.args and isinstance(node.args[0], dict) else {}
    return any(
        route(k, v, annotations, mode) != "local" or _hides_remote(k, v, annotations, mode)
        for k, v in inner.items()
    )


def _inline_remote(node: Any, depth: int = 0) -> str:
    """Name of a marked callable used by a task nested in ``node``'s arguments."""
    if depth > 50 or not isinstance(node, Task):
        return ""
    if depth and is_remote(node.func):
        return repr(node.func)
    if node.has_subgraph():
        return ""  # a fused task without remote parts (checked by _hides_remote)
    for arg in (*node.args, *node.kwargs.values()):
        found = _inline_remote(arg, depth + 1)
        if found:
            return found
    return ""


def _splittable(func: Any) -> bool:
    return isinstance(func, SplittableTask)


def _user_function(func: Any) -> bool:
    """Whether ``func`` comes from outside :data:`LOCAL_MODULES`."""
    while isinstance(func, functools.partial):
        func = func.func
    module = getattr(func, "__module__", None) or type(func).__module__ or ""
    return module.partition(".")[0] not in LOCAL_MODULES
