"""A reader's heartbeat reply lists the job's tasks only when they changed (reader_view.py).

The list costs the dispatcher a few microseconds per task to build and encode; sent in every
reply, readers × workers of their job was what limited a dispatcher.
"""

from __future__ import annotations

import time
from typing import Any

import tensorwire as tw
from tensorwire_dataservice.service.protocol import DISPATCHER_SERVICE, call

from .helpers import distribute

Dataset = tw.data.Dataset


def _heartbeat(dispatcher: Any, client_id: int, view: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"client_id": client_id, "finished": [], "finished_generations": []}
    if view is not None:
        request["view"] = view
    protocol = dispatcher.target.split("://")[0]
    return call(protocol, dispatcher._address, DISPATCHER_SERVICE, "ClientHeartbeat", request)


def _wait_for(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_reader_holding_the_current_view_gets_no_task_list(service_factory):
    dispatcher, _ = service_factory(2)
    reader = distribute(Dataset.range(10**9), dispatcher)._read()
    try:
        next(reader)
        full = _heartbeat(dispatcher, reader.client_id, None)
        assert len(full["tasks"]) == 2
        assert set(full["worker_hosts"]) == {w for w in dispatcher._core.state.workers}
        again = _heartbeat(dispatcher, reader.client_id, full["view"])
        assert again["view"] == full["view"]
        assert "tasks" not in again and "worker_hosts" not in again
        assert again["job_finished"] is False and again["num_workers"] == 2
        # A view of another dispatcher process (or none) gets the list.
        other = _heartbeat(dispatcher, reader.client_id, "0000:" + full["view"].split(":")[1])
        assert len(other["tasks"]) == 2
    finally:
        reader.close()


def test_a_change_sends_the_list_again_and_the_reader_applies_it(service_factory):
    dispatcher, _ = service_factory(1)
    reader = distribute(Dataset.range(10**9), dispatcher)._read()
    try:
        next(reader)
        held = _heartbeat(dispatcher, reader.client_id, None)["view"]
        service_factory.add_worker(dispatcher)  # a new worker: the job gets a task on it
        changed = _wait_for(
            lambda: (r := _heartbeat(dispatcher, reader.client_id, held)).get("tasks") and r,
            "a reply listing the new worker's task",
        )
        assert len(changed["tasks"]) == 2 and changed["view"] != held
        # The reader's own heartbeats pick it up and it reads from both workers' tasks.
        _wait_for(lambda: len(reader._tasks) == 2, "the reader to know both tasks")
        # The view may change again meanwhile (the new worker reports its host in a later
        # heartbeat): the reader catches up with the current one.
        _wait_for(
            lambda: reader._view == _heartbeat(dispatcher, reader.client_id, None)["view"],
            "the reader to hold the current view",
        )
    finally:
        reader.close()


def test_splits_handed_to_running_tasks_leave_the_view_as_it_was(service_factory):
    dispatcher, _ = service_factory(1)
    reader = distribute(Dataset.range(10**9), dispatcher, "distributed_epoch")._read()
    try:
        next(reader)
        core = dispatcher._core
        with core.lock:
            (job,) = core.state.jobs.values()
            splits_before = job.num_splits
        held = _heartbeat(dispatcher, reader.client_id, None)["view"]
        # Reading makes the worker ask for more splits, once it has produced those it
        # holds (how many it fetched ahead depends on how fast it ran): read until then.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for _ in range(500):
                next(reader)
            with core.lock:
                if job.num_splits > splits_before:
                    break
        with core.lock:
            assert job.num_splits > splits_before, "no new split in 120 s of reading"
        assert "tasks" not in _heartbeat(dispatcher, reader.client_id, held)
    finally:
        reader.close()
