"""A Globus Compute endpoint engine started in-process, behind a ``concurrent.futures`` API.

:class:`LocalEndpointExecutor` packs every task exactly as the Globus Compute SDK does
(``ComputeSerializer``: the function serialized with the SDK's code strategy, arguments
packed as in a ``Batch``; a ``globus_compute_common.messagepack`` ``Task`` message) and
hands it to an endpoint engine from ``globus_compute_endpoint.engines`` running in this
process: ``GlobusComputeEngine`` (Parsl's HighThroughputExecutor with a local provider,
the engine real endpoints use) or ``ProcessPoolEngine``. Results come back as packed
``Result`` messages and are unpacked as the SDK does. No Globus web service is involved.

Use it to try an endpoint configuration on a laptop before deploying it, and in tests to
prove that tasks serialize, run on the real endpoint engine and come back.

Every engine started here listens on loopback only (``address="127.0.0.1"``) and keeps
CurveZMQ encryption on.

Example:
    >>> with LocalEndpointExecutor("process", workers=1) as ex:  # doctest: +SKIP
    ...     ex.submit(sum, [1, 2]).result()
    3
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import Any

from pyhf_dask import config
from pyhf_dask._optional import require
from pyhf_dask.exceptions import InvalidOption, MissingDependency

__all__ = ["ENGINES", "MAX_PAYLOAD", "MAX_RESULT", "LocalEndpointExecutor", "endpoint_command"]

log = logging.getLogger(__name__)

#: Engines that :class:`LocalEndpointExecutor` can start.
ENGINES = ("globus", "process")
#: Globus Compute's limit on one task submission (bytes).
MAX_PAYLOAD = 10_000_000
#: Globus Compute's limit on one task result (bytes).
MAX_RESULT = 10 * 1024 * 1024


def endpoint_command() -> str:
    """Path of the ``globus-compute-endpoint`` command (PATH, else next to Python).

    ``GlobusComputeEngine`` launches its interchange and worker pools through it.

    Raises:
        MissingDependency: the command cannot be found.
    """
    found = shutil.which("globus-compute-endpoint")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "globus-compute-endpoint")
    if os.access(beside, os.X_OK):
        return beside
    msg = (
        "the 'globus-compute-endpoint' command is not on PATH; install it with: "
        "pip install 'pyhf_dask[globus]'"
    )
    raise MissingDependency(msg)


class LocalEndpointExecutor(cf.Executor):
    """``concurrent.futures.Executor`` over an in-process Globus Compute endpoint engine.

    Args:
        engine: ``"globus"`` (``GlobusComputeEngine`` over Parsl HTEX with a
            ``LocalProvider``) or ``"process"`` (``ProcessPoolEngine``).
        workers: worker processes (default: one per core).
        run_dir: endpoint run directory (default: a temporary directory, removed at
            shutdown).
        max_retries_on_system_failure: the engine's own retries of lost tasks.
        heartbeat_period: seconds between HTEX manager heartbeats (lost managers are
            detected after three periods).

    Attributes:
        max_payload: bytes accepted per submission (Globus Compute's limit).
        max_result: bytes accepted per result (Globus Compute's limit).
    """

    max_payload = MAX_PAYLOAD
    max_result = MAX_RESULT

    def __init__(
        self,
        engine: str | None = None,
        *,
        workers: int | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        max_retries_on_system_failure: int = 0,
        heartbeat_period: int | None = None,
    ) -> None:
        engine = str(config.resolve(engine, "executor.endpoint-engine"))
        heartbeat_period = int(config.resolve(heartbeat_period, "executor.heartbeat"))
        if engine not in ENGINES:
            msg = f"unknown endpoint engine {engine!r} (choose from: {', '.join(ENGINES)})"
            raise InvalidOption(msg)
        require("globus_compute_endpoint", "globus")
        from globus_compute_sdk.serialize import ComputeSerializer

        self.engine_name = engine
        self.workers = workers or os.cpu_count() or 1
        self._tmp = None if run_dir else tempfile.mkdtemp(prefix="pyhf-dask-endpoint-")
        self.run_dir = str(run_dir or self._tmp)
        self.endpoint_id = uuid.uuid4()
        self.serializer = ComputeSerializer()
        self._fn_cache: dict[Callable[..., Any], str] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self.engine = self._make_engine(engine, max_retries_on_system_failure, heartbeat_period)
        try:
            self.engine.start(endpoint_id=self.endpoint_id, run_dir=self.run_dir)
        except BaseException:
            self._stop_engine()
            raise
        log.info(
            "started %s (%d workers) in %s", type(self.engine).__name__, self.workers, self.run_dir
        )

    def _make_engine(self, engine: str, retries: int, heartbeat: int) -> Any:
        from globus_compute_endpoint import engines

        if engine == "process":
            from pyhf_dask.executors.owned import owned_context

            # spawned workers that die with this process, however it ends
            pool = engines.ProcessPoolEngine(max_workers=self.workers, mp_context=owned_context())
            pool.max_retries_on_system_failure = retries  # not a constructor argument here
            return pool
        from parsl.providers import LocalProvider

        command = endpoint_command()
        provider = LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, nodes_per_block=1)
        gce = engines.GlobusComputeEngine(
            label="pyhf-dask-local-endpoint",
            provider=provider,
            address="127.0.0.1",  # interchange binds to loopback only
            loopback_address="127.0.0.1",
            max_workers_per_node=self.workers,
            encrypted=True,
            heartbeat_period=heartbeat,
            heartbeat_threshold=3 * heartbeat,
            poll_period=10,
            max_retries_on_system_failure=retries,
            working_dir=os.path.join(self.run_dir, "tasks_working_dir"),
            job_status_kwargs={"max_idletime": 3600.0, "strategy_period": 1.0},
        )
        # launch interchange and worker pools with the endpoint command of this environment
        gce.executor.interchange_launch_cmd = [command, *gce.executor.interchange_launch_cmd[1:]]
        gce.executor.launch_cmd = gce.executor.launch_cmd.replace(
            "globus-compute-endpoint ", f"{command} ", 1
        )
        from pyhf_dask.executors.owned import owned_command, owned_launch_cmd

        # interchange, worker pool and workers die with this process, however it ends
        gce.executor.interchange_launch_cmd = owned_command(
            list(gce.executor.interchange_launch_cmd), remove=self._tmp
        )
        gce.executor.launch_cmd = owned_launch_cmd(gce.executor.launch_cmd)
        return gce

    def pack(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The messagepack ``Task`` an endpoint receives for ``fn(*args, **kwargs)``.

        The function buffer is what the SDK registers (``Client.register_function``), the
        argument buffer what it sends per task (``Batch.add``); the service concatenates
        them into the task buffer.
        """
        from globus_compute_common import messagepack
        from globus_compute_common.messagepack.message_types import Task

        serde = self.serializer
        fn_buffer = self._fn_cache.get(fn)
        if fn_buffer is None:
            fn_buffer = self._fn_cache[fn] = serde.pack_buffers([serde.serialize(fn)])
        payload = serde.pack_buffers([serde.serialize(args), serde.serialize(kwargs)])
        if len(payload) > self.max_payload:
            msg = (
                f"task payload is {len(payload):,d} bytes, more than Globus Compute accepts "
                f"({self.max_payload:,d}); lower --chunk-size"
            )
            raise InvalidOption(msg)
        task = Task(task_id=uuid.uuid4(), task_buffer=fn_buffer + payload)
        return messagepack.pack(task)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Pack ``fn(*args, **kwargs)`` as a Globus Compute task and run it on the engine."""
        from globus_compute_common import messagepack
        from globus_compute_endpoint.engines.base import GCFuture

        with self._lock:
            if self._stopped:
                msg = f"{self!r} is shut down; no new tasks may be submitted"
                raise RuntimeError(msg)
            packed = self.pack(fn, args, kwargs)
            task_id: Any = getattr(messagepack.unpack(packed), "task_id")  # noqa: B009
            gc_future = GCFuture(task_id)
            out: cf.Future[Any] = cf.Future()
            out.set_running_or_notify_cancel()
            gc_future.add_done_callback(lambda f: self._unpack(f, out))
            self.engine.submit(gc_future, packed, resource_specification={})
        return out

    def _unpack(self, gc_future: cf.Future[Any], out: cf.Future[Any]) -> None:
        from globus_compute_common import messagepack
        from globus_compute_sdk.errors import TaskExecutionFailed

        if out.done():
            return
        try:
            result: Any = messagepack.unpack(gc_future.result())
            if result.is_error:
                out.set_exception(TaskExecutionFailed(str(result.data)))
            else:
                out.set_result(self.serializer.deserialize(result.data))
        except Exception as exc:
            if not out.done():
                out.set_exception(exc)

    def worker_pids(self) -> list[int]:
        """Process ids of the engine's worker processes (for tests and diagnostics)."""
        import psutil

        me = psutil.Process()
        return [
            p.pid
            for p in me.children(recursive=True)
            if "worker" in " ".join(p.cmdline()).lower() or self.engine_name == "process"
        ]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the engine (safe to call twice); removes a temporary run directory."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_engine(block=wait)

    def _stop_engine(self, block: bool = True) -> None:
        try:
            if self.engine_name == "process":
                self.engine.shutdown(block=block)
            else:
                self.engine.shutdown()
        except Exception:  # pragma: no cover - best effort during teardown
            log.exception("shutting down %s failed", type(self.engine).__name__)
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"LocalEndpointExecutor({self.engine_name!r}, workers={self.workers})"
