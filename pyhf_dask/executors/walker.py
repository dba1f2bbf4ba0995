"""The graph walk of :class:`~pyhf_dask.executors.adapter.ExecutorScheduler`.

One :class:`_Run` per ``dask.compute`` call: cheap tasks run inline as soon as their
inputs are there; fit tasks are submitted (split to the payload limits), consumed as they
complete, retried when they fail, are lost or time out, and marked failed when they keep
failing, so the graph always completes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pyhf_dask.executors.adapter import _n_points, _Part, split_patches
from pyhf_dask.graph import FIT_PREFIX
from pyhf_dask.kernels import FIELDS, empty_result

if TYPE_CHECKING:
    from pyhf_dask.executors.adapter import ExecutorScheduler

__all__: list[str] = []

log = logging.getLogger(__name__)

#: Seconds queued tasks may wait while no task runs before the executor counts as stuck.
_STALL = 60.0


class _Run:
    """State of one ``ExecutorScheduler.__call__``."""

    def __init__(
        self,
        owner: ExecutorScheduler,
        graph: dict[Any, Any],
        keys: Any,
        callbacks: tuple[list[Any], ...],
    ) -> None:
        from dask.core import flatten

        self.owner = owner
        self.graph = graph
        self.keys = keys
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
        self.inflight: dict[cf.Future[Any], _Part] = {}
        self.queued: list[_Part] = []
        owner.stats = {"submitted": 0, "retried": 0, "failed": 0, "split": 0}

    def run(self) -> Any:
        for cb in self.starts:
            cb(self.graph)
        for cb in self.start_states:
            cb(self.graph, self.state)
        errored = True
        probe = self.owner._probe_versions()
        try:
            while self.state["ready"] or self.inflight or self.queued or probe is not None:
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

    # -- local and remote tasks --------------------------------------------------------

    def _start(self, key: Any) -> None:
        node = self.graph[key]
        for cb in self.pretasks:
            cb(key, self.graph, self.state)
        values = {d: self.cache[d] for d in self.deps[key]}
        if not (isinstance(key, str) and key.startswith(FIT_PREFIX)) or not hasattr(node, "func"):
            self.state["running"].add(key)
            self._finish(key, node(values))
            return
        args = tuple(_resolve(a, values) for a in node.args)
        kwargs = {k: _resolve(v, values) for k, v in node.kwargs.items()}
        parts = self.owner._parts(key, node.func, args, kwargs)
        self.state["running"].add(key)
        self.remaining[key] = len(parts)
        self.queued.extend(parts)

    def _fill(self) -> None:
        limit = self.owner.max_in_flight
        while self.queued and (limit is None or len(self.inflight) < limit):
            part = self.queued.pop(0)
            try:
                fut = self.owner._submit(part)
            except Exception as exc:  # the executor refused: count it as a failed attempt
                self._failed(part, exc)
                continue
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
        if part.n_points is not None:
            problem = _check_result(value, part.n_points, part.n_poi)
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
        for fut, part in list(self.inflight.items()):
            started = starts[fut]
            if fut.done():
                continue
            if started is not None and now - started > timeout:
                reason = f"no result within {timeout:g} s of running"
            elif started is None and stalled and now - part.started > max(timeout, _STALL):
                reason = f"not started by any worker within {max(timeout, _STALL):g} s"
            else:
                continue
            del self.inflight[fut]
            self.owner._abandon(fut)
            self._failed(part, TimeoutError(reason))

    def _wait_time(self) -> float | None:
        timeout = self.owner.timeout
        if timeout is None or not self.inflight:
            return None
        starts = [self.owner._started(f, p) for f, p in self.inflight.items()]
        known = [s for s in starts if s is not None]
        if not known:
            return 0.5  # not started yet: look again soon
        wait = max(0.0, min(known) + timeout - time.monotonic()) + 0.01
        return min(wait, 0.5) if len(known) < len(starts) else wait

    def _failed(self, part: _Part, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()
        reason = text[-1][:300] if text else type(exc).__name__
        if "MaxResultSizeExceeded" in reason and part.n_points and part.n_points > 1:
            self._resplit(part)
            return
        part.errors.append(reason)
        if part.attempts <= self.owner.retries:
            self.owner.stats["retried"] += 1
            log.warning(
                "%s: %s attempt %d failed (%s); retrying",
                self.owner.name,
                part.key,
                part.attempts,
                reason,
            )
            self.queued.append(part)
            return
        self.owner.stats["failed"] += 1
        if part.n_points is None:
            raise exc
        log.error(
            "%s: %s failed after %d attempts (%s); marking %d points failed",
            self.owner.name,
            part.key,
            part.attempts,
            reason,
            part.n_points,
        )
        result = empty_result(part.n_points, part.n_poi)
        result["message"][:] = (
            f"task failed after {part.attempts} attempt(s) on {self.owner.name}: {reason}"
        )
        self._part_done(part, result)

    def _resplit(self, part: _Part) -> None:
        kernel, workspace, patches, options = part.args
        pieces = split_patches(patches, 2)
        log.info("%s: result of %s too large; splitting", self.owner.name, part.key)
        self.remaining[part.key] += len(pieces) - 1
        for j, p in enumerate(pieces):  # (i, j) sorts between (i - 1,) and (i + 1,)
            self.queued.append(
                _Part(
                    part.key,
                    (*part.index, j),
                    part.func,
                    (kernel, workspace, p, options),
                    part.kwargs,
                    _n_points(p),
                    part.n_poi,
                    part.attempts,
                )
            )

    def _part_done(self, part: _Part, value: Any) -> None:
        self.results[part.key][part.index] = value
        self.remaining[part.key] -= 1
        if self.remaining[part.key]:
            return
        pieces = [v for _, v in sorted(self.results.pop(part.key).items())]
        value = (
            pieces[0]
            if len(pieces) == 1
            else {name: np.concatenate([p[name] for p in pieces]) for name in FIELDS}
        )
        del self.remaining[part.key]
        self._finish(part.key, value)

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


def _cancel(fut: cf.Future[Any]) -> None:
    """Cancel a future; executors that cannot (Parsl: NotImplementedError) are skipped."""
    try:
        fut.cancel()
    except Exception as exc:  # cancelling is best effort
        log.debug("cannot cancel a task: %s: %s", type(exc).__name__, exc)


def _resolve(arg: Any, values: Mapping[Any, Any]) -> Any:
    """Evaluate one argument of a task spec against computed dependency values."""
    from dask._task_spec import GraphNode, TaskRef

    if isinstance(arg, GraphNode):
        return arg({k: values[k] for k in arg.dependencies})
    if isinstance(arg, TaskRef):
        return values[arg.key]
    return arg


def _check_result(value: Any, n_points: int, n_poi: int) -> str:
    if not isinstance(value, dict) or not set(FIELDS) <= set(value):
        return f"worker returned {type(value).__name__}, not a result dict"
    if np.shape(value["CLs_obs"]) != (n_points, n_poi):
        return f"worker returned CLs of shape {np.shape(value['CLs_obs'])}, not {(n_points, n_poi)}"
    return ""


def _pack(keys: Any, cache: Mapping[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_pack(k, cache) for k in keys]
    return cache[keys]
