"""A worker joining a running coordinated-read job takes part from a later round that
every consumer agreed on (TensorFlow's pending tasks), and the consumers stay in step."""

from __future__ import annotations

import time

import pytest
import tensorwire as tw
from tensorwire_dataservice.service.coordinated_join import PendingJoins, task_for_round

Dataset = tw.data.Dataset
service = tw.data.service


class _Task:
    def __init__(self, task_id, starting_round=0):
        self.task_id = task_id
        self.starting_round = starting_round


def test_the_schedule_rotates_over_the_tasks_started_so_far():
    a, b, c = _Task(1), _Task(2), _Task(3, starting_round=10)
    tasks = [c, b, a]
    assert [task_for_round(tasks, r).task_id for r in range(10)] == [1, 2] * 5
    assert [task_for_round(tasks, r).task_id for r in range(10, 16)] == [1, 2, 3] * 2
    assert task_for_round([_Task(4, starting_round=5)], 4) is None


def test_a_join_waits_for_every_consumer_and_retargets_when_one_passed():
    joins = PendingJoins()
    clients = {1, 2}
    joins.report(7, clients, 1, 40, -1, now=1.0)
    joins.report(7, clients, 2, 38, -1, now=1.0)
    pending = joins.add(7, "w:1", clients)
    target = pending.target_round
    assert target > 40
    joins.report(7, clients, 1, 41, target, now=1.1)
    assert joins.ready_to_join(7, clients) is None  # consumer 2 has not confirmed
    joins.report(7, clients, 2, target + 1, -1, now=1.2)  # it read past the target
    assert pending.target_round > target and not pending.ready
    new_target = pending.target_round
    joins.report(7, clients, 1, 50, new_target, now=1.3)
    joins.report(7, clients, 2, target + 2, new_target, now=1.3)
    assert joins.ready_to_join(7, clients) is pending
    assert joins.front(7) is None


def _consumer(target, index):
    return iter(
        Dataset.range(10**9)
        .repeat()
        .apply(
            service.distribute(
                "parallel_epochs",
                target,
                job_name="coordinated",
                consumer_index=index,
                num_consumers=2,
            )
        )
    )


def _read_past_the_join(consumers, rows) -> int:
    """Read rounds until one comes from the new worker (its own stream, from 0 again), then
    ten more; the index in ``rows`` of the first round of the new worker. Every round, both
    consumers read consecutive elements of one worker's round."""
    deadline = time.monotonic() + 60

    def read_round():
        rows.append([int(next(c)) for c in consumers])

    while not any(rows[i][0] < rows[i - 1][0] for i in range(10, len(rows))):
        assert time.monotonic() < deadline, "the new worker never served a round"
        read_round()
    for _ in range(10):
        read_round()
    assert all(row[1] == row[0] + 1 for row in rows), rows
    return next(i for i in range(10, len(rows)) if rows[i][0] < rows[i - 1][0])


def test_a_new_worker_joins_the_rounds_of_a_running_job(service_factory):
    dispatcher, _ = service_factory(1)
    consumers = [_consumer(dispatcher.target, 0), _consumer(dispatcher.target, 1)]
    rows = []
    for _ in range(10):
        rows.append([int(next(c)) for c in consumers])
    assert [r[0] for r in rows] == list(range(0, 20, 2))  # one worker: its elements in pairs
    service_factory.add_worker(dispatcher)
    joined = _read_past_the_join(consumers, rows)
    # Before the join one worker served every round; from the join the two alternate,
    # each worker's rounds continuing its own stream.
    before = [r[0] for r in rows[:joined]]
    assert before == list(range(0, 2 * joined, 2))
    after = [r[0] for r in rows[joined:]]
    new_worker, old_worker = after[0::2], after[1::2]
    assert new_worker == list(range(0, 2 * len(new_worker), 2))
    assert old_worker == list(range(2 * joined, 2 * joined + 2 * len(old_worker), 2))


@pytest.mark.parametrize("workers_before", [0])
def test_a_job_started_without_workers_begins_when_one_registers(service_factory, workers_before):
    dispatcher, _ = service_factory(workers_before)
    consumers = [_consumer(dispatcher.target, 0), _consumer(dispatcher.target, 1)]
    service_factory.add_worker(dispatcher)
    rows = [[int(next(c)) for c in consumers] for _ in range(5)]
    assert rows == [[2 * r, 2 * r + 1] for r in range(5)]


def test_the_starting_round_is_journaled_and_survives_a_snapshot():
    from tensorwire_dataservice.service.state import DispatcherState

    state = DispatcherState()
    state.apply(
        {"op": "register_dataset", "dataset_id": "d", "fingerprint": "f", "dataset_def": b""}
        | {"metadata": {}}
    )
    state.apply(
        {
            "op": "create_job",
            "job_id": 1,
            "job_name": "j",
            "iteration": 0,
            "dataset_id": "d",
            "policy": 0,
            "num_consumers": 2,
            "target_workers": "AUTO",
        }
    )
    state.apply({"op": "create_task", "task_id": 5, "job_id": 1, "worker_address": "w:1"})
    state.apply(
        {
            "op": "create_task",
            "task_id": 6,
            "job_id": 1,
            "worker_address": "w:2",
            "starting_round": 149,
        }
    )
    restored = DispatcherState.from_snapshot(state.snapshot())
    assert [restored.tasks[t].starting_round for t in (5, 6)] == [0, 149]


def test_a_pending_join_survives_a_dispatcher_restart(
    service_factory, protocol, tmp_path, monkeypatch
):
    """A worker registers while one consumer cannot reach the dispatcher, so its join stays
    pending (that consumer cannot confirm the round); the dispatcher is then stopped and
    restarted from its journal, which does not hold pending joins. The restarted dispatcher
    plans the join again, the consumers agree on a round, and the worker joins; the
    consumers stay in step throughout."""
    if protocol == "inproc":
        pytest.skip("the proxy that cuts a consumer off is TCP (runs with grpc)")
    from tensorwire_testing.proxy import LoopbackProxy

    # The proxy forwards the gRPC port only: keep the consumers' calls (heartbeats) on
    # gRPC, where the proxy cuts them, not on the movers past it.
    monkeypatch.setenv("TENSORWIRE_GRPC_BULK_TCP", "0")
    monkeypatch.setenv("TENSORWIRE_GRPC_SHM", "0")

    work_dir = str(tmp_path / "work")
    dispatcher, _ = service_factory(0, work_dir=work_dir, fault_tolerant_mode=True)
    port = int(dispatcher.target.rsplit(":", 1)[1])
    service_factory.add_worker(dispatcher, heartbeat_interval_ms=100)
    with LoopbackProxy(dispatcher._address) as proxy:
        targets = [dispatcher.target, f"{protocol}://{proxy.address}"]
        consumers = [_consumer(target, i) for i, target in enumerate(targets)]
        rows = [[int(next(c)) for c in consumers] for _ in range(10)]
        proxy.refuse = True  # consumer 1's heartbeats fail from now on
        proxy.cut()
        service_factory.add_worker(dispatcher, heartbeat_interval_ms=100)
        core = dispatcher._core
        (job_id,) = core.state.jobs
        deadline = time.monotonic() + 30
        while True:
            with core.lock:
                if core.joins.front(job_id) is not None:
                    break
            assert time.monotonic() < deadline, "the new worker's join never became pending"
            time.sleep(0.05)
        with core.lock:
            assert len(core.state.jobs[job_id].task_ids) == 1  # still pending: not created
        dispatcher.stop()
        service_factory(0, work_dir=work_dir, fault_tolerant_mode=True, port=port)
        proxy.refuse = False
        joined = _read_past_the_join(consumers, rows)
    after = [r[0] for r in rows[joined:]]
    assert after[0::2] == list(range(0, 2 * len(after[0::2]), 2))  # the new worker's stream
    assert [r[0] for r in rows[:joined]] == list(range(0, 2 * joined, 2))
