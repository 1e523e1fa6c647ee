"""A worker dropped for missed heartbeats and registered again keeps its tasks, also across
a dispatcher restart that replays the journal.

Once, under a heavily loaded CI machine, a dispatcher killed right after it journaled a
dropped worker's new registration, but before the separate records reviving its tasks,
restarted with the worker registered and its task still taken away. The worker's next
heartbeat was told to delete the task, a later one gave it back, the worker started it over,
and its reader received the whole epoch twice. Registration now revives the tasks in the
same record; these tests drive the dispatcher's logic directly, record by record.
"""

from __future__ import annotations

import time
from typing import Any

import tensorwire as tw
from tensorwire_dataservice.service import pipeline
from tensorwire_dataservice.service.config import DispatcherConfig
from tensorwire_dataservice.service.dispatcher import _Dispatcher
from tensorwire_dataservice.service.protocol import ShardingPolicy
from tensorwire_dataservice.service.state import DispatcherState

WORKER = "localhost:7001"


def _dispatcher_with_a_task() -> tuple[_Dispatcher, int, list[dict[str, Any]]]:
    """A dispatcher, the task of a parallel_epochs job on WORKER, and the records so far."""
    records: list[dict[str, Any]] = []
    core = _Dispatcher(DispatcherConfig(worker_timeout_ms=1000))
    commit = core._commit

    def recording_commit(record: dict[str, Any]) -> None:
        records.append(dict(record))
        commit(record)

    core._commit = recording_commit
    core.worker_heartbeat({"worker_address": WORKER, "tasks": []})
    dataset = core.get_or_register_dataset(
        {
            "dataset_def": pipeline.serialize(tw.data.Dataset.range(10)),
            "metadata": {},
            "dataset_id": "",
        }
    )
    core.get_or_create_job(
        {"dataset_id": dataset["dataset_id"], "policy": int(ShardingPolicy.OFF), "acquire": True}
    )
    (task,) = core.state.tasks_for_worker(WORKER)
    return core, task.task_id, records


def _replay(records: list[dict[str, Any]]) -> DispatcherState:
    state = DispatcherState(id_base=1)
    for record in records:
        state.apply(record)
    return state


def test_registering_again_gives_a_dropped_worker_its_tasks_in_the_same_record():
    core, task_id, records = _dispatcher_with_a_task()
    # Missed heartbeats (1 s): dropped, its task taken away; its reader is still there.
    core.tick(time.monotonic() + 5, False)
    assert core.state.tasks[task_id].removed
    reply = core.worker_heartbeat({"worker_address": WORKER, "tasks": [task_id]})
    assert reply == {"tasks": [], "delete": []}
    assert not core.state.tasks[task_id].removed
    # The journal up to (and including) the registration is enough: a restart cut right
    # after it has the worker registered with its task.
    cut = max(i for i, r in enumerate(records) if r["op"] == "register_worker")
    state = _replay(records[: cut + 1])
    assert WORKER in state.workers
    assert [t.task_id for t in state.tasks_for_worker(WORKER)] == [task_id]


def test_a_registered_worker_running_a_task_the_state_took_is_given_it_back():
    """What an older journal (revivals in records of their own) can leave after a restart:
    the worker registered and its task taken. Its heartbeat revives the task; it is never
    told to delete it."""
    core, task_id, _ = _dispatcher_with_a_task()
    core.state.tasks[task_id].removed = True
    reply = core.worker_heartbeat({"worker_address": WORKER, "tasks": [task_id]})
    assert reply["delete"] == []
    assert not core.state.tasks[task_id].removed


def test_registration_never_makes_two_live_tasks_of_one_job_on_a_worker():
    """A journal written before revival existed has the dropped worker's old task and a
    new task of the same job; replaying it must not bring the old one back."""
    core, old, records = _dispatcher_with_a_task()
    job_id = core.state.tasks[old].job_id
    records = [
        *records,
        {"op": "remove_worker", "address": WORKER},
        {"op": "register_worker", "address": WORKER},
    ]
    state = _replay(records)
    new_id = max(state.tasks) + 1
    state.apply(
        {"op": "create_task", "task_id": new_id, "job_id": job_id, "worker_address": WORKER}
    )
    state.apply({"op": "remove_worker", "address": WORKER})
    state.apply({"op": "register_worker", "address": WORKER})
    live = [t for t in state.tasks_for_worker(WORKER) if t.job_id == job_id]
    assert len(live) == 1


def test_a_restarted_dispatcher_leases_its_known_workers_from_when_it_serves(tmp_path):
    """Recovery may take a while, and a worker's channel may still be backing off: the
    workers it recovered get a full timeout plus a reconnect grace from when it serves."""
    from tensorwire_dataservice.service.dispatcher import RECONNECT_GRACE_S, DispatchServer

    config = DispatcherConfig(
        work_dir=str(tmp_path), fault_tolerant_mode=True, worker_timeout_ms=1000
    )
    first = DispatchServer(config, start=False)
    first._core.worker_heartbeat({"worker_address": WORKER, "tasks": []})
    first.stop()
    again = DispatchServer(config._replace(port=0), start=False)
    try:
        serving_from = time.monotonic()
        again.start()
        assert again._core.worker_seen[WORKER] >= serving_from + RECONNECT_GRACE_S
    finally:
        again.stop()
