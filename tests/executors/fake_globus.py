"""Test double of the Globus Compute web service (REST + AMQP result queue).

Only the service is replaced: the real ``globus_compute_sdk.Executor`` submits through a
``FakeClient`` (``register_function``, ``create_batch`` with the SDK's real ``Batch``,
``batch_run``), and results come back through a ``FakeResultWatcher`` installed where the
SDK's AMQP ``_ResultWatcher`` would be. Tasks are assembled as the service does (function
buffer + argument buffer in a messagepack ``Task``) and run on a real endpoint engine.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines.base import GCFuture
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.batch import Batch
from globus_compute_sdk.serialize import ComputeSerializer


class PayloadTooLarge(Exception):
    """What the service answers (HTTP 413) to a submission over its limit."""


class FakeClient:
    def __init__(self, engine: Any, *, max_request: int = 10_000_000, fail_batches: int = 0):
        self.engine = engine  # a LocalEndpointExecutor: its .engine is the endpoint engine
        self.fx_serializer = ComputeSerializer()
        self.functions: dict[str, str] = {}
        self.batches: list[int] = []
        self.payload_sizes: list[int] = []
        self.max_request = max_request
        self.fail_batches = fail_batches
        self.results: dict[str, Any] = {}
        self.cond = threading.Condition()

    # -- REST API used by the Executor -------------------------------------------
    def register_function(self, function: Any, **_: Any) -> str:
        fid = str(uuid.uuid4())
        serde = self.fx_serializer
        self.functions[fid] = serde.pack_buffers([serde.serialize(function)])
        return fid

    def create_batch(
        self,
        task_group_id=None,
        resource_specification=None,
        user_endpoint_config=None,
        result_serializers=None,
        create_websocket_queue=False,
    ) -> Batch:
        return Batch(
            task_group_id,
            resource_specification,
            user_endpoint_config,
            request_queue=create_websocket_queue,
            serializer=self.fx_serializer,
            result_serializers=result_serializers,
        )

    def batch_run(self, endpoint_id: Any, batch: Batch) -> dict[str, Any]:
        if self.fail_batches:
            self.fail_batches -= 1
            msg = "503 Service Unavailable"
            raise RuntimeError(msg)
        data = batch.prepare()
        tasks: dict[str, list[str]] = {}
        for payloads in data["tasks"].values():
            for payload in payloads:
                if len(payload) > self.max_request:
                    msg = f"413 payload of {len(payload)} bytes is too large"
                    raise PayloadTooLarge(msg)
        self.batches.append(sum(len(p) for p in data["tasks"].values()))
        for fid, payloads in data["tasks"].items():
            for payload in payloads:
                self.payload_sizes.append(len(payload))
                task_id = uuid.uuid4()
                packed = messagepack.pack(
                    Task(task_id=task_id, task_buffer=self.functions[fid] + payload)
                )
                fut = GCFuture(task_id)
                fut.add_done_callback(lambda f, t=str(task_id): self._store(t, f))
                self.engine.engine.submit(fut, packed, resource_specification={})
                tasks.setdefault(fid, []).append(str(task_id))
        return {
            "tasks": tasks,
            "task_group_id": str(data.get("task_group_id") or uuid.uuid4()),
            "request_id": str(uuid.uuid4()),
            "endpoint_id": str(endpoint_id),
        }

    def _store(self, task_id: str, fut: Any) -> None:
        with self.cond:
            self.results[task_id] = messagepack.unpack(fut.result())
            self.cond.notify_all()

    def _log_version_mismatch(self, details: Any) -> None:
        return None


class FakeResultWatcher:
    """Replaces the SDK's AMQP consumer: completes futures as the service streams results."""

    def __init__(self, client: FakeClient):
        self.client = client
        self.open: dict[str, Any] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return not self._stop

    def watch_for_task_results(self, executor: Any, futures: list[Any]) -> int:
        with self.client.cond:
            for f in futures:
                self.open[f.task_id] = f
            self.client.cond.notify_all()
        return len(futures)

    def get_open_futures(self, executor: Any = None) -> dict[str, Any]:
        return dict(self.open)

    def _run(self) -> None:
        client = self.client
        while True:
            with client.cond:
                client.cond.wait_for(
                    lambda: self._stop or (self.open.keys() & client.results.keys())
                )
                if self._stop:
                    return
                ready = [
                    (self.open.pop(t), client.results.pop(t))
                    for t in list(self.open.keys() & client.results.keys())
                ]
            for fut, res in ready:
                if res.is_error:
                    fut.set_exception(TaskExecutionFailed(res.data, "0"))
                else:
                    fut.set_result(client.fx_serializer.deserialize(res.data))

    def shutdown(self, *_: Any, **__: Any) -> None:
        with self.client.cond:
            self._stop = True
            self.client.cond.notify_all()
