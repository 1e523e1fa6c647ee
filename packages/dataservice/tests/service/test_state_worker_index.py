"""The dispatcher state's index of tasks by worker answers as a scan of every task did.

A worker heartbeat asks for the worker's tasks (``tasks_for_worker``, ``removed_tasks_of``);
those scanned every task the dispatcher kept, collected jobs' tasks included, so a heartbeat
cost grew with every epoch a long-lived dispatcher served (benchmarks/dispatcher_scale.py).
Through every record that creates, moves, drops or forgets tasks, and through a snapshot,
the index gives the same tasks in the same order as that scan.
"""

from __future__ import annotations

from typing import Any

from tensorwire_dataservice.service.state import DispatcherState

WORKERS = ["w0:1", "w1:1", "w2:1", "w3:1"]


def _scan_for_worker(state: DispatcherState, address: str) -> list[int]:
    return [
        t.task_id
        for t in state.tasks.values()
        if t.worker_address == address
        and not t.removed
        and not t.finished
        and not state.jobs[t.job_id].garbage_collected
    ]


def _scan_removed(state: DispatcherState, address: str) -> list[int]:
    return [
        t.task_id
        for t in state.tasks.values()
        if t.worker_address == address
        and t.removed
        and not t.finished
        and t.job_id in state.jobs
        and not state.jobs[t.job_id].garbage_collected
    ]


def _check(state: DispatcherState) -> None:
    for address in [*WORKERS, "nobody:1"]:
        assert [t.task_id for t in state.tasks_for_worker(address)] == _scan_for_worker(
            state, address
        ), address
        assert [t.task_id for t in state.removed_tasks_of(address)] == _scan_removed(
            state, address
        ), address
    indexed = sorted(i for ids in state.worker_tasks.values() for i in ids)
    assert indexed == sorted(state.tasks), "the index lists a task twice, or misses one"
    for address, ids in state.worker_tasks.items():
        assert ids == sorted(ids)
        assert all(state.tasks[i].worker_address == address for i in ids)


def _job(state: DispatcherState, job_id: int, exact: bool = False) -> None:
    record: dict[str, Any] = {
        "op": "create_job",
        "job_id": job_id,
        "job_name": "",
        "iteration": 0,
        "dataset_id": "1000",
        "policy": 1,
        "num_consumers": -1,
        "target_workers": "AUTO",
        "exact": exact,
    }
    state.apply(record)


def test_index_matches_a_scan_through_every_change_and_a_snapshot():
    state = DispatcherState(id_base=1)
    state.apply(
        {
            "op": "register_dataset",
            "dataset_id": "1000",
            "fingerprint": "f",
            "dataset_def": b"",
            "metadata": {},
        }
    )
    for address in WORKERS:
        state.apply({"op": "register_worker", "address": address, "incarnation": "a"})
    next_task = 1
    for job_id in (1, 2, 3):
        _job(state, job_id, exact=job_id == 2)
        for address in WORKERS:
            state.apply(
                {
                    "op": "create_task",
                    "task_id": next_task,
                    "job_id": job_id,
                    "worker_address": address,
                }
            )
            next_task += 1
    _check(state)
    # An exact job's task that had splits, lost with its worker, moves to another worker.
    exact_task = state.jobs[2].task_ids[0]  # on w0
    state.tasks[exact_task].splits = [[0, 1]]
    state.apply({"op": "finish_task", "task_id": state.jobs[1].task_ids[1]})
    state.apply({"op": "remove_worker", "address": "w0:1"})
    _check(state)
    state.apply({"op": "move_task", "task_id": exact_task, "worker_address": "w3:1"})
    _check(state)
    assert exact_task in [t.task_id for t in state.tasks_for_worker("w3:1")]
    # The dropped worker registers again and gets its other tasks back.
    state.apply({"op": "register_worker", "address": "w0:1", "incarnation": "b"})
    _check(state)
    # A job is collected, then forgotten (compaction), then a new one made.
    state.apply({"op": "gc_job", "job_id": 1})
    _check(state)
    state.apply({"op": "forget_collected_jobs"})
    _check(state)
    assert not any(t.job_id == 1 for t in state.tasks.values())
    _job(state, 4)
    state.apply({"op": "create_task", "task_id": next_task, "job_id": 4, "worker_address": "w1:1"})
    _check(state)
    restored = DispatcherState.from_snapshot(state.snapshot())
    _check(restored)
    assert restored.worker_tasks == {a: ids for a, ids in state.worker_tasks.items() if ids}


def test_a_create_task_record_applied_twice_is_listed_once():
    state = DispatcherState(id_base=1)
    state.apply({"op": "register_worker", "address": "w0:1", "incarnation": "a"})
    _job(state, 1)
    record = {"op": "create_task", "task_id": 7, "job_id": 1, "worker_address": "w0:1"}
    state.apply(record)
    state.apply(dict(record, worker_address="w1:1"))
    assert [t.task_id for t in state.tasks_for_worker("w1:1")] == [7]
    assert state.tasks_for_worker("w0:1") == []
    _check(state)
