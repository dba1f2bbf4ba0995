"""The graph walk of :class:`~pyhf_dask.executors.adapter.ExecutorScheduler`.

One :class:`Run` per ``dask.compute`` call: local tasks run inline as soon as their inputs
are there (under :func:`pyhf_dask.tasks.client_side`, so a remote task can never run
here unnoticed); splittable remote tasks are submitted (split to the payload limits),
plain remote calls are submitted in batches; results are consumed as they complete,
submissions are retried when they fail, are lost or time out, and a splittable task that
keeps failing gets its protocol's "failed" result, so the graph always completes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import defaultdict
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

from pyhf_dask import config
from pyhf_dask.executors.adapter import _Batch, _Call, _Part
from pyhf_dask.executors.routing import route
from pyhf_dask.tasks import client_side

if TYPE_CHECKING:
    from dask.task_spec import GraphNode

    from pyhf_dask.executors.adapter import ExecutorScheduler

__all__ = ["Run"]

log = logging.getLogger(__name__)


class Run:
    """State of one ``ExecutorScheduler.__call__``."""

    def __init__(
        self,
        owner: ExecutorScheduler,
        graph: dict[Hashable, GraphNode],
        keys: Any,
        annotations: Mapping[Hashable, Any],
        callbacks: tuple[list[Any], ...],
    ) -> None:
        from dask.core import flatten

        self.owner = owner
        self.graph = graph
        self.keys = keys
        self.annotations = annotations
        self.starts, self.start_states, self.pretasks, self.posttasks, self.finishes = callbacks
        self.wanted = set(flatten(keys)) if isinstance(keys, list) else {keys}
        self.deps = {k: set(node.dependencies) for k, node in graph.items()}
        self.dependents: dict[Any, set[Any]] = defaultdict(set)
        for k, ds in self.deps.items():
            for d in ds:
                self.dependents[d].add(k)
        self.waiting = {k: set(ds) for k, ds in self.deps.items() if ds}
        self.cache: dict[Any, Any] = {}
        self.state: dict[str, Any] = {
            "cache": self.cache,
            "ready": [k for k, ds in self.deps.items() if not ds],
            "waiting": self.waiting,
            "running": set(),
            "finished": set(),
            "dependents": self.dependents,
            "dependencies": self.deps,
        }
        self.remaining: dict[Any, int] = {}
        self.results: dict[Any, dict[tuple[int, ...], Any]] = defaultdict(dict)
        self.inflight: dict[cf.Future[Any], _Part | _Batch] = {}
        self.queued: list[_Part] = []
        self.calls: list[_Call] = []
        owner.stats = {"submitted": 0, "retried": 0, "failed": 0, "split": 0, "calls": 0}

    def run(self) -> Any:
        for cb in self.starts:
            cb(self.graph)
        for cb in self.start_states:
            cb(self.graph, self.state)
        errored = True
        probe = self.owner._probe_versions() if self._has_remote() else None
        try:
            while (
                self.state["ready"]
                or self.inflight
                or self.queued
                or self.calls
                or probe is not None
            ):
                while self.state["ready"]:
                    self._start(self.state["ready"].pop())
                self._fill()
                pending: set[cf.Future[Any]] = set(self.inflight)
                if probe is not None:
                    pending.add(probe)
                if not pending:
                    continue
                done, _ = cf.wait(
                    pending, timeout=self._wait_time(), return_when=cf.FIRST_COMPLETED
                )
                if probe is not None and probe in done:
                    done.discard(probe)
                    self.owner._check_probe(probe)
                    probe = None
                for fut in done:
                    self._collect(fut)
                self._expire()
            missing = self.wanted - self.cache.keys()
            if missing:
                msg = f"graph could not be completed; missing keys: {sorted(map(str, missing))[:5]}"
                raise RuntimeError(msg)
            errored = False
            return _pack(self.keys, self.cache)
        finally:
            for fut in [*self.inflight, *([probe] if probe is not None else [])]:
                _cancel(fut)
            for cb in self.finishes:
                cb(self.graph, self.state, errored)

    def _has_remote(self) -> bool:
        mode = self.owner.remote
        return any(route(k, v, self.annotations, mode) != "local" for k, v in self.graph.items())

    # -- local and remote tasks --------------------------------------------------------

    def _start(self, key: Any) -> None:
        node = self.graph[key]
        for cb in self.pretasks:
            cb(key, self.graph, self.state)
        values = {d: self.cache[d] for d in self.deps[key]}
        where = route(key, node, self.annotations, self.owner.remote)
        self.state["running"].add(key)
        if where == "local":
            with client_side(self.owner.name):
                value = node(values)
            self._finish(key, value)
            return
        func: Any = getattr(node, "func")  # noqa: B009 - a Task, by route()
        args = tuple(_resolve(a, values) for a in getattr(node, "args"))  # noqa: B009
        kwargs = {k: _resolve(v, values) for k, v in getattr(node, "kwargs").items()}  # noqa: B009
        if where == "call":
            self.calls.append(_Call(key, getattr(func, "worker", func), args, kwargs))
            return
        parts = self.owner._parts(key, func, args, kwargs)
        self.remaining[key] = len(parts)
        self.queued.extend(parts)

    def _fill(self) -> None:
        limit = self.owner.max_in_flight
        while self.queued and (limit is None or len(self.inflight) < limit):
            self._send(self.queued.pop(0))
        if self.calls and (limit is None or len(self.inflight) < limit):
            free = None if limit is None else limit - len(self.inflight)
            calls, self.calls = self.calls, []
            for batch in self.owner._batches(calls, free):
                if limit is not None and len(self.inflight) >= limit:
                    self.calls.extend(batch.calls)  # batched again when a slot frees
                    continue
                self.owner.stats["calls"] += len(batch.calls)
                self._send(batch)

    def _send(self, part: _Part | _Batch) -> None:
        try:
            fut = self.owner._submit(part)
        except Exception as exc:  # the executor refused: count it as a failed attempt
            self._failed(part, exc)
            return
        self.inflight[fut] = part
        self.owner.stats["submitted"] += 1

    def _collect(self, fut: cf.Future[Any]) -> None:
        part = self.inflight.pop(fut)
        try:
            value = fut.result()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._failed(part, exc)
            return
        if isinstance(part, _Batch):
            self._batch_done(part, value)
            return
        problem = part.task.check(value, part.args, part.kwargs)
        if problem:
            self._failed(part, ValueError(problem))
            return
        self._part_done(part, value)

    def _expire(self) -> None:
        timeout = self.owner.timeout
        if timeout is None:
            return
        now = time.monotonic()
        starts = {fut: self.owner._started(fut, part) for fut, part in self.inflight.items()}
        # nothing running and nothing taken for long: the executor is stuck (e.g. a
        # stopped worker holds its queue), so queued tasks are abandoned too
        stalled = all(s is None for s in starts.values())
        stall = float(config.get("executor.stall"))
        for fut, part in list(self.inflight.items()):
            started = starts[fut]
            limit = timeout * part.weight
            if fut.done():
                continue
            if started is not None and now - started > limit:
                reason = f"no result within {limit:g} s of running"
            elif started is None and stalled and now - part.started > max(limit, stall):
                reason = f"not started by any worker within {max(limit, stall):g} s"
            else:
                continue
            del self.inflight[fut]
            self.owner._abandon(fut)
            self._failed(part, TimeoutError(reason))

    def _wait_time(self) -> float | None:
        timeout = self.owner.timeout
        if timeout is None or not self.inflight:
            return None
        starts = [(self.owner._started(f, p), p.weight) for f, p in self.inflight.items()]
        known = [s + timeout * w for s, w in starts if s is not None]
        if not known:
            return 0.5  # not started yet: look again soon
        wait = max(0.0, min(known) - time.monotonic()) + 0.01
        return min(wait, 0.5) if len(known) < len(starts) else wait

    # -- failures ----------------------------------------------------------------------

    def _failed(self, part: _Part | _Batch, exc: BaseException) -> None:
        reason = _reason(exc)
        if isinstance(part, _Batch):
            for call in part.calls:
                self._call_failed(call, exc, reason)
            return
        n_points = part.task.n_points(part.args, part.kwargs)
        if "MaxResultSizeExceeded" in reason and n_points > 1:
            self._resplit(part)
            return
        part.errors.append(reason)
        if part.attempts <= self.owner.retries:
            self._retrying(part.key, part.attempts, reason)
            self.queued.append(part)
            return
        self.owner.stats["failed"] += 1
        log.error(
            "%s: %s failed after %d attempts (%s); marking %d points failed",
            self.owner.name,
            part.key,
            part.attempts,
            reason,
            n_points,
        )
        message = f"task failed after {part.attempts} attempt(s) on {self.owner.name}: {reason}"
        self._part_done(part, part.task.failed(part.args, part.kwargs, message))

    def _call_failed(self, call: _Call, exc: BaseException, reason: str) -> None:
        call.errors.append(reason)
        if call.attempts <= self.owner.retries:
            self._retrying(call.key, call.attempts, reason)
            self.calls.append(call)
            return
        self.owner.stats["failed"] += 1
        log.error(
            "%s: %s failed after %d attempts (%s)",
            self.owner.name,
            call.key,
            call.attempts,
            reason,
        )
        raise exc

    def _retrying(self, key: Hashable, attempt: int, reason: str) -> None:
        self.owner.stats["retried"] += 1
        log.warning(
            "%s: %s attempt %d failed (%s); retrying", self.owner.name, key, attempt, reason
        )

    def _resplit(self, part: _Part) -> None:
        pieces = part.task.split(part.args, part.kwargs, 2)
        log.info("%s: result of %s too large; splitting", self.owner.name, part.key)
        self.remaining[part.key] += len(pieces) - 1
        for j, (args, kwargs) in enumerate(pieces):  # (i, j) sorts between (i - 1,), (i + 1,)
            self.queued.append(
                _Part(part.key, (*part.index, j), part.task, args, kwargs, part.attempts)
            )

    # -- results -----------------------------------------------------------------------

    def _batch_done(self, batch: _Batch, value: Any) -> None:
        if not isinstance(value, list) or len(value) != len(batch.calls):
            self._failed(batch, ValueError(f"worker returned {type(value).__name__} for a batch"))
            return
        for call, (ok, result) in zip(batch.calls, value, strict=True):
            if ok:
                self._finish(call.key, result)
            else:
                exc = result if isinstance(result, BaseException) else RuntimeError(str(result))
                self._call_failed(call, exc, _reason(exc))

    def _part_done(self, part: _Part, value: Any) -> None:
        self.results[part.key][part.index] = value
        self.remaining[part.key] -= 1
        if self.remaining[part.key]:
            return
        pieces = [v for _, v in sorted(self.results.pop(part.key).items())]
        del self.remaining[part.key]
        self._finish(part.key, part.task.combine(pieces))

    def _finish(self, key: Any, value: Any) -> None:
        self.cache[key] = value
        self.state["running"].discard(key)
        self.state["finished"].add(key)
        for cb in self.posttasks:
            cb(key, value, self.graph, self.state, None)
        for dep in self.dependents.get(key, ()):
            waits = self.waiting[dep]
            waits.discard(key)
            if not waits:
                del self.waiting[dep]
                self.state["ready"].append(dep)
        for d in self.deps[key]:  # release inputs nobody needs any more
            if d not in self.wanted and self.dependents[d] <= self.state["finished"]:
                self.cache.pop(d, None)


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def _cancel(fut: cf.Future[Any]) -> None:
    """Cancel a future; executors that cannot (Parsl: NotImplementedError) are skipped."""
    try:
        fut.cancel()
    except Exception as exc:  # cancelling is best effort
        log.debug("cannot cancel a task: %s: %s", type(exc).__name__, exc)


def _resolve(arg: Any, values: Mapping[Any, Any]) -> Any:
    """Evaluate one argument of a task spec against computed dependency values."""
    from dask.task_spec import GraphNode, TaskRef

    if isinstance(arg, GraphNode):
        return arg({k: values[k] for k in arg.dependencies})
    if isinstance(arg, TaskRef):
        return values[arg.key]
    return arg


def _pack(keys: Any, cache: Mapping[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_pack(k, cache) for k in keys]
    return cache[keys]
